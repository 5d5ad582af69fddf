"""A loopback stand-in for QuestDB's HTTP side: ``/settings``, ``/exec`` and ILP ``/write``.

It speaks HTTP/1.1 with keep-alive on 127.0.0.1, answers ``GET /settings`` the way QuestDB does
(the `questdb` client reads ``config["line.proto.support.versions"]`` to pick ILP v1 or v2),
records every ``/exec`` statement, and parses ``POST /write`` bodies (ILP v1 text and v2 binary
doubles) into `IlpRow`s. Accepted rows land in `received` (everything, in arrival order) and in
`table`, which deduplicates like ``DEDUP UPSERT KEYS(ts, <symbols>)``: the last row for a key wins.

Outages: `fail_writes` makes ``/write`` answer an HTTP error (500 retriable, 400 "invalid"); `stop`
closes the listener and every connection (connection refused); `start` after `stop` listens on the
same port again with `table` intact, like a server process that restarted over its data.

It runs on the test's event loop; the `questdb` client is blocking, and the adapter under test
calls it from a worker thread, so the loop is free to serve it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import struct
import urllib.parse
from dataclasses import dataclass, field
from typing import Final

__all__ = ["IlpRow", "QuestDBReceiver", "parse_ilp"]

FieldValue = float | int | bool | str

_FLOAT64_BINARY: Final = 16  # ILP v2: '=' then this type byte then 8 little-endian bytes
_TS_UNITS: Final = {"n": 1, "t": 1_000, "m": 1_000_000, "s": 1_000_000_000}


@dataclass(frozen=True)
class IlpRow:
    """One parsed ILP line."""

    table: str
    symbols: dict[str, str]
    fields: dict[str, FieldValue]
    ts_ns: int | None


class IlpSyntaxError(ValueError):
    """A line the parser could not read."""


def _name(data: bytes, i: int, stops: bytes) -> tuple[str, int]:
    """Read an escaped name or symbol value up to one of `stops`; returns it and the new index."""
    out = bytearray()
    while i < len(data) and data[i] not in stops:
        if data[i] == 0x5C and i + 1 < len(data):  # backslash escapes the next byte
            i += 1
        out.append(data[i])
        i += 1
    return out.decode(), i


def _field_value(data: bytes, i: int) -> tuple[FieldValue, int]:
    if data[i] == ord("=") and i + 1 < len(data):
        if data[i + 1] != _FLOAT64_BINARY:
            raise IlpSyntaxError(f"unsupported binary type {data[i + 1]} at {i}")
        (value,) = struct.unpack_from("<d", data, i + 2)
        return value, i + 10
    if data[i] == ord('"'):
        out = bytearray()
        i += 1
        while data[i] != ord('"'):
            if data[i] == 0x5C:
                i += 1
            out.append(data[i])
            i += 1
        return out.decode(), i + 1
    token, i = _name(data, i, b", \n")
    if token.endswith("i"):
        return int(token[:-1]), i
    if token in ("t", "T", "true", "True"):
        return True, i
    if token in ("f", "F", "false", "False"):
        return False, i
    return float(token), i


def parse_ilp(data: bytes, precision: str = "n") -> list[IlpRow]:
    """Parse an ILP body into rows (timestamps in ns; a bare number is in `precision` units)."""
    rows: list[IlpRow] = []
    i, n = 0, len(data)
    while i < n:
        if data[i] in b"\r\n":
            i += 1
            continue
        table, i = _name(data, i, b", \n")
        symbols: dict[str, str] = {}
        while i < n and data[i] == ord(","):
            key, i = _name(data, i + 1, b"=")
            symbols[key], i = _name(data, i + 1, b", \n")
        fields: dict[str, FieldValue] = {}
        if i < n and data[i] == ord(" "):
            i += 1
            while True:
                key, i = _name(data, i, b"=")
                fields[key], i = _field_value(data, i + 1)
                if i < n and data[i] == ord(","):
                    i += 1
                    continue
                break
        ts_ns = None
        if i < n and data[i] == ord(" "):
            token, i = _name(data, i + 1, b"\n")
            unit = token[-1] if token[-1:].isalpha() else precision
            ts_ns = int(token.rstrip("ntms")) * _TS_UNITS[unit]
        if i < n and data[i] != ord("\n"):
            raise IlpSyntaxError(f"expected end of line at {i}: {data[i:i + 20]!r}")
        rows.append(IlpRow(table, symbols, fields, ts_ns))
    return rows


@dataclass
class QuestDBReceiver:
    """The loopback server; `start` it, point the adapter at `http_url`, `stop` it at the end."""

    versions: tuple[int, ...] = (1, 2)
    port: int = 0
    fail_writes: int | None = None  # HTTP status answered to POST /write while set
    received: list[IlpRow] = field(default_factory=list)
    table: dict[tuple[str, tuple[tuple[str, str], ...], int | None], IlpRow] = field(
        default_factory=dict)
    exec_queries: list[str] = field(default_factory=list)
    requests: list[str] = field(default_factory=list)  # "METHOD /path" of every request
    write_requests: int = 0
    failed_writes: int = 0
    _server: asyncio.Server | None = None
    _writers: set[asyncio.StreamWriter] = field(default_factory=set)
    _handlers: set[asyncio.Task[None]] = field(default_factory=set)

    @property
    def http_url(self) -> str:
        """``http://127.0.0.1:PORT``."""
        return f"http://127.0.0.1:{self.port}"

    @property
    def running(self) -> bool:
        """Whether it accepts connections."""
        return self._server is not None

    async def start(self) -> None:
        """Listen (on the same port as before after a `stop`)."""
        if self._server is not None:
            return
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", self.port)
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        """Stop listening and drop every connection: clients now get "connection refused"."""
        server, self._server = self._server, None
        if server is None:
            return
        server.close()
        for writer in list(self._writers):
            writer.close()
        for task in list(self._handlers):
            task.cancel()
        await asyncio.gather(*self._handlers, return_exceptions=True)
        await server.wait_closed()

    async def restart(self) -> None:
        """A server process restart over the same data: stop, then listen again."""
        await self.stop()
        await self.start()

    def rows(self, table: str | None = None) -> list[IlpRow]:
        """The deduplicated stored rows (of one table, or all)."""
        return [r for r in self.table.values() if table is None or r.table == table]

    # ------------------------------------------------------------------ HTTP

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._handlers.add(task)
        self._writers.add(writer)
        try:
            while True:
                try:
                    head = await reader.readuntil(b"\r\n\r\n")
                except (asyncio.IncompleteReadError, ConnectionError):
                    return
                request_line, *header_lines = head.decode("latin-1").split("\r\n")
                method, target, _ = request_line.split(" ", 2)
                headers = {k.strip().lower(): v.strip() for k, v in
                           (h.split(":", 1) for h in header_lines if ":" in h)}
                body = await self._read_body(reader, headers)
                status, payload = self._answer(method, target, body)
                reason = {200: "OK", 204: "No Content", 400: "Bad Request", 404: "Not Found",
                          500: "Internal Server Error"}.get(status, "Error")
                out = (f"HTTP/1.1 {status} {reason}\r\nServer: questDB/loopback\r\n"
                       "Content-Type: application/json\r\n")  # exactly: the client parses errors then
                out += f"Content-Length: {len(payload)}\r\n\r\n" if status != 204 else "\r\n"
                writer.write(out.encode("latin-1") + (payload if status != 204 else b""))
                await writer.drain()
                if headers.get("connection", "").lower() == "close":
                    return
        except (ConnectionError, asyncio.CancelledError):
            return
        finally:
            self._writers.discard(writer)
            writer.close()
            with contextlib.suppress(ConnectionError, asyncio.CancelledError):
                await writer.wait_closed()
            self._handlers.discard(task)

    @staticmethod
    async def _read_body(reader: asyncio.StreamReader, headers: dict[str, str]) -> bytes:
        if headers.get("transfer-encoding", "").lower() == "chunked":
            body = bytearray()
            while True:
                size = int((await reader.readuntil(b"\r\n")).strip().split(b";")[0], 16)
                chunk = await reader.readexactly(size + 2)
                if size == 0:
                    return bytes(body)
                body += chunk[:-2]
        return await reader.readexactly(int(headers.get("content-length", "0")))

    def _answer(self, method: str, target: str, body: bytes) -> tuple[int, bytes]:
        url = urllib.parse.urlsplit(target)
        query = urllib.parse.parse_qs(url.query)
        self.requests.append(f"{method} {url.path}")
        if method == "GET" and url.path == "/settings":
            return 200, json.dumps({"config": {
                "release.type": "OSS", "release.version": "[LOOPBACK]",
                "http.settings.readonly": False, "line.proto.support.versions": list(self.versions),
                "ilp.proto.transports": ["tcp", "http"], "posthog.enabled": False,
                "posthog.api.key": None, "cairo.max.file.name.length": 127,
            }, "preferences.version": 0, "preferences": {}}).encode()
        if method == "GET" and url.path == "/exec":
            sql = query.get("query", [""])[0]
            self.exec_queries.append(sql)
            if sql.lstrip().upper().startswith(("CREATE", "ALTER", "DROP")):
                return 200, b'{"ddl":"OK"}'
            return 200, json.dumps({"query": sql, "columns": [], "dataset": [], "count": 0}).encode()
        if method == "GET" and url.path == "/ping":
            return 204, b""
        if method == "POST" and url.path == "/write":
            return self._write(body, query.get("precision", ["n"])[0])
        return 404, b'{"message":"not found"}'

    def _write(self, body: bytes, precision: str) -> tuple[int, bytes]:
        self.write_requests += 1
        if self.fail_writes is not None:
            self.failed_writes += 1
            code = "invalid" if self.fail_writes < 500 else "internal error"
            return self.fail_writes, json.dumps({
                "code": code, "message": f"loopback failure {self.fail_writes}",
                "line": 1, "errorId": f"loopback-{self.failed_writes}"}).encode()
        try:
            rows = parse_ilp(body, precision)
        except (IlpSyntaxError, ValueError, IndexError, struct.error) as exc:
            return 400, json.dumps({"code": "invalid", "message": f"cannot parse: {exc}",
                                    "line": 1, "errorId": "loopback-parse"}).encode()
        self.received.extend(rows)
        for row in rows:  # like DEDUP UPSERT KEYS(ts, <symbols>): the last row wins
            self.table[(row.table, tuple(sorted(row.symbols.items())), row.ts_ns)] = row
        return 204, b""
