"""Leak detection in the live twin's loop: residual rows each cycle, one CUSUM per district.

The twin runner (`server/twin_runner.py`) hands in every good solve; this module turns it into
the residual rows of `twin_jax.detect.LeakDetector` and back into plain results:

- **pressure rows:** the gauges the runner compares with the model (station inlet gauges
  inside the network, industrial correctors' absolute pressure): measured − modelled, Pa. The
  baseline's regressor is the modelled drop below the highest modelled pressure of the gauge's
  zone (model errors of roughness and demand grow with it); noise floor 300 Pa in medium
  pressure (a 200 Pa gauge under a 500 Pa store deadband), 50 Pa in low pressure.
- **balance rows:** one per zone the runner scales to its metered inflow (every regulator
  touching it has a flow meter and no source feeds it): inflow − profile demand, kg/s. The
  regressor is the profile demand; the noise floor 1 % of each touching station's flow, in
  quadrature. The nuisance column is the metered inflow: a town-wide demand factor (weather off
  the profile) moves every zone's balance by its share.

Signatures come from the twin's sensitivities at the first good solve (`LeakLocator`: one
reverse-mode solve per gauge) and the zone scaling the runner does
(`twin_jax.detect.district_signatures`). The detector's "districts" are the parts of each
registry area in one pressure zone: a leak in an area's low-pressure streets moves their
station's balance alone, one in its medium-pressure pipes another, and one signature averaged
over both would misjudge either (its size by a factor of two and more). An area reports its
strongest part; its estimated leak is the sum of its parts in alarm.
They are rebuilt when the runner reloads the network. Everything here runs in the runner's
worker thread (NumPy and JAX).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from realtime.twin_state import DistrictLeakState

__all__ = ["LeakWatch", "ZoneBalance"]

log = logging.getLogger("gasops.twin.leaks")

MEDIUM_SIGMA_PA = 300.0
LOW_SIGMA_PA = 50.0
LOW_PRESSURE_PA_GAUGE = 10_000.0
METER_ACCURACY = 0.01
MIN_ALARM_M3H = 0.1
"""While a district is in alarm its `area/<id>/leak` tag shows at least this (m³/h), so that
the alarm engine raises it even when the fitted rate rounds to nothing."""


@dataclass(frozen=True)
class ZoneBalance:
    """Per pressure zone, what the runner measured and expected this cycle (kg/s)."""

    inflow_kg_s: np.ndarray
    """[zones] metered inflow (through the regulators feeding it, less what leaves); NaN where a
    station's flow is missing this cycle."""
    profile_kg_s: np.ndarray
    """[zones] the consumers' profile demand before scaling."""
    sigma_kg_s: np.ndarray
    """[zones] the metered inflow's noise (1 % of each touching station's flow, in quadrature)."""
    metered: np.ndarray
    """[zones] bool: scaled to its inflow by the runner (structurally: every touching regulator
    has a flow meter, no source)."""


