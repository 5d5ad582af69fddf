"""Map tiles from the utility's own disk: a directory of XYZ tiles or one MBTiles file.

Control rooms are often offline, and a utility's base map may be restricted, so the wall and
the console never fetch tiles from the internet by themselves: the background is none
(schematic), these local tiles, or a URL template the utility configures (`map_tiles_url`).

MBTiles (https://github.com/mapbox/mbtiles-spec) is SQLite with a `tiles(zoom_level,
tile_column, tile_row, tile_data)` table whose rows count from the south (TMS), so the XYZ row
is flipped: tms_y = 2^z − 1 − y. Read with the standard library's sqlite3 — one small indexed
lookup per tile, read-only, in a worker thread.
"""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

from starlette.requests import Request
from starlette.responses import FileResponse, PlainTextResponse, Response

__all__ = ["TileEndpoint"]

_TYPES = {b"\x89PNG": "image/png", b"\xff\xd8\xff": "image/jpeg", b"RIFF": "image/webp"}


def _media_type(data: bytes) -> str:
    for magic, media in _TYPES.items():
        if data.startswith(magic):
            return media
    return "application/octet-stream"


class TileEndpoint:
    """GET /tiles/{z}/{x}/{y}.png from `path` (a directory or an .mbtiles file)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.mbtiles = path.suffix == ".mbtiles"

    def _read(self, z: int, x: int, y: int) -> bytes | None:
        uri = f"file:{self.path}?mode=ro"
        with sqlite3.connect(uri, uri=True) as con:
            row = con.execute("SELECT tile_data FROM tiles WHERE zoom_level=? AND tile_column=?"
                              " AND tile_row=?", (z, x, (1 << z) - 1 - y)).fetchone()
        return bytes(row[0]) if row else None

    async def endpoint(self, request: Request) -> Response:
        """GET /tiles/{z}/{x}/{y}(.png)."""
        try:
            z, x = int(request.path_params["z"]), int(request.path_params["x"])
            y = int(str(request.path_params["y"]).split(".", 1)[0])
        except ValueError:
            return PlainTextResponse("tile coordinates must be integers", 400)
        if not (0 <= z <= 24 and 0 <= x < (1 << z) and 0 <= y < (1 << z)):
            return PlainTextResponse("no such tile", 404)
        headers = {"cache-control": "public, max-age=3600"}
        if self.mbtiles:
            data = await asyncio.to_thread(self._read, z, x, y)
            if data is None:
                return PlainTextResponse("no such tile", 404)
            return Response(data, media_type=_media_type(data), headers=headers)
        for ext in ("png", "jpg", "webp"):
            f = self.path / str(z) / str(x) / f"{y}.{ext}"
            if f.is_file():
                return FileResponse(f, headers=headers)
        return PlainTextResponse("no such tile", 404)
