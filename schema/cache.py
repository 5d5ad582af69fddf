"""A response cache for read-only registry queries.

The registry changes rarely (an engineer's edit, an import) and is read constantly (wall
displays, maps, integrators polling). Executing a 100-pipe page with nested nodes costs
graphql-core ~30 ms of CPU; answering it from this cache costs well under 1 ms.

Correctness:
- An entry is keyed by the registry version (a counter that every registry write bumps in its
  own transaction), the user (results depend on role and areas), the query text, its variables
  and operation name.
- The version is re-read from the database at most every `version_ttl_s`; a write made through
  this process invalidates at once (`invalidate()`), a write through another process is seen
  within `version_ttl_s` (default 1 s).
- Only queries whose every root field is a registry read are cached; results with errors never
  are (a refusal must run each time, so it is audited each time).

Entries hold the already-encoded JSON (`orjson.Fragment`): compact, invisible to the garbage
collector's scans, and written to the response without re-encoding.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable
from typing import Any

import orjson
from graphql import ExecutionResult, FieldNode, OperationDefinitionNode, OperationType
from strawberry.extensions import SchemaExtension

from erp import views

__all__ = ["CACHEABLE_ROOT_FIELDS", "ResponseCache", "response_cache_extension"]

CACHEABLE_ROOT_FIELDS = frozenset({
    "__typename", "node", "areas", "pressureLevels", "nodes", "pipes", "stations", "valves",
    "skzStations", "networkLinks", "servicePoints", "meters", "equipment", "networkSummary",
    "networkTopologyReport",
})


class ResponseCache:
    """A bounded LRU of encoded results and the registry version they belong to."""

    def __init__(self, maxsize: int = 512, version_ttl_s: float = 1.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._entries: OrderedDict[tuple[Any, ...], orjson.Fragment] = OrderedDict()
        self._maxsize = maxsize
        self._version_ttl_s = version_ttl_s
        self._clock = clock
        self._version: int | None = None
        self._version_read_at = float("-inf")
        self._refresh: asyncio.Future[int] | None = None
        self.hits = 0
        self.misses = 0

    def known_version(self) -> int | None:
        """The registry version if read recently enough, else None (read it again)."""
        if self._version is None or self._clock() - self._version_read_at > self._version_ttl_s:
            return None
        return self._version

    def set_version(self, version: int) -> None:
        """Record the version just read from the database."""
        if version != self._version:
            self._entries.clear()  # everything cached belongs to an older registry
        self._version, self._version_read_at = version, self._clock()

    async def refresh_version(self, db: Any) -> int:
        """Read the version from the database, once for all concurrent callers (when it
        expires under load, twenty requests must not each open a connection for it)."""
        if self._refresh is None:
            async def read() -> int:
                try:
                    async with db() as s:
                        version = await views.registry_version(s)
                    self.set_version(version)
                    return version
                finally:
                    self._refresh = None

            self._refresh = asyncio.ensure_future(read())
        return await asyncio.shield(self._refresh)

    def invalidate(self) -> None:
        """This process changed the registry: re-read the version before the next answer."""
        self._version_read_at = float("-inf")

    def get(self, key: tuple[Any, ...]) -> orjson.Fragment | None:
        """The cached encoded data, refreshed as most recently used."""
        hit = self._entries.get(key)
        if hit is None:
            self.misses += 1
            return None
        self._entries.move_to_end(key)
        self.hits += 1
        return hit

    def put(self, key: tuple[Any, ...], data: Any) -> None:
        """Encode and store, evicting the least recently used entry beyond `maxsize`."""
        self._entries[key] = orjson.Fragment(orjson.dumps(data))
        self._entries.move_to_end(key)
        while len(self._entries) > self._maxsize:
            self._entries.popitem(last=False)

    def __len__(self) -> int:
        return len(self._entries)


def _cacheable(document: Any, operation_name: str | None) -> bool:
    ops = [d for d in document.definitions if isinstance(d, OperationDefinitionNode)]
    if operation_name is not None:
        ops = [o for o in ops if o.name is not None and o.name.value == operation_name]
    if len(ops) != 1 or ops[0].operation is not OperationType.QUERY:
        return False
    selections = ops[0].selection_set.selections
    return all(isinstance(s, FieldNode) and s.name.value in CACHEABLE_ROOT_FIELDS
               for s in selections)


def response_cache_extension(cache: ResponseCache) -> type[SchemaExtension]:
    """A Strawberry extension class that serves and fills `cache`."""

    class ResponseCacheExtension(SchemaExtension):
        async def on_execute(self) -> AsyncIterator[None]:  # type: ignore[override]
            ec = self.execution_context
            ctx = ec.context
            key = None
            principal = getattr(ctx, "principal", None)
            if principal is not None and ec.graphql_document is not None and _cacheable(
                    ec.graphql_document, ec.operation_name):
                version = cache.known_version()
                if version is None:
                    version = await cache.refresh_version(ctx.services.db)
                areas = None if principal.areas is None else tuple(sorted(principal.areas))
                key = (version, principal.user_id, principal.role, areas, ec.query,
                       json.dumps(ec.variables, sort_keys=True, default=str), ec.operation_name)
                hit = cache.get(key)
                if hit is not None:
                    ec.result = ExecutionResult(data=hit)  # type: ignore[arg-type]
                    key = None
            yield
            result = ec.result
            if key is not None and isinstance(result, ExecutionResult) and not result.errors:
                cache.put(key, result.data)

    return ResponseCacheExtension
