"""The application factory: settings → engine, services, schema, routes and lifespan."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import time
from collections import OrderedDict
from collections.abc import AsyncIterator
from functools import cached_property
from typing import Any

import orjson
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import FileResponse, HTMLResponse, JSONResponse, Response
from starlette.routing import Mount, Route, WebSocketRoute
from starlette.staticfiles import StaticFiles
from starlette.websockets import WebSocket
from strawberry.asgi import GraphQL
from strawberry.exceptions import ConnectionRejectionError

from erp.adapters.db import create_engine, current_revision, head_revision, session_factory
from erp.services import accounts, audit
from realtime.broadcast import Broadcast
from realtime.bus import AbstractBus
from realtime.historian.base import AbstractHistorian
from realtime.redis_bus import RedisBus
from schema.cache import ResponseCache
from schema.context import Context, Services
from schema.schema import Limits, build_schema
from server.alarms import Alarms
from server.control import Control
from server.crew_sim import CrewSimulator
from server.exports import export_routes
from server.forecast import DemandForecaster
from server.integrators import Integrators
from server.notifications import Notifications
from server.pressure_plan import PressurePlanRunner, StoredPlans
from server.push import PushEndpoint
from server.settings import HistorianKind, Settings
from server.telemetry import Telemetry
from server.tiles import TileEndpoint
from server.twin_runner import TwinRunner
from server.twin_scenarios import ScenarioRunner, StoredScenarios
from server.vendor import FRONTEND_DIR, VendorAssets

__all__ = ["create_app"]

log = logging.getLogger("gasops.server")


def _bearer(value: str | None) -> str | None:
    if not value:
        return None
    scheme, _, token = value.partition(" ")
    return token.strip() if scheme.lower() == "bearer" and token.strip() else None


def _expired(token: str) -> bool:
    """Whether a cached access token has passed its own expiry (API tokens: checked in DB)."""
    return accounts.token_expired(token)


class GasopsGraphQL(GraphQL[Context, None]):
    """Strawberry's ASGI app with our context: the caller is authenticated per request (HTTP)
    or once per connection in `connection_init` (WebSocket)."""

    def __init__(self, services: Services, vendor: VendorAssets, auth_cache_ttl_s: float = 5.0,
                 **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.services = services
        self.vendor = vendor
        # token → (principal, valid until): a wall display polling every second should not
        # reload its user from the database each time. A disabled user or a changed role takes
        # effect within the TTL; signatures and expiry are still checked on every request.
        self._auth_ttl_s = auth_cache_ttl_s
        self._auth_cache: OrderedDict[str, tuple[Any, float]] = OrderedDict()
        self._auth_pending: dict[str, asyncio.Future[Any]] = {}

    async def _principal(self, token: str | None) -> Any:
        if token is None:
            return None
        now = time.monotonic()
        hit = self._auth_cache.get(token)
        if hit is not None and hit[1] > now and not _expired(token):
            return hit[0]
        pending = self._auth_pending.get(token)
        if pending is None:  # one database check per token, however many requests wait on it
            pending = self._auth_pending[token] = asyncio.ensure_future(self._check(token))
        return await asyncio.shield(pending)

    async def _check(self, token: str) -> Any:
        try:
            async with self.services.db() as s:
                principal = await accounts.authenticate_bearer(s, token,
                                                               self.services.signing_key)
            if principal is not None and self._auth_ttl_s > 0:
                self._auth_cache[token] = (principal, time.monotonic() + self._auth_ttl_s)
                while len(self._auth_cache) > 4096:
                    self._auth_cache.popitem(last=False)
            return principal
        finally:
            self._auth_pending.pop(token, None)

    @cached_property
    def graphql_ide_html(self) -> str:  # type: ignore[override]
        """Strawberry's GraphiQL page with its assets served by us instead of a CDN, and
        without keeping the Headers editor (a bearer token) in the browser's localStorage: a
        control-room workstation is shared."""
        html = self.vendor.localize(super().graphql_ide_html)
        return html.replace("shouldPersistHeaders: true", "shouldPersistHeaders: false")

    async def render_graphql_ide(self, request: Request) -> Response:
        if not self.vendor.installed:
            return HTMLResponse("<p>GraphiQL's files are not installed: run <code>make install"
                                "</code> on a machine with npm. The API itself works.</p>", 503)
        return HTMLResponse(self.graphql_ide_html)

    def encode_json(self, data: object) -> str:
        # orjson: a 100-pipe page is ~60 kB of JSON; the stdlib encoder takes ~1 ms of it.
        # A str, not bytes: the WebSocket protocol sends bytes as binary frames.
        return orjson.dumps(data).decode()

    async def get_context(self, request: Request | WebSocket, response: Any) -> Context:
        ctx = Context(services=self.services, request=request, response=response,
                      client_addr=request.client.host if request.client else None)
        if isinstance(request, Request):
            ctx.principal = await self._principal(_bearer(request.headers.get("authorization")))
        return ctx

    async def on_ws_connect(self, context: Context) -> Any:
        params = context.connection_params or {}
        token = _bearer(str(params.get("Authorization") or params.get("authorization") or "")) \
            or (str(params["token"]) if params.get("token") else None)
        if token is not None:
            context.principal = await self._principal(token)
            if context.principal is None:
                raise ConnectionRejectionError({"message": "invalid or expired token"})
        return {"user": context.principal.username if context.principal else None}


def _tile_sources(settings: Settings) -> tuple[tuple[str, str], ...]:
    """Map backgrounds offered to the pages besides none (schematic)."""
    out = []
    if settings.map_tiles_path is not None:
        out.append(("local tiles", "/tiles/{z}/{x}/{y}.png"))
    if settings.map_tiles_url:
        out.append(("map server", settings.map_tiles_url))
    return tuple(out)


AUTO_LOCALIZATION_WINDOW_S = 1800.0
"""The window a leak localization queued by the leak watch's own alarm looks back over."""
_TWIN_ACTOR = audit.Actor("twin", "system")


