"""The demo's hidden "true" plant: the registry network solved with the twin's physics, perturbed.

The simulated field (`gasops demo`) should behave like a real town, and the live twin should
have something to discover. So the station simulator reads its flows and pressures from this
plant instead of drawing them: the same network and solver as the twin, but

- every pipe's roughness off by a fixed random factor (0.7…1.3, seeded): the twin assumes the
  registry's values;
- every consumer's demand: its SigLinDe profile at the air temperature, times a fixed
  per-consumer factor (lognormal, σ 0.3) and a slowly wandering town-wide factor (AR(1), ±5 %);
- occasional leaks: on average one every `leak_every_h` hours at a random node, 0.5…5 % of
  its zone's demand, lasting one to three hours (`truth()` lists them — the hidden answer a
  leak-detection benchmark is scored against);
- the stations' outlet valves as the simulator's `valve_pos` says (a shut station is shut here),
  the smart line valves as their simulated actuators stand.

The station simulator reads flows and pressures from it, the volume correctors' simulator their
pressure and flow (`meter(id)`).

It solves every `period_s` seconds in a worker thread; `station(id)` returns the latest
(flow m³/h at 20 °C, inlet and outlet gauge pressure, Pa) or None until the first solve.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from erp.services.registry import corrector_service_points
from server.twin_runner import load_registry_records

__all__ = ["Leak", "SimulatedPlant"]

log = logging.getLogger("gasops.plant")


@dataclass(frozen=True)
class Leak:
    """A hidden leak of the simulated plant."""

    node_id: str
    rate_kg_s: float
    start: dt.datetime
    end: dt.datetime


class SimulatedPlant:
    """The perturbed network behind the demo's simulators (see the module docstring)."""

    def __init__(self, db: Any, *, period_s: float = 5.0, seed: int = 7, leak_every_h: float = 6.0,
                 clock: Callable[[], dt.datetime] = lambda: dt.datetime.now(dt.UTC),
                 utc_offset_h: float = 3.0, air_temperature_c: float | None = None) -> None:
        self._db = db
        self.period_s = period_s
        self._rng = random.Random(seed)
        self._np_rng = np.random.default_rng(seed)
        self._leak_every_s = leak_every_h * 3600.0
        self._clock = clock
        self._utc_offset = dt.timedelta(hours=utc_offset_h)
        self._air_c = air_temperature_c
        self._task: asyncio.Task[None] | None = None
        self._model: Any = None
        self._stations: dict[str, tuple[float, float, float]] = {}
        self._leaks: list[Leak] = []
        self._town_factor = 1.0
        self._consumer_factor: np.ndarray | None = None
        self._roughness: Any = None
        self.station_opening: Callable[[str], float] = lambda _sid: 1.0
        """Set by the field: the simulator's outlet valve position of a station, 0…1."""
        self.station_setpoint: Callable[[str], float | None] = lambda _sid: None
        """Set by the field: a station controller's outlet set-point, Pa gauge (None: as
        registered)."""
        self.valve_opening: Callable[[str], float | None] = lambda _vid: None
        """Set by the field: a smart valve actuator's position, 0…1 (None: as registered)."""
        self._meters: dict[str, int] = {}  # corrector meter id → consumer index
        self._corrector_values: dict[str, tuple[float, float]] = {}

    async def start(self) -> None:
        """Load and compile in the background; the simulators use their own model until then."""
        self._task = asyncio.create_task(self._run(), name="simulated-plant")

    async def stop(self) -> None:
        """Stop solving; idempotent."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    def station(self, station_id: str) -> tuple[float, float, float] | None:
        """(flow m³/h at 20 °C, inlet Pa gauge, outlet Pa gauge) of a station, if solved."""
        return self._stations.get(station_id)

    def meter(self, meter_id: str) -> tuple[float, float] | None:
        """(absolute pressure Pa, standard flow m³/h at 20 °C) at a volume corrector, if solved."""
        return self._corrector_values.get(meter_id)

    def truth(self) -> list[Leak]:
        """The leaks running now or in the past (the hidden truth)."""
        return list(self._leaks)

    async def _run(self) -> None:
        try:
            records, levels = await load_registry_records(self._db)
            async with self._db() as session:
                correctors = await corrector_service_points(session)
            from server.twin_runner import _Model

            self._model = await asyncio.to_thread(_Model, records, levels)
            index = {c: k for k, c in enumerate(self._model.net.consumer_ids)}
            self._meters = {m: index[sp] for m, sp in correctors.items() if sp in index}
        except Exception:  # no network (an empty registry): the simulators keep their own model
            log.exception("simulated plant: no network to solve")
            return
        net = self._model.net
        factors = self._np_rng.uniform(0.7, 1.3, net.n_pipes)
        self._roughness = np.asarray(self._model.base.roughness_m) * factors
        self._consumer_factor = self._np_rng.lognormal(0.0, 0.3, len(net.consumer_ids))
        log.info("simulated plant: %d nodes, roughness perturbed ±30 %%", net.n_nodes)
        while True:
            started = time.monotonic()
            try:
                await self._cycle()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("simulated plant cycle failed")
            await asyncio.sleep(max(0.0, self.period_s - (time.monotonic() - started)))

    def _leak_process(self, now: dt.datetime, zone_demand: np.ndarray) -> np.ndarray:
        net = self._model.net
        if self._rng.random() < self.period_s / self._leak_every_s:
            node = self._rng.randrange(net.n_nodes)
            share = self._rng.uniform(0.005, 0.05)
            rate = share * float(zone_demand[net.zone_of_node[node]])
            if rate > 0:
                leak = Leak(net.node_ids[node], rate, now,
                            now + dt.timedelta(hours=self._rng.uniform(1.0, 3.0)))
                self._leaks.append(leak)
                log.info("simulated plant: leak of %.4f kg/s at %s until %s", rate, leak.node_id,
                         leak.end.isoformat())
        extra = np.zeros(net.n_nodes)
        for leak in self._leaks:
            if leak.start <= now < leak.end:
                extra[net.node_index[leak.node_id]] += leak.rate_kg_s
        return extra

    async def _cycle(self) -> None:
        import jax.numpy as jnp

        from twin_jax.demand import climate_mean_temperature_c

        model = self._model
        net = model.net
        now = self._clock()
        local = now + self._utc_offset
        air_c = self._air_c if self._air_c is not None else float(
            climate_mean_temperature_c(np.array([local.timetuple().tm_yday]))[0])
        hour = local.hour + local.minute / 60.0
        profile = model.demands_kg_s(air_c, hour)  # interpolated through the hour
        self._town_factor = 1.0 + 0.9 * (self._town_factor - 1.0) + self._rng.gauss(0.0, 0.005)
        self._town_factor = min(max(self._town_factor, 0.95), 1.05)
        demand = profile * self._consumer_factor * self._town_factor
        zone_demand = np.bincount(model.consumer_zone, weights=demand, minlength=net.n_zones)
        extra = self._leak_process(now, zone_demand)
        in_service = np.array([1.0 if self.station_opening(r) > 0.05 else 0.0
                               for r in net.regulator_ids])
        setpoint = np.asarray(model.base.setpoint_pa_gauge).copy()
        for k, rid in enumerate(net.regulator_ids):
            sp = self.station_setpoint(rid)
            if sp is not None:
                setpoint[k] = sp
        opening = np.asarray(model.base.valve_opening).copy()
        for vid, k in model.valve_index.items():
            position = self.valve_opening(vid)
            if position is not None:
                opening[k] = position
        params = model.base._replace(
            consumer_demand_kg_s=jnp.asarray(demand), extra_demand_kg_s=jnp.asarray(extra),
            roughness_m=jnp.asarray(self._roughness), regulator_in_service=jnp.asarray(in_service),
            setpoint_pa_gauge=jnp.asarray(setpoint),
            valve_opening=jnp.asarray(opening))
        result, _ = await asyncio.to_thread(model.solve, params)
        if int(result.status) != 0:
            log.warning("simulated plant did not converge this cycle")
            return
        p = np.asarray(result.state.pressure_pa_abs) - net.ambient_pa
        m = np.asarray(result.state.mass_flow_kg_s)
        regs = net.regulators
        stations = {}
        for k, rid in enumerate(net.regulator_ids):
            flow_m3h = max(float(m[regs][k]), 0.0) / model.rho_std20 * 3600.0
            stations[rid] = (flow_m3h, float(p[net.from_node[regs][k]]), float(p[net.to_node[regs][k]]))
        self._stations = stations
        supplied = np.asarray(result.state.supplied)
        p_abs = np.asarray(result.state.pressure_pa_abs)
        correctors = {}
        for meter_id, k in self._meters.items():
            node = int(net.consumer_node[k])
            flow = float(demand[k]) / model.rho_std20 * 3600.0 if supplied[node] else 0.0
            correctors[meter_id] = (float(p_abs[node]), flow)
        self._corrector_values = correctors