class LeakWatch:
    """Residual rows of the live loop into per-district CUSUMs (see the module docstring)."""

    def __init__(self, net: Any, params: Any, result: Any, node_area: Sequence[str | None],
                 sensors: Sequence[tuple[str, int]], metered_zones: Sequence[int], *,
                 period_s: float, warmup_s: float, density_std_kg_m3: float) -> None:
        from twin_jax.detect import CusumConfig, LeakDetector, district_signatures
        from twin_jax.leaks import LeakLocator

        self.net = net
        self.sensor_paths = [path for path, _ in sensors]
        self.sensor_nodes = np.array([node for _, node in sensors], dtype=np.int64)
        self.absolute = np.array([path.startswith("meter/") for path in self.sensor_paths])
        self.metered_zones = np.asarray(metered_zones, dtype=np.int64)
        p_gauge = np.asarray(result.state.pressure_pa_abs) - net.ambient_pa
        low = p_gauge[self.sensor_nodes] < LOW_PRESSURE_PA_GAUGE if len(sensors) else np.zeros(0, bool)
        self.sigma_p = np.where(low, LOW_SIGMA_PA, MEDIUM_SIGMA_PA)
        locator = LeakLocator(net, params, [net.node_ids[n] for n in self.sensor_nodes.tolist()],
                              self.sigma_p, baseline=result)
        parts = [None if a is None else f"{a}@{z}" for a, z in zip(node_area, net.zone_of_node.tolist(),
                                                                   strict=True)]
        self.districts, g = district_signatures(
            locator.sensitivity, locator.candidates, parts, net.zone_of_node,
            net.consumer_node, np.asarray(params.consumer_demand_kg_s), self.metered_zones.tolist())
        self.part_area = [d.rsplit("@", 1)[0] for d in self.districts]
        n_f = len(self.metered_zones)
        zone_demand = np.bincount(net.zone_of_node[net.consumer_node], minlength=net.n_zones,
                                  weights=np.asarray(params.consumer_demand_kg_s))
        floor = np.concatenate([self.sigma_p,
                                np.maximum(METER_ACCURACY * zone_demand[self.metered_zones], 1e-6)])
        self.detector = LeakDetector(
            self.districts, g, floor, density_std_kg_m3=density_std_kg_m3,
            config=CusumConfig.for_period(period_s, len(self.districts),
                                          warmup_cycles=max(2, round(warmup_s / period_s))))
        self.state = self.detector.init()
        log.info("leak watch: %d parts of %d areas, %d gauges, %d metered zones", len(self.districts),
                 len(set(self.part_area)),
                 len(sensors), n_f)

    def step(self, result: Any, measured: Mapping[str, float], balance: ZoneBalance
             ) -> list[DistrictLeakState]:
        """One cycle on a good solve: `measured` the gauges' values by tag path (gauge Pa for
        stations, absolute Pa for correctors; missing ones are left out)."""
        net = self.net
        p_abs = np.asarray(result.state.pressure_pa_abs)
        p_gauge = p_abs - net.ambient_pa
        zone = net.zone_of_node
        top = np.full(net.n_zones, -np.inf)
        np.maximum.at(top, zone, p_gauge)
        nodes = self.sensor_nodes
        modelled = np.where(self.absolute, p_abs[nodes], p_gauge[nodes])
        r_p = np.array([measured.get(path, np.nan) for path in self.sensor_paths]) - modelled
        x_p = top[zone[nodes]] - p_gauge[nodes]
        z = self.metered_zones
        r_f = balance.inflow_kg_s[z] - balance.profile_kg_s[z]
        residual = np.concatenate([r_p, r_f])
        x = np.concatenate([x_p, balance.profile_kg_s[z]])
        sigma = np.concatenate([self.sigma_p, np.maximum(balance.sigma_kg_s[z], 1e-6)])
        nuisance = np.concatenate([np.zeros(len(nodes)), np.nan_to_num(balance.inflow_kg_s[z])])
        self.state, found = self.detector.step(self.state, residual, x=x, sigma=sigma,
                                               nuisance=nuisance[:, None])
        warming = self.state.cycles <= self.detector.config.warmup_cycles  # also without data
        by_area: dict[str, list[Any]] = {}
        for area, part in zip(self.part_area, found.districts, strict=True):
            by_area.setdefault(area, []).append(part)
        out = []
        for area, parts in by_area.items():
            top = max(parts, key=lambda d: (d.level, d.z))
            out.append(DistrictLeakState(
                area_id=area, level=top.level, z=top.z, alarm=any(d.alarm for d in parts),
                leak_m3h_std=sum(d.leak_m3h_std for d in parts if d.alarm),
                observable=any(d.observable for d in parts), warming_up=warming))
        return out

    @staticmethod
    def leak_tag_value(d: DistrictLeakState) -> float:
        """What `area/<id>/leak` shows: the estimated rate in alarm (≥ 0.1 m³/h), else 0."""
        return round(max(d.leak_m3h_std, MIN_ALARM_M3H), 2) if d.alarm else 0.0