def historian_for(settings: Settings) -> AbstractHistorian:
    """The configured history engine (nothing connects until the lifespan starts it)."""
    if settings.historian is HistorianKind.questdb:
        from realtime.historian.questdb import QuestDBHistorian

        return QuestDBHistorian(settings.historian_url, settings.historian_pg_url)
    from realtime.historian.duckdb import DuckDBHistorian

    settings.var_dir.mkdir(parents=True, exist_ok=True)
    if settings.historian_process:
        import functools

        from realtime.historian.process import HistorianProcess

        return HistorianProcess(functools.partial(DuckDBHistorian, settings.historian_url))
    return DuckDBHistorian(settings.historian_url)


def create_app(settings: Settings | None = None) -> Starlette:
    """Build the ASGI app; nothing connects until the lifespan starts."""
    settings = settings or Settings()
    engine = create_engine(settings.database_url)
    bus: AbstractBus = RedisBus(settings.redis_url) if settings.redis_url else Broadcast()
    db = session_factory(engine)
    historian = historian_for(settings)
    # The demo's simulated field follows a hidden, perturbed hydraulic plant (server/plant.py)
    # when the twin's physics is available in this process.
    plant = None
    if settings.simulate_field and settings.twin_enabled:
        from server.plant import SimulatedPlant

        plant = SimulatedPlant(db, air_temperature_c=settings.twin_air_temperature_c)
    telemetry = Telemetry(db, bus, historian, settings.var_dir / "historian-buffer.sqlite3",
                          buffer_max_points=settings.historian_buffer_max_points,
                          simulate_field=settings.simulate_field,
                          modbus_lines=settings.modbus_line_addresses(),
                          opcua_endpoints=dict(settings.opcua_endpoints),
                          poll_period_s=settings.poll_period_s,
                          sim_period_s=settings.sim_period_s,
                          apply_remote=settings.redis_url is not None, plant=plant)
    notifications = (Notifications(settings.notify_config_file, settings.notify_channels,
                                   redis_url=settings.redis_url, db=db)
                     if settings.notify_config_file else None)
    alarms = Alarms(db, bus, telemetry.store,
                    on_events=notifications.on_events if notifications else None)
    control = Control(db, bus, telemetry.store,
                      lambda: telemetry.field.write if telemetry.field is not None else None,
                      select_ttl_s=settings.command_select_ttl_s,
                      readback_timeout_s=settings.command_readback_timeout_s)
    integrators = (Integrators(db, telemetry.store, control, host=settings.opcua_server_host,
                               port=settings.opcua_server_port,
                               cert_dir=settings.var_dir / "pki" / "integrator-server",
                               historian=historian, bus=bus,
                               allow_anonymous=settings.opcua_server_anonymous,
                               trust_any_client=settings.opcua_server_trust_any_client)
                   if settings.opcua_server_port is not None else None)
    twin = (TwinRunner(db, bus, telemetry.store, telemetry.pipeline.on_values,
                       period_s=settings.twin_period_s,
                       air_temperature_c=settings.twin_air_temperature_c,
                       leak_warmup_s=settings.twin_leak_warmup_s,
                       estimation_every_s=settings.twin_estimation_every_s)
            if settings.twin_enabled else None)
    if twin is not None:
        control.attach_twin(twin)
    scenarios = ScenarioRunner(db, twin) if twin is not None else None
    if twin is not None and scenarios is not None:
        async def locate(area: str) -> object:  # the leak watch raised "leak suspected" there
            return await scenarios.locate_leak(area, AUTO_LOCALIZATION_WINDOW_S, actor=_TWIN_ACTOR)

        twin.on_leak_suspected = locate
    plans = (PressurePlanRunner(db, twin, control.pipeline, telemetry.store,
                                air_temperature_c=settings.twin_air_temperature_c)
             if twin is not None else None)
    forecasts = (DemandForecaster(twin, historian, air_temperature_c=settings.twin_air_temperature_c)
                 if twin is not None else None)
    cache = (ResponseCache(settings.response_cache_size, settings.response_cache_version_ttl_s)
             if settings.response_cache_size else None)
    services = Services(
        db=db, bus=bus, tags=telemetry.store, historian=historian, alarms=alarms.engine,
        control=control.pipeline, twin=twin, scenarios=scenarios, pressure_plans=plans,
        scenario_records=StoredScenarios(db), plan_records=StoredPlans(db), forecasts=forecasts,
        signing_key=settings.signing_key(),
        access_token_ttl_s=settings.access_token_ttl_s, max_page_size=settings.max_page_size,
        response_cache=cache, map_tiles=_tile_sources(settings))
    schema = build_schema(Limits(
        max_depth=settings.max_query_depth, max_tokens=settings.max_query_tokens,
        max_aliases=settings.max_query_aliases, max_cost=settings.max_query_cost,
        introspection=settings.introspection), cache)
    vendor = VendorAssets()
    graphql_app = GasopsGraphQL(
        services, vendor, auth_cache_ttl_s=settings.auth_cache_ttl_s, schema=schema,
        graphql_ide="graphiql" if settings.graphiql else None,
        allowed_origins=settings.ws_allowed_origins,
        max_subscriptions_per_connection=settings.ws_max_subscriptions,
        subscription_protocols=("graphql-transport-ws",), keep_alive=True,
        keep_alive_interval=15)

    async def health(_: Request) -> Response:
        return JSONResponse({"status": "ok"})

    async def ready(_: Request) -> Response:
        checks: dict[str, Any] = {}
        try:
            rev = await current_revision(engine)
            checks["database"] = "ok"
            checks["migrations"] = "ok" if rev == head_revision() else f"at {rev}, head is {head_revision()}"
        except Exception as exc:  # noqa: BLE001 - any failure means not ready; say which
            checks["database"] = f"unreachable: {type(exc).__name__}"
            checks["migrations"] = "unknown"
        ok = all(v == "ok" for v in checks.values())
        return JSONResponse({"status": "ready" if ok else "not ready", "checks": checks,
                             "services": {"graphql": "/graphql", "graphiql": settings.graphiql,
                                          "database": engine.dialect.name,
                                          "bus": "redis" if settings.redis_url else "in-process",
                                          "historian": str(settings.historian),
                                          "tags": len(telemetry.store.known)}},
                            status_code=200 if ok else 503)

    async def landing(_: Request) -> Response:
        return FileResponse(FRONTEND_DIR / "static" / "index.html")

    def page(name: str) -> Any:
        async def endpoint(_: Request) -> Response:
            # No caching of the page itself: a deployment must reach every wall at its reload.
            return FileResponse(FRONTEND_DIR / "static" / f"{name}.html",
                                headers={"cache-control": "no-cache"})
        return endpoint

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        log.info("gasops starting: database %s", engine.url.render_as_string(hide_password=True))
        # Everything built so far (schema, mappers, modules) lives as long as the process: move
        # it out of the collector's way, so full collections stay short under load.
        app.state.loop = asyncio.get_running_loop()
        if plant is not None:
            await plant.start()
        await telemetry.start()
        await alarms.start()
        await control.start()
        if integrators is not None:
            await integrators.start()
        if notifications is not None:
            await notifications.start()
        if twin is not None:
            await twin.start()
        if scenarios is not None:
            await scenarios.start()
        if plans is not None:
            await plans.start()
        crew_sim = (CrewSimulator(db, bus, period_s=settings.crew_sim_period_s)
                    if settings.simulate_field and settings.crew_sim_period_s > 0 else None)
        if crew_sim is not None:
            await crew_sim.start()
        gc.collect()
        gc.freeze()
        try:
            yield
        finally:
            if crew_sim is not None:
                await crew_sim.stop()
            if plans is not None:
                await plans.stop()
            if scenarios is not None:
                await scenarios.stop()
            if twin is not None:
                await twin.stop()
            if notifications is not None:
                await notifications.stop()
            if integrators is not None:
                await integrators.stop()
            await control.stop()
            await alarms.stop()
            await telemetry.stop()
            if plant is not None:
                await plant.stop()
            await engine.dispose()

    app = Starlette(routes=[
        Route("/", landing),
        Route("/wall", page("wall")),
        Route("/console", page("console")),
        Route("/crew", page("crew")),
        *([Route("/tiles/{z}/{x}/{y}", TileEndpoint(settings.map_tiles_path).endpoint)]
          if settings.map_tiles_path is not None else []),
        Route("/health", health),
        Route("/ready", ready),
        Mount("/static", StaticFiles(directory=FRONTEND_DIR / "static")),
        Route("/vendor/{name}", vendor.endpoint),
        Route("/api/push/meter-readings", PushEndpoint(db, telemetry).handle, methods=["POST"]),
        *export_routes(services),
        Route("/graphql", graphql_app, methods=["GET", "POST"]),
        WebSocketRoute("/graphql", graphql_app),
    ], lifespan=lifespan)
    app.state.settings = settings
    app.state.services = services
    app.state.engine = engine
    app.state.telemetry = telemetry
    app.state.alarms = alarms
    app.state.control = control
    app.state.integrators = integrators
    app.state.notifications = notifications
    app.state.twin = twin
    app.state.scenarios = scenarios
    app.state.pressure_plans = plans
    app.state.plant = plant
    return app
