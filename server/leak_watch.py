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

**Localization** (`localize`): the last `WINDOW_S` of cycles are kept — each row's deviation
from its learned baseline and its noise. Over a window, their means go into
`twin_jax.leaks.screen` with one signature per candidate node (what a leak of 1 kg/s at that
node leaves in the rows, with the runner's zone scaling), the nuisance fitted away: every node
is scored at once (a matrix product), the best come first, and the nodes whose score is within
`REGION_DCHI2` of the best make the area the leak is in — with few gauges that is a whole
district (the balance says "in this zone", no gauge tells where), with more it narrows.
A window that starts before the leak would dilute its mean with leak-free cycles (a leak that
began ten minutes into an hour's window would be fitted at a sixth of its size, and might not
stand out from the noise at all): while an area is in alarm, its window starts at the CUSUM's
change point — the cycle its statistic last left zero — if that is later.
"""

from __future__ import annotations

import collections
import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from realtime.twin_state import DistrictLeakState

__all__ = ["LeakWatch", "ZoneBalance"]

WINDOW_S = 2 * 3600.0
"""Cycles kept for localization."""
REGION_DCHI2 = 4.0
"""Candidates within this χ² of the best are the leak's area (two standard errors)."""
DETECTION_DCHI2 = 25.0
"""The best candidate's χ² gain that says a leak is there at all (as `bench/leaks.py`)."""

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
        # one "district" per candidate node: its own signature, for localization
        _, self.node_signatures = district_signatures(
            locator.sensitivity, locator.candidates,
            [f"{i:09d}" for i in range(net.n_nodes)], net.zone_of_node, net.consumer_node,
            np.asarray(params.consumer_demand_kg_s), self.metered_zones.tolist())
        self.node_candidates = np.sort(locator.candidates)  # the order of the signatures' columns
        self.node_area = list(node_area)
        self.density_std_kg_m3 = density_std_kg_m3
        self.period_s = period_s
        self.recent: collections.deque[tuple[float, np.ndarray, np.ndarray, np.ndarray]] = (
            collections.deque(maxlen=max(1, round(WINDOW_S / period_s))))
        self.onset: dict[str, float] = {}
        """Per area in alarm: when its leak began by the CUSUM (epoch seconds)."""
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
        if found.deviation is not None and found.sigma is not None:
            self.recent.append((time.time(), found.deviation, found.sigma, nuisance))
        warming = self.state.cycles <= self.detector.config.warmup_cycles  # also without data
        by_area: dict[str, list[Any]] = {}
        for area, part in zip(self.part_area, found.districts, strict=True):
            by_area.setdefault(area, []).append(part)
        out = []
        now = time.time()
        runs = dict(zip(self.districts, self.state.run.tolist(), strict=True))
        for area, parts in by_area.items():
            top = max(parts, key=lambda d: (d.level, d.z))
            alarmed = [d for d in parts if d.alarm]
            if not alarmed:
                self.onset.pop(area, None)
            elif area not in self.onset:  # raised now: the change began `run` cycles ago
                run = max(runs[d.district] for d in alarmed)
                self.onset[area] = now - run * self.period_s
            out.append(DistrictLeakState(
                area_id=area, level=top.level, z=top.z, alarm=any(d.alarm for d in parts),
                leak_m3h_std=sum(d.leak_m3h_std for d in parts if d.alarm),
                observable=any(d.observable for d in parts), warming_up=warming))
        return out

    @staticmethod
    def leak_tag_value(d: DistrictLeakState) -> float:
        """What `area/<id>/leak` shows: the estimated rate in alarm (≥ 0.1 m³/h), else 0."""
        return round(max(d.leak_m3h_std, MIN_ALARM_M3H), 2) if d.alarm else 0.0

    def localize(self, area: str | None, window_s: float, *, top: int = 10) -> dict[str, Any]:
        """Rank every candidate node by the last `window_s` of residuals (module docstring).

        Returns plain data: `cycles` used, `detected` (the best candidate's χ² gain over
        `DETECTION_DCHI2`), `candidates` (the best `top`: node, area, fitted leak kg/s and
        m³/h, χ² gain), and `region_node_ids` (the nodes as likely as the best, within
        `REGION_DCHI2`). `area` limits the candidates to that area's nodes.
        """
        from twin_jax.leaks import screen

        now = time.time()
        since = now - window_s
        onsets = [t for a, t in self.onset.items() if area is None or a == area]
        if onsets:  # a leak in alarm: leak-free cycles before its onset would dilute it
            since = max(since, min(onsets) - self.period_s)
        rows = [(d, sg, n) for t, d, sg, n in self.recent if t >= since]
        if not rows:
            raise ValueError("no cycles of the leak watch in the window yet")
        dev = np.stack([d for d, _, _ in rows])
        ok = np.isfinite(dev)
        count = ok.sum(axis=0)
        mean = np.where(count > 0, np.where(ok, dev, 0.0).sum(axis=0) / np.maximum(count, 1), np.nan)
        var = np.stack([sg * sg for _, sg, _ in rows]).mean(axis=0)
        sigma = np.sqrt(var / np.maximum(count, 1))  # the noise of a mean of `count` cycles
        nuisance = np.stack([n for _, _, n in rows]).mean(axis=0)[:, None]
        q, gain = screen(self.node_signatures, mean, sigma, nuisance=nuisance)
        nodes = self.node_candidates
        keep = np.ones(len(nodes), dtype=bool) if area is None else np.array(
            [self.node_area[int(n)] == area for n in nodes])
        if not keep.any():
            raise ValueError(f"no candidate nodes in area {area!r}")
        idx = np.flatnonzero(keep)
        order = idx[np.argsort(-gain[idx], kind="stable")]
        best = float(gain[order[0]])
        region = order[gain[order] >= best - REGION_DCHI2]
        ids = self.net.node_ids
        to_m3h = 3600.0 / self.density_std_kg_m3
        return {
            "cycles": len(rows), "window_s": window_s, "since": since,
            "detected": best > DETECTION_DCHI2,
            "best_gain": best,
            "candidates": [{"node_id": ids[int(nodes[k])], "area_id": self.node_area[int(nodes[k])],
                            "leak_kg_s": float(q[k]), "leak_m3h": float(q[k] * to_m3h),
                            "score": float(gain[k])} for k in order[:top]],
            "region_node_ids": [ids[int(nodes[k])] for k in region],
        }
