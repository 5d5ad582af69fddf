"""State estimation in the live twin's loop (TWIN-3): which demand scales and roughness factors
the live measurements say, and which sensor disagrees with all the others.

Every good cycle the runner hands over what the sensors read (`add`): the gauges it compares with
the model (station inlet gauges inside the network, gauge Pa; industrial volume correctors,
absolute Pa) and the stations' flow meters (m³/h at 20 °C, converted with the gas's density
there). Every `every_s` (default five minutes) the window's means go into
`twin_jax.estimation.StateEstimator` (`estimate`, in a worker thread): one demand scale and one
roughness factor per area, fitted by weighted least squares around the cycle's own parameters
(its boundary values and zone-scaled demands), with

- each window mean's σ from the sensor's per-sample noise (50 Pa on low pressure, 300 Pa on
  medium, 1 % of a flow) over √(samples), and a **model-error** term in quadrature (30 Pa low,
  300 Pa medium, 2 % of a flow): the per-area model cannot represent each consumer's own
  deviation, and without that term a healthy plant looks like bad data everywhere
  (`bench/RESULTS.md`, state estimation: χ²/dof 20 without it, 0.9 with it);
- bad data found by the largest normalized residual test and left out of the fit: those sensors
  are reported (`EstimationState.bad_sensors`, logged), the model is not bent to them.

The factors are reported, not applied to the running twin: the leak watch learns its residual
baselines against the running model, and a step in the model would read as a leak; an engineer
takes observable factors into the registry (roughness) or the load profiles (demand).
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from realtime.twin_state import EstimatedFactor, EstimationState, SuspectSensor

__all__ = ["EstimationWatch"]

log = logging.getLogger("gasops.twin.estimation")

LOW_PRESSURE_PA_GAUGE = 10_000.0
SAMPLE_SIGMA_PA = (50.0, 300.0)
"""Per-sample gauge noise, low and medium pressure."""
MODEL_SIGMA_PA = (30.0, 300.0)
"""Model error of a window mean, low and medium pressure (see the module docstring)."""
FLOW_SAMPLE_REL = 0.01
FLOW_MODEL_REL = 0.02
MIN_SAMPLES = 3
"""Fewer cycles than this in a window: no estimate."""


class EstimationWatch:
    """Collects the live cycles' sensor readings and estimates group factors over each window."""

    def __init__(self, net: Any, state: Any, *, consumer_area: Sequence[str | None],
                 pipe_area: Sequence[str | None],
                 pressure_sensors: Sequence[tuple[str, int, bool]],
                 flow_sensors: Sequence[tuple[str, str]], flow_m3h_to_kg_s: float,
                 every_s: float = 300.0) -> None:
        """`state`: a solved state of `net` (which gauges are on low pressure);
        `pressure_sensors`: (tag path, node index, reads absolute pressure);
        `flow_sensors`: (tag path, branch id whose flow it meters, m³/h)."""
        from twin_jax.estimation import ParameterGroups

        self.net = net
        self.every_s = every_s
        self.groups = ParameterGroups.from_labels(
            [f"{a}" if a else None for a in consumer_area], [f"{a}" if a else None for a in pipe_area])
        self.p_paths = [p for p, _, _ in pressure_sensors]
        self.p_nodes = [net.node_ids[n] for _, n, _ in pressure_sensors]
        node = np.array([n for _, n, _ in pressure_sensors], dtype=np.int64)
        self.p_offset = np.array([0.0 if absolute else float(net.ambient_pa[n])
                                  for _, n, absolute in pressure_sensors])
        gauge = np.asarray(state.pressure_pa_abs)[node] - net.ambient_pa[node] if len(node) else np.zeros(0)
        low = gauge < LOW_PRESSURE_PA_GAUGE
        self.p_sample_sigma = np.where(low, *SAMPLE_SIGMA_PA)
        self.p_model_sigma = np.where(low, *MODEL_SIGMA_PA)
        self.f_paths = [p for p, _ in flow_sensors]
        self.f_branches = [b for _, b in flow_sensors]
        self.to_kg_s = flow_m3h_to_kg_s
        self.samples: list[np.ndarray] = []
        self.window_start: float | None = None
        self.latest: EstimationState | None = None
        self._start: Any = None  # the last estimate: the next one starts from its factors

    @property
    def n_sensors(self) -> int:
        return len(self.p_paths) + len(self.f_paths)

    def add(self, measured: Mapping[str, float], now_s: float) -> None:
        """One cycle's readings by tag path (gauge or absolute Pa as the sensor reads; flows
        m³/h); missing ones are left out of that cycle."""
        p = np.array([measured.get(path, np.nan) for path in self.p_paths], dtype=np.float64) + self.p_offset
        f = np.array([measured.get(path, np.nan) for path in self.f_paths], dtype=np.float64) * self.to_kg_s
        if self.window_start is None:
            self.window_start = now_s
        self.samples.append(np.concatenate([p, f]))

    def due(self, now_s: float) -> bool:
        """Whether a window is complete (and holds enough cycles for an estimate)."""
        return (self.window_start is not None and now_s - self.window_start >= self.every_s
                and len(self.samples) >= MIN_SAMPLES and self.groups.n_parameters > 0
                and self.n_sensors > 0)

    def take_window(self) -> np.ndarray:
        """The window's samples [cycles, sensors]; the next window starts empty."""
        window = np.stack(self.samples) if self.samples else np.zeros((0, self.n_sensors))
        self.samples, self.window_start = [], None
        return window

    def estimate(self, params: Any, window: np.ndarray, at: dt.datetime) -> EstimationState:
        """Fit the window's means around `params` (runs JAX: call it from a worker thread)."""
        from twin_jax.estimation import Sensors, StateEstimator

        ok = np.isfinite(window)
        count = ok.sum(axis=0)
        mean = np.where(count > 0, np.where(ok, window, 0.0).sum(axis=0) / np.maximum(count, 1), np.nan)
        n = np.maximum(count, 1)
        n_p = len(self.p_paths)
        flows = np.abs(np.nan_to_num(mean[n_p:]))
        p_sigma = np.sqrt(self.p_sample_sigma**2 / n[:n_p] + self.p_model_sigma**2)
        f_sigma = np.sqrt((FLOW_SAMPLE_REL * flows) ** 2 / n[n_p:] + (FLOW_MODEL_REL * flows) ** 2)
        f_sigma = np.maximum(f_sigma, 1e-4)  # a station at rest: its meter still has a floor
        sensors = Sensors(self.p_nodes, p_sigma, self.f_branches, f_sigma,
                          names=[*self.p_paths, *self.f_paths])
        estimator = StateEstimator(self.net, params, self.groups, sensors)
        start = self._start if self._start is not None and len(self._start.names) == \
            self.groups.n_parameters and len(self._start.sensor_names) == len(sensors.labels) else None
        est = estimator.estimate(mean, start=start)
        if est.converged:
            self._start = est
        factors = [EstimatedFactor(name=name, factor=float(f), std_log=float(s), observable=bool(o))
                   for name, f, s, o in zip(est.names, est.factor, est.std_log, est.observable,
                                            strict=True)]
        index = {name: k for k, name in enumerate(est.sensor_names)}
        suspects = [SuspectSensor(path=name, normalized_residual=float(est.normalized_residual[index[name]]),
                                  residual=float(est.residual[index[name]]))
                    for name in est.bad_sensors]
        for s in suspects:
            log.warning("state estimation: sensor %s disagrees with the rest (normalized residual "
                        "%.1f); left out of the fit", s.path, s.normalized_residual)
        self.latest = EstimationState(
            at=at, cycles=int(window.shape[0]), converged=bool(est.converged), message=est.message,
            chi2_per_dof=float(est.chi2 / est.dof) if est.dof > 0 else None, factors=factors,
            bad_sensors=suspects, untestable_sensors=list(est.untestable_sensors),
            missing_sensors=list(est.missing_sensors))
        return self.latest
