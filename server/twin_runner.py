"""The live twin: tags → twin inputs → a steady solve every N seconds → virtual tags and a snapshot.

Each cycle (default every 10 s):

1. **Boundary values** from the tag store, good quality only: a station's measured outlet
   pressure is its regulator's set-point; a station whose inlet is a network source gives the
   source pressure from its inlet gauge; line valves with a position tag give their opening;
   the mean station gas temperature is the flowing temperature.
2. **Demands**: a consumer with an industrial volume corrector takes the flow its counter
   measures (`meter/<id>/vb`, its rise over the last five minutes, `realtime.counters`); every
   other service point its expected flow now from its category's SigLinDe profile at today's
   air temperature (the `twin_air_temperature_c` setting, else the town's climate normal for
   the date) and the local hour, scaled per pressure zone so that the zone's consumption
   equals what its metered stations measure flowing in (inflow through the regulators feeding
   it minus what leaves through those it feeds, minus the correctors' measured flows), where
   all of them measure.
3. **Solve** (`twin_jax.solve_steady`, warm-started from the previous state) in a worker
   thread, so the event loop never waits for JAX.
4. **Publish**: modelled pressure of every node (`twin/node/<id>/p`, Pa gauge) and mass flow of
   every pipe (`twin/pipe/<id>/flow`, kg/s) as virtual tags through the telemetry pipeline (so
   bus, historian and subscriptions see them like measurements), residuals measured − modelled
   where a sensor is not itself a boundary value (`twin/residual/<tag path>`: station inlet
   gauges inside the network, industrial correctors' pressure), and a `NetworkSnapshot` for
   GraphQL's `networkState` with a note on the bus topic `twin`.
5. **Leak watch** (`server/leak_watch.py`): the residuals and each metered zone's balance
   (inflow − profile demand) go into one CUSUM per district; `area/<id>/leak` shows the
   estimated leak (m³/h) while "leak suspected" holds — the alarm engine raises it from there
   (rule `area/leak:hi`) — and `area/<id>/leak_level` the detector's level (1 = threshold).
6. **State estimation** (`server/estimation_watch.py`): the same gauges and the stations' flow
   meters are collected cycle by cycle; every `estimation_every_s` (five minutes) their window
   means give a demand scale and a roughness factor per area with their uncertainty, and the
   bad-data test names a sensor that disagrees with the rest — in a background thread, so the
   cycles keep their pace; `networkState.estimation` shows the last one.

The network is read from the registry once at start (and again by `reload()`); it is compiled
in a worker thread too — importing JAX and compiling the demo town takes a few seconds.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import datetime as dt
import logging
import time
from collections import defaultdict
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import numpy as np

from control.model import Action, Impact, Target, TargetKind
from erp.services.registry import AssetRecord, corrector_service_points, load_levels, network_records
from realtime.bus import AbstractBus
from realtime.counters import CounterRate
from realtime.model import Quality, TagDef, TagValue
from realtime.store import TagStore
from realtime.twin_state import (
    TWIN_TOPIC,
    ConsumerShortfall,
    DistrictLeakState,
    NetworkSnapshot,
    NodeState,
    PipeState,
    Residual,
)
from server.estimation_watch import EstimationWatch
from server.leak_watch import METER_ACCURACY, LeakWatch, ZoneBalance

__all__ = ["TwinRunner", "load_registry_records"]

log = logging.getLogger("gasops.twin")

_STD20_PER_STD0 = 273.15 / 293.15  # gas density at 20 °C / at 0 °C, same pressure


async def load_registry_records(db: Any) -> tuple[list[AssetRecord], dict[str, float]]:
    """The registry's network as records (everything not retired) and each pressure level's
    maximum (Pa gauge: a source's pressure until its gauge reports)."""
    async with db() as s:
        levels = await load_levels(s)
        return await network_records(s), {code: b.max_pa_gauge for code, b in levels.items()}


class _Model:
    """The compiled network and the static maps from tags to its parameters (worker thread)."""

    def __init__(self, records: list[AssetRecord], level_max_pa_gauge: Mapping[str, float]) -> None:
        import jax.numpy as jnp

        from server.twin_model import description_from_records
        from twin_jax import compile_network

        self.jnp = jnp
        desc = description_from_records(records, level_max_pa_gauge=level_max_pa_gauge)
        self.net = compile_network(desc)
        self.base = self.net.parameters()
        net = self.net
        by_kind: dict[str, dict[str, Mapping[str, Any]]] = defaultdict(dict)
        for r in records:
            by_kind[r.kind][r.id] = r.values
        self.node_area = [by_kind["node"].get(i, {}).get("area_id") for i in net.node_ids]
        nodes = by_kind["node"]
        self.node_lat = np.array([float(nodes.get(i, {}).get("lat") or np.nan) for i in net.node_ids])
        self.node_lon = np.array([float(nodes.get(i, {}).get("lon") or np.nan) for i in net.node_ids])
        self.pipe_area = [by_kind["pipe"].get(i, {}).get("area_id") for i in net.pipe_ids]
        self.estimation: EstimationWatch | None = None
        sp = by_kind["service_point"]
        self.consumer_category = [str(sp.get(c, {}).get("category") or "household") for c in net.consumer_ids]
        self.consumer_annual = np.array([float(sp.get(c, {}).get("annual_volume_m3_std") or 0.0)
                                         for c in net.consumer_ids])
        self.consumer_peak = np.array([float(sp.get(c, {}).get("peak_load_m3h_std") or 0.0)
                                       for c in net.consumer_ids])
        self.consumer_area = [sp.get(c, {}).get("area_id") for c in net.consumer_ids]
        self.consumer_zone = net.zone_of_node[net.consumer_node] if net.consumer_ids else np.zeros(0, int)
        self.consumer_index = {c: k for k, c in enumerate(net.consumer_ids)}
        self.regulator_index = {rid: k for k, rid in enumerate(net.regulator_ids)}
        self.valve_index = {vid: k for k, vid in enumerate(net.valve_ids)}
        self.source_by_node = {net.node_ids[n]: k for k, n in enumerate(net.source_node.tolist())}
        self.stations = {sid: v for sid, v in by_kind["station"].items() if sid in self.regulator_index}
        self.corrector_node: dict[str, int] = {}
        self.state: Any = None
        self.last: tuple[Any, Any] | None = None  # (parameters, Result) of the last good solve
        self.leak_watch: LeakWatch | None = None
        self.metered_zones = self._metered_zones(records)
        self.metered_zone_mask = np.zeros(net.n_zones, dtype=bool)
        self.metered_zone_mask[self.metered_zones] = True
        gas = net.gas
        self.rho_std20 = gas.density_std_kg_m3 * _STD20_PER_STD0
        area = np.pi * net.branch_diameter_m[: net.n_pipes] ** 2 / 4.0
        self.pipe_area_m2 = area

    def _metered_zones(self, records: list[AssetRecord]) -> list[int]:
        """Zones the runner scales to their metered inflow: no source, and every regulator
        touching them is a station with a flow meter (its `station/<id>/flow` tag)."""
        net = self.net
        stations = {r.id for r in records if r.kind == "station"}
        regs = net.regulators
        touched: dict[int, bool] = {}
        for k, rid in enumerate(net.regulator_ids):
            for z in (int(net.zone_of_node[net.from_node[regs][k]]),
                      int(net.zone_of_node[net.to_node[regs][k]])):
                touched[z] = touched.get(z, True) and rid in stations
        fed = {int(z) for z in net.zone_of_node[net.source_node]}
        return sorted(z for z, ok in touched.items() if ok and z not in fed)

    def demands_kg_s(self, air_c: float, hour: float) -> np.ndarray:
        """Expected consumption of every consumer at a local hour (fractional: the hourly
        profile interpolated, as consumption changes through the hour), kg/s, before scaling."""
        h0 = int(np.floor(hour)) % 24
        frac = hour - np.floor(hour)
        now = self._hourly_kg_s(air_c, h0)
        if frac < 1e-9:
            return now
        return (1.0 - frac) * now + frac * self._hourly_kg_s(air_c, (h0 + 1) % 24)

    def _hourly_kg_s(self, air_c: float, hour: int) -> np.ndarray:
        """Expected consumption of every consumer in a profile hour, kg/s (before zone scaling)."""
        from twin_jax.demand import hourly_demand_m3h

        out = np.zeros(len(self.consumer_category))
        cats = np.array(self.consumer_category)
        for cat in set(self.consumer_category):
            at = cats == cat
            annual = np.where(self.consumer_annual[at] > 0, self.consumer_annual[at],
                              self.consumer_peak[at] * 2_000.0)  # no annual volume: ~2,000 full-load hours
            out[at] = hourly_demand_m3h(cat, annual, air_c, hour)
        return out * self.rho_std20 / 3600.0

    def watch(self, params: Any, result: Any, sensors: list[tuple[str, int]],
              measured: Mapping[str, float], balance: ZoneBalance, period_s: float,
              warmup_s: float) -> list[DistrictLeakState]:
        """One leak-watch cycle on a good solve; builds the detector on the first."""
        if self.leak_watch is None:
            self.leak_watch = LeakWatch(self.net, params, result, self.node_area, sensors,
                                        self.metered_zones, period_s=period_s, warmup_s=warmup_s,
                                        density_std_kg_m3=self.rho_std20)
        return self.leak_watch.step(result, measured, balance)

    def solve(self, params: Any) -> tuple[Any, float]:
        """(Result, seconds) of a warm-started solve."""
        import jax

        from twin_jax import solve_steady

        t0 = time.perf_counter()
        result = jax.block_until_ready(solve_steady(self.net, params, initial=self.state))
        elapsed = time.perf_counter() - t0
        if int(result.status) == 0:
            self.state = result.state
            self.last = (params, result)
        else:
            self.state = None  # a failed solve is no start for the next one
        return result, elapsed


class TwinRunner:
    """Runs the live twin in this process (see the module docstring)."""

    def __init__(self, db: Any, bus: AbstractBus, store: TagStore,
                 publish: Callable[[Mapping[str, TagValue]], None], *, period_s: float = 10.0,
                 air_temperature_c: float | None = None,
                 clock: Callable[[], dt.datetime] = lambda: dt.datetime.now(dt.UTC),
                 local_utc_offset_h: float = 3.0, leak_warmup_s: float = 600.0,
                 estimation_every_s: float = 300.0) -> None:
        self._db = db
        self._estimation_every_s = estimation_every_s
        self._estimating: asyncio.Task[None] | None = None
        self._leak_warmup_s = leak_warmup_s
        self._leak_alarms: set[str] = set()
        self.on_leak_suspected: Callable[[str], Awaitable[object]] | None = None
        """Called (awaited) with the area when the leak watch raises "leak suspected" there: the
        server queues a leak localization (`ScenarioRunner.locate_leak`)."""
        self._bus = bus
        self._store = store
        self._publish = publish
        self.period_s = period_s
        self._air_c = air_temperature_c
        self._clock = clock
        self._utc_offset = dt.timedelta(hours=local_utc_offset_h)
        self._model: _Model | None = None
        self._correctors: dict[str, str] = {}  # corrector meter id → service point id
        self._counters: dict[str, CounterRate] = {}  # corrector meter id → its vb counter's rate
        self._task: asyncio.Task[None] | None = None
        self.latest: NetworkSnapshot | None = None
        self.error: str | None = None
        self.cycles = 0
        self._updated = asyncio.Event()

    # -- lifecycle ----------------------------------------------------------------------------

    async def start(self) -> None:
        """Begin cycling in the background (the first cycle loads and compiles the network)."""
        self._task = asyncio.create_task(self._run(), name="twin-runner")

    async def stop(self) -> None:
        """Stop cycling; idempotent."""
        if self._estimating is not None:
            self._estimating.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._estimating
            self._estimating = None
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def reload(self) -> None:
        """Re-read the registry and recompile (after the network changed)."""
        records, levels = await load_registry_records(self._db)
        async with self._db() as session:
            self._correctors = await corrector_service_points(session)
        self._counters = {}
        model = await asyncio.to_thread(_Model, records, levels)
        self._model = model
        self._define_tags(model)
        self.error = None

    async def _run(self) -> None:
        while True:
            started = time.monotonic()
            try:
                if self._model is None:
                    await self.reload()
                await self.cycle()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the loop must survive a bad network or a failed solve
                self.error = f"{type(exc).__name__}: {exc}"
                log.exception("twin cycle failed")
            await asyncio.sleep(max(0.0, self.period_s - (time.monotonic() - started)))

    async def wait_for_update(self, after_cycles: int = 0) -> NetworkSnapshot:
        """The next snapshot once more than `after_cycles` cycles have run (for tests and tools)."""
        while self.cycles <= after_cycles or self.latest is None:
            self._updated.clear()
            await self._updated.wait()
        return self.latest

    @property
    def network_model(self) -> _Model | None:
        """The compiled registry network and its maps (None until the first load)."""
        return self._model

    def current(self) -> tuple[_Model, Any, Any] | None:
        """(model, parameters, Result) of the last good solve, None before one or without a
        network: the state what-if scenarios start from (`server/twin_scenarios.py`)."""
        model = self._model
        last = model.last if model is not None else None
        if model is None or last is None:
            return None
        params, result = last
        return model, params, result

    # -- impact of commands (control's ImpactPredictor) -------------------------------------

    async def predict(self, target: Target, action: Action, value: float | None) -> Impact | None:
        """The hydraulic impact of a command on the current state; None when the twin cannot tell
        (no solved state yet, or a target it does not model)."""
        model = self._model
        if model is None or model.last is None:
            return None
        spec = _command_scenario(model, target, action, value)
        if spec is None:
            return None
        params, baseline = model.last
        from twin_jax.scenario import run_scenario

        outcome = await asyncio.to_thread(run_scenario, model.net, params, spec, baseline=baseline)
        was_supplied = np.asarray(baseline.state.supplied)
        net = model.net
        cut = [c for c in outcome.unsupplied
               if was_supplied[net.consumer_node[net.consumer_ids.index(c)]]]
        critical = [c for c in outcome.critical_unsupplied if c in set(cut)]
        critical_p = [outcome.pressure_pa_gauge[net.node_ids[int(net.consumer_node[k])]]
                      for k, cid in enumerate(net.consumer_ids)
                      if net.consumer_critical[k] and cid not in set(outcome.unsupplied)]
        below = len(outcome.below_minimum)
        return Impact(
            consumers_cut_off=len(cut), critical_cut_off=tuple(critical),
            min_critical_pressure_pa=min(critical_p) if critical_p else None, method="hydraulic",
            detail=f"twin: {len(cut)} service point(s) cut off, {below} below minimum pressure, "
                   f"lowest pressure {outcome.min_pressure_pa_gauge:.0f} Pa ({outcome.status.message})")

    # -- one cycle ----------------------------------------------------------------------------

    def _define_tags(self, model: _Model) -> None:
        net = model.net
        for nid, area in zip(net.node_ids, model.node_area, strict=True):
            self._store.define(TagDef(path=f"twin/node/{nid}/p", unit="Pa",
                                      description="modelled pressure, gauge (twin)", asset_id=nid,
                                      area_id=area))
        for pid, area in zip(net.pipe_ids, model.pipe_area, strict=True):
            self._store.define(TagDef(path=f"twin/pipe/{pid}/flow", unit="kg/s",
                                      description="modelled mass flow (twin)", asset_id=pid,
                                      area_id=area))
        for area in sorted({a for a in model.node_area if a is not None}):
            # normally in the tags table (`erp.services.tags`, with the alarm rule on `leak`)
            for name, unit, what in (("leak", "m3/h", "leak suspected: estimated rate (0: none)"),
                                     ("leak_level", "", "leak detector level (1 = alarm)")):
                if f"area/{area}/{name}" not in self._store.known:
                    self._store.define(TagDef(path=f"area/{area}/{name}", unit=unit, description=what,
                                              asset_id=area, area_id=area))
        for path, _node in self._residual_sensors(model):
            sensor = self._store.known.get(path)
            self._store.define(TagDef(path=f"twin/residual/{path}", unit=sensor.unit if sensor else "",
                                      description=f"measured − modelled for {path}",
                                      asset_id=sensor.asset_id if sensor else None,
                                      area_id=sensor.area_id if sensor else None))

    def _residual_sensors(self, model: _Model) -> list[tuple[str, int]]:
        """(tag path, node index) of sensors compared with the model, not used as inputs."""
        out = []
        net = model.net
        for sid, st in model.stations.items():
            inlet = st.get("inlet_node_id")
            if inlet in net.node_index and inlet not in model.source_by_node:
                out.append((f"station/{sid}/p_in", net.node_index[inlet]))
        for meter_id, sp in sorted(self._correctors.items()):
            if sp in model.consumer_index:  # a corrector's gauge reads absolute pressure
                out.append((f"meter/{meter_id}/p", int(net.consumer_node[model.consumer_index[sp]])))
        return out

    def _good(self, path: str) -> float | None:
        state = self._store.get(path)
        if state is None or state.value is None or not Quality(state.value.quality).is_good:
            return None
        v = state.value.value
        return float(v) if isinstance(v, int | float) and not isinstance(v, bool) else None

    def _parameters(self, model: _Model, now: dt.datetime
                    ) -> tuple[Any, float, float, ZoneBalance]:
        """(parameters, air °C, gas °C, the zones' balance) from the tag store."""
        jnp = model.jnp
        net = model.net
        base = model.base
        setpoints = np.asarray(base.setpoint_pa_gauge).copy()
        sources = np.asarray(base.source_pressure_pa_gauge).copy()
        opening = np.asarray(base.valve_opening).copy()
        temps: list[float] = []
        flows: dict[str, float] = {}
        for sid, st in model.stations.items():
            k = model.regulator_index[sid]
            p_out = self._good(f"station/{sid}/p_out")
            if p_out is not None and p_out > 0:
                setpoints[k] = p_out
            p_in = self._good(f"station/{sid}/p_in")
            inlet = st.get("inlet_node_id")
            if p_in is not None and inlet in model.source_by_node:
                sources[model.source_by_node[inlet]] = p_in
            t = self._good(f"station/{sid}/t_gas")
            if t is not None:
                temps.append(t)
            q = self._good(f"station/{sid}/flow")
            if q is not None:
                flows[sid] = q
        for vid, k in model.valve_index.items():
            pos = self._good(f"valve/{vid}/position")
            if pos is not None:
                opening[k] = min(max(pos / 100.0, 0.0), 1.0)
        gas_c = float(np.mean(temps)) if temps else net.gas.temperature_k - 273.15
        local = now + self._utc_offset
        if self._air_c is not None:
            air_c = self._air_c
        else:
            from twin_jax.demand import climate_mean_temperature_c

            air_c = float(climate_mean_temperature_c(np.array([local.timetuple().tm_yday]))[0])
        demand = model.demands_kg_s(air_c, local.hour + local.minute / 60.0 + local.second / 3600.0)
        measured = np.zeros(len(demand), dtype=bool)
        for k, kg_s in self._metered_demands(model, now).items():
            demand[k], measured[k] = kg_s, True
        balance = self._zone_balance(model, demand, flows)
        # the zone's metered inflow less its correctors' flows is what the profiles must add up to
        by_profile = np.bincount(model.consumer_zone, weights=np.where(measured, 0.0, demand),
                                 minlength=net.n_zones) if len(demand) else np.zeros(net.n_zones)
        for_profile = balance.inflow_kg_s - (balance.profile_kg_s - by_profile)
        known = model.metered_zone_mask & np.isfinite(for_profile) & (by_profile > 0)
        scale = np.where(known, for_profile / np.where(by_profile > 0, by_profile, 1.0), 1.0)
        demand = np.where(measured, demand, demand * np.clip(scale, 0.05, 20.0)[model.consumer_zone])
        params = base._replace(
            consumer_demand_kg_s=jnp.asarray(demand), setpoint_pa_gauge=jnp.asarray(setpoints),
            source_pressure_pa_gauge=jnp.asarray(sources), valve_opening=jnp.asarray(opening),
            temperature_k=jnp.asarray(gas_c + 273.15))
        return params, air_c, gas_c, balance

    def _metered_demands(self, model: _Model, now: dt.datetime) -> dict[int, float]:
        """Consumer index → the flow (kg/s) its industrial corrector's counter measures now,
        for the correctors whose counter gives a rate (good readings spanning half a minute
        or more of the last five minutes)."""
        out: dict[int, float] = {}
        for meter_id, sp in self._correctors.items():
            k = model.consumer_index.get(sp)
            if k is None:
                continue
            state = self._store.get(f"meter/{meter_id}/vb")
            counter = self._counters.setdefault(meter_id, CounterRate())
            value = state.value.value if state is not None else None
            if state is not None and Quality(state.value.quality).is_good and isinstance(
                    value, int | float) and not isinstance(value, bool):
                counter.add(state.value.source_ts, float(value))
                if state.last_reported > state.last_updated:  # reported again, unchanged since
                    counter.add(state.last_reported, float(value))
            m3h = counter.per_hour(now)
            if m3h is not None:
                out[k] = max(m3h, 0.0) * model.rho_std20 / 3600.0
        return out

    def _zone_balance(self, model: _Model, demand: np.ndarray, flows_m3h: Mapping[str, float]
                      ) -> ZoneBalance:
        """Each zone's metered inflow (NaN where a touching station's flow is missing now) and
        profile demand, kg/s: what the zone scaling and the leak watch's balance rows use."""
        net = model.net
        profile = np.bincount(model.consumer_zone, weights=demand, minlength=net.n_zones) \
            if len(demand) else np.zeros(net.n_zones)
        inflow = np.zeros(net.n_zones)
        variance = np.zeros(net.n_zones)
        regs = net.regulators
        for rid, k in model.regulator_index.items():
            z_in = net.zone_of_node[net.from_node[regs][k]]
            z_out = net.zone_of_node[net.to_node[regs][k]]
            q = flows_m3h.get(rid)
            if q is None:
                inflow[z_in] = inflow[z_out] = np.nan
                continue
            kg_s = q * model.rho_std20 / 3600.0
            inflow[z_out] += kg_s
            inflow[z_in] -= kg_s
            variance[z_in] += (METER_ACCURACY * kg_s) ** 2
            variance[z_out] += (METER_ACCURACY * kg_s) ** 2
        inflow = np.where(model.metered_zone_mask, inflow, np.nan)
        return ZoneBalance(inflow_kg_s=inflow, profile_kg_s=profile, sigma_kg_s=np.sqrt(variance),
                           metered=model.metered_zone_mask)

    async def cycle(self) -> NetworkSnapshot | None:
        """One estimate–solve–publish cycle; the snapshot, or None without a network."""
        model = self._model
        if model is None:
            return None
        now = self._clock()
        params, air_c, gas_c, balance = self._parameters(model, now)
        result, elapsed = await asyncio.to_thread(model.solve, params)
        snapshot = self._snapshot(model, params, result, elapsed, now, air_c, gas_c)
        if int(result.status) == 0:
            measured = {r.path: r.measured for r in snapshot.residuals}
            try:
                leaks = await asyncio.to_thread(model.watch, params, result, self._residual_sensors(model),
                                                measured, balance, self.period_s, self._leak_warmup_s)
            except Exception:  # the twin's own state must not wait for the leak watch
                log.exception("leak watch failed this cycle")
            else:
                snapshot = dataclasses.replace(snapshot, leaks=leaks)
                await self._leaks_raised(leaks)
            self._collect_for_estimation(model, params, result, measured, now)
        if model.estimation is not None and model.estimation.latest is not None:
            snapshot = dataclasses.replace(snapshot, estimation=model.estimation.latest)
        self._publish_tags(model, snapshot, now)
        self.latest = snapshot
        self.cycles += 1
        self._updated.set()
        self._bus.publish(TWIN_TOPIC, {"type": "twin", "at": now.isoformat(), "status": snapshot.status})
        return snapshot

    def _collect_for_estimation(self, model: _Model, params: Any, result: Any,
                                measured: Mapping[str, float], now: dt.datetime) -> None:
        """Hand this good cycle's readings to the state estimation; start an estimate in the
        background when its window is complete and none is running."""
        if self._estimation_every_s <= 0:
            return
        if model.estimation is None:
            pressure = [(path, node, path.startswith("meter/"))
                        for path, node in self._residual_sensors(model)]
            flows = [(f"station/{sid}/flow", sid) for sid in sorted(model.stations)]
            # a consumer with a corrector runs on its measured flow: no area's scale applies
            metered = {model.consumer_index.get(sp) for sp in self._correctors.values()}
            model.estimation = EstimationWatch(
                model.net, result.state,
                consumer_area=[None if k in metered else a for k, a in enumerate(model.consumer_area)],
                pipe_area=model.pipe_area, pressure_sensors=pressure, flow_sensors=flows,
                flow_m3h_to_kg_s=model.rho_std20 / 3600.0, every_s=self._estimation_every_s)
        watch = model.estimation
        readings = dict(measured)
        for sid in model.stations:
            q = self._good(f"station/{sid}/flow")
            if q is not None:
                readings[f"station/{sid}/flow"] = q
        clock = now.timestamp()
        watch.add(readings, clock)
        if watch.due(clock) and (self._estimating is None or self._estimating.done()):
            window = watch.take_window()
            self._estimating = asyncio.create_task(self._estimate(watch, params, window, now),
                                                   name="twin-estimation")

    async def _estimate(self, watch: EstimationWatch, params: Any, window: np.ndarray,
                        now: dt.datetime) -> None:
        try:
            state = await asyncio.to_thread(watch.estimate, params, window, now)
        except Exception:  # the twin goes on without a new estimate
            log.exception("state estimation failed")
            return
        log.info("state estimation over %d cycles: %s, chi2/dof %s, %d suspect sensor(s)",
                 state.cycles, state.message, state.chi2_per_dof, len(state.bad_sensors))

    async def _leaks_raised(self, leaks: list[DistrictLeakState]) -> None:
        """Tell `on_leak_suspected` of every area whose leak alarm came on this cycle."""
        now_on = {d.area_id for d in leaks if d.alarm}
        raised, self._leak_alarms = now_on - self._leak_alarms, now_on
        for area in sorted(raised):
            log.warning("leak suspected in area %s", area)
            if self.on_leak_suspected is not None:
                try:
                    await self.on_leak_suspected(area)
                except Exception:  # the twin's cycle goes on; the alarm stands regardless
                    log.exception("could not queue a leak localization for area %s", area)

    def _snapshot(self, model: _Model, params: Any, result: Any, elapsed: float, now: dt.datetime,
                  air_c: float, gas_c: float) -> NetworkSnapshot:
        from twin_jax import Status

        net = model.net
        status = Status(int(result.status))
        p_abs = np.asarray(result.state.pressure_pa_abs)
        p = p_abs - net.ambient_pa
        supplied = np.asarray(result.state.supplied)
        m = np.asarray(result.state.mass_flow_kg_s)
        nodes = [NodeState(i, a, float(v), bool(s))
                 for i, a, v, s in zip(net.node_ids, model.node_area, p, supplied, strict=True)]
        pf = p_abs[net.from_node[net.pipes]]
        pt = p_abs[net.to_node[net.pipes]]
        rho = np.asarray(net.gas.density_kg_m3(0.5 * (pf + pt), gas_c + 273.15))
        vel = m[net.pipes] / (rho * model.pipe_area_m2)
        pipes = [PipeState(i, a, float(q), float(v))
                 for i, a, q, v in zip(net.pipe_ids, model.pipe_area, m[net.pipes], vel, strict=True)]
        below = []
        for k, cid in enumerate(net.consumer_ids):
            n = int(net.consumer_node[k])
            pmin = float(net.consumer_min_pa_gauge[k])
            if not supplied[n] or p[n] < pmin:
                below.append(ConsumerShortfall(cid, net.node_ids[n], model.consumer_area[k], float(p[n]),
                                               pmin, bool(net.consumer_critical[k]), bool(supplied[n])))
        residuals = []
        for path, n in self._residual_sensors(model):
            measured = self._good(path)
            if measured is not None:
                modelled = p_abs[n] if path.startswith("meter/") else p[n]
                residuals.append(Residual(path, measured, float(modelled)))
        return NetworkSnapshot(
            at=now, status=status.name.lower(), message=status.message,
            iterations=int(result.iterations), solve_ms=elapsed * 1e3, air_temperature_c=air_c,
            gas_temperature_c=gas_c, total_demand_kg_s=float(np.sum(np.asarray(params.consumer_demand_kg_s))),
            nodes=nodes, pipes=pipes, below_minimum=below, residuals=residuals)

    def _publish_tags(self, model: _Model, snap: NetworkSnapshot, now: dt.datetime) -> None:
        quality = Quality.GOOD if snap.status == "converged" else Quality.BAD
        values: dict[str, TagValue] = {}
        for n in snap.nodes:
            values[f"twin/node/{n.id}/p"] = TagValue(round(n.pressure_pa_gauge, 1), quality, now, now)
        for pipe in snap.pipes:
            values[f"twin/pipe/{pipe.id}/flow"] = TagValue(round(pipe.mass_flow_kg_s, 6), quality, now, now)
        for r in snap.residuals:
            values[f"twin/residual/{r.path}"] = TagValue(round(r.residual, 1), quality, now, now)
        for d in snap.leaks:
            values[f"area/{d.area_id}/leak"] = TagValue(LeakWatch.leak_tag_value(d), Quality.GOOD, now, now)
            values[f"area/{d.area_id}/leak_level"] = TagValue(round(d.level, 3), Quality.GOOD, now, now)
        self._publish(values)


def _command_scenario(model: _Model, target: Target, action: Action, value: float | None) -> Any:
    """The what-if of a command, or None for targets the twin does not model (SKZ, meters)."""
    from twin_jax.scenario import ScenarioSpec

    net = model.net
    closing = action is Action.close or (action is Action.set_position and value is not None
                                         and value <= 0.0)
    if target.kind is TargetKind.valve and target.asset_id in model.valve_index:
        if action is Action.set_position and value is not None:
            return ScenarioSpec(valve_openings={target.asset_id: min(max(value / 100.0, 0.0), 1.0)})
        return ScenarioSpec(valve_openings={target.asset_id: 0.0 if closing else 1.0})
    if target.kind is TargetKind.station and target.asset_id in model.regulator_index:
        if action is Action.set_outlet_setpoint and value is not None:
            return ScenarioSpec(regulator_setpoints_pa_gauge={target.asset_id: value})
        if closing:
            return ScenarioSpec(regulators_shut=(target.asset_id,))
        return ScenarioSpec()
    del net
    return None
