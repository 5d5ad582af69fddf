"""The typed per-request (or per-WebSocket-connection) context and its DataLoaders."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from strawberry.dataloader import DataLoader

from control.pipeline import CommandPipeline
from erp import views
from erp.domain.access import Principal
from realtime.alarms.engine import AlarmEngine
from realtime.bus import AbstractBus
from realtime.historian.base import AbstractHistorian
from realtime.store import TagStore
from realtime.twin_state import TwinReader
from schema.cache import ResponseCache

if TYPE_CHECKING:  # the session factory is handed in by the server; resolvers never build one
    from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

    from schema.forecast import ForecastService
    from schema.pressure_plan import PlanRecords, PressurePlanService
    from schema.twin import ScenarioRecords, ScenarioService

__all__ = ["MISSING", "Context", "Loaders", "Services"]


@dataclass(frozen=True, slots=True)
class Services:
    """What resolvers may use; built once by the server's composition root."""

    db: async_sessionmaker[AsyncSession]
    bus: AbstractBus
    signing_key: str
    access_token_ttl_s: int = 900
    max_page_size: int = 500
    response_cache: ResponseCache | None = None
    tags: TagStore | None = None  # None when telemetry is not running in this process
    historian: AbstractHistorian | None = None
    alarms: AlarmEngine | None = None  # None when the alarm engine does not run in this process
    control: CommandPipeline | None = None  # None when control does not run in this process
    twin: TwinReader | None = None  # None when the live twin does not run in this process
    scenarios: ScenarioService | None = None  # what-if jobs; None without the live twin here
    pressure_plans: PressurePlanService | None = None  # DSS-1 plans; None without the live twin
    # Recorded twin jobs and plans, read from the database in any process (with or without the
    # twin): a process that does not run the twin still answers scenario(s), leakLocalization(s)
    # and pressurePlan(s).
    scenario_records: ScenarioRecords | None = None
    plan_records: PlanRecords | None = None
    forecasts: ForecastService | None = None  # demand forecasts; None without the live twin
    # Map backgrounds offered to pages besides none (schematic): (name, XYZ URL template).
    map_tiles: tuple[tuple[str, str], ...] = ()


MISSING: Any = object()


class Loaders:
    """Per-request DataLoaders: one batched query per asset kind, scoped to the caller's areas.

    Every row loaded (or primed by a page) is also kept in a plain dict, so that nested fields
    whose rows are already here resolve synchronously: graphql-core completes a synchronous
    value several times faster than an awaitable, and a 100-row page has hundreds of them.
    """

    def __init__(self, services: Services, areas_of: Any) -> None:
        self._services = services
        self._areas_of = areas_of  # callable → frozenset | None, read at load time
        self._by_kind: dict[str, DataLoader[str, Any]] = {}
        self._rows: dict[str, dict[str, Any]] = {}
        self._levels: dict[str, Any] | None = None
        self.levels: DataLoader[str, Any] = DataLoader(self._load_levels)

    def asset(self, kind: str) -> DataLoader[str, Any]:
        """The loader of one asset kind (created on first use)."""
        loader = self._by_kind.get(kind)
        if loader is None:
            rows = self._rows.setdefault(kind, {})

            async def load(ids: Sequence[str]) -> list[Any]:
                async with self._services.db() as s:
                    found = await views.load_by_ids(s, kind, ids, self._areas_of())
                out = [found.get(i) for i in ids]
                rows.update(zip(ids, out, strict=True))
                return out

            loader = self._by_kind[kind] = DataLoader(load)
        return loader

    def prime(self, kind: str, row: Any) -> None:
        """Make `row` known to this request without a query."""
        self.asset(kind).prime(row.id, row)
        self._rows[kind][row.id] = row

    def cached(self, kind: str, key: str) -> Any:
        """The row if this request already has it (None if known absent), else `MISSING`."""
        return self._rows.get(kind, {}).get(key, MISSING)

    def cached_level(self, code: str) -> Any:
        """A pressure level row if levels are loaded, else `MISSING`."""
        return MISSING if self._levels is None else self._levels.get(code)

    async def prefetch_levels(self) -> None:
        """Load every pressure level once for this request (a handful of rows)."""
        if self._levels is None:
            async with self._services.db() as s:
                self._levels = await views.load_levels(s)

    async def _load_levels(self, codes: Sequence[str]) -> list[Any]:
        await self.prefetch_levels()
        assert self._levels is not None
        return [self._levels.get(c) for c in codes]


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
