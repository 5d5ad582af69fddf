"""The typed per-request (or per-WebSocket-connection) context and its DataLoaders."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from strawberry.dataloader import DataLoader

from erp import views
from erp.domain.access import Principal
from realtime.broadcast import Broadcast

__all__ = ["Context", "Loaders", "Services"]


@dataclass(frozen=True, slots=True)
class Services:
    """What resolvers may use; built once by the server's composition root."""

    db: async_sessionmaker[AsyncSession]
    bus: Broadcast
    signing_key: str
    access_token_ttl_s: int = 900
    max_page_size: int = 500


class Loaders:
    """Per-request DataLoaders: one batched query per asset kind, scoped to the caller's areas."""

    def __init__(self, services: Services, areas_of: Any) -> None:
        self._services = services
        self._areas_of = areas_of  # callable → frozenset | None, read at load time
        self._by_kind: dict[str, DataLoader[str, Any]] = {}
        self.levels: DataLoader[str, Any] = DataLoader(self._load_levels)

    def asset(self, kind: str) -> DataLoader[str, Any]:
        """The loader of one asset kind (created on first use)."""
        loader = self._by_kind.get(kind)
        if loader is None:
            async def load(ids: Sequence[str], kind: str = kind) -> list[Any]:
                async with self._services.db() as s:
                    found = await views.load_by_ids(s, kind, ids, self._areas_of())
                return [found.get(i) for i in ids]

            loader = self._by_kind[kind] = DataLoader(load)
        return loader

    async def _load_levels(self, codes: Sequence[str]) -> list[Any]:
        async with self._services.db() as s:
            levels = await views.load_levels(s)
        return [levels.get(c) for c in codes]


@dataclass
class Context:
    """Who is asking, from where, and the services to answer with."""

    services: Services
    request: Any = None
    response: Any = None
    principal: Principal | None = None
    client_addr: str | None = None
    connection_params: dict[str, Any] | None = None
    loaders: Loaders = field(init=False)

    def __post_init__(self) -> None:
        self.loaders = Loaders(self.services, self.areas)

    def areas(self) -> frozenset[str] | None:
        """Areas in the caller's scope (None = all); an anonymous caller sees none."""
        if self.principal is None:
            return frozenset()
        return self.principal.areas
