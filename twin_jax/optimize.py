"""Pressure management (DSS-1): hourly set-points that keep every consumer supplied at least pressure.

Leakage grows with pressure, so a utility keeps its regulators' outlets as low as the consumers
allow — and that depends on the hour: at night the mains carry little gas and lose little
pressure, so the same minimum at the far end needs a lower set-point than at the evening peak.
`optimize_pressure` takes a compiled network, one demand vector per period (24 hourly vectors
from the forecast, `hourly_demands_kg_s`, or any others), bounds on each regulator's outlet
set-point (by default its outlet pressure level's, `setpoint_bounds`), optional throttling
valves, and the minimum delivery pressure of every consumer (by default the larger of its own
and its zone's level minimum, `delivery_minimum_pa_gauge`), and returns a `PressureSchedule`.

Problem, per period t (the periods are independent; they are solved as one batch):

    minimise    P̄_t(x_t) = Σ_i w_i·p_i(x_t) / Σ_i w_i          (length-weighted mean gauge pressure)
    subject to  p_k(x_t) ≥ p_min,k + margin                     for every constraint point k
                lo ≤ x_t ≤ hi

with x_t the controlled set-points (Pa gauge) and throttle openings, p the twin's steady
solution (`solve_steady` under `jax.vmap` over the periods). **Weights**: each node counts with
half the length of the pipes meeting there (a length-weighted mean: background leakage is
proportional to the length of main under pressure), over the supplied nodes of the *managed
zones* — the outlet zones of the regulators and the zones holding a controlled throttle; a
source's own zone (a transmission offtake at 10 MPa) is not something these controls change.
`weighting="nodes"` weighs every node alike instead.

**Constraint points**: every supplied consumer (p_min its delivery minimum) and the inlet of
every in-service reducing regulator not fed straight from a source (p_min = that regulator's
set-point now + `regulator_min_differential_pa`: a district station must keep regulating, not
pass its inlet through). Thousands of points are aggregated per pressure zone with a soft
minimum, c_z = −τ·log Σ_k exp(−(p_k − p_min,k − margin)/τ) ≥ 0, which lies below the hard
minimum by at most τ·log n (τ = `softmin_pa`, a few Pa): one smooth, conservative constraint per
zone and period. Its gradient, and the objective's, come from the solver's implicit-function
gradients (one transposed sparse solve per zone and period, `jax.jacrev` under `jax.vmap`).

**Optimiser**: SciPy's SLSQP on all periods at once, variables scaled to [0, 1] within their
bounds, starting from the fixed set-points. **Verification**: the schedule is re-simulated and
the hard minimum of p − p_min checked for every point; a period that misses `margin` (beyond
SLSQP's tolerance) has its margin raised by the shortfall and the problem is solved again (at
most `max_rounds` times). Zones that cannot reach their minimum even with every control at its
upper bound (set-points at the top, throttles open) are reported as infeasible and held as close
to it as the bounds allow (their constraint becomes "no worse than at the upper bound").

Everything is SI (Pa gauge, kg/s), float64. Failures are values: `PressureSchedule.status`.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from scipy.optimize import minimize

from twin_jax.demand import hourly_demand_m3h
from twin_jax.network import CompiledNetwork, Parameters
from twin_jax.solve import SolverOptions, Status, solve_steady, supplied_nodes

__all__ = [
    "Controls",
    "OptimizeOptions",
    "OptimizeStatus",
    "PressureProblem",
    "PressureSchedule",
    "delivery_minimum_pa_gauge",
    "hourly_demands_kg_s",
    "optimize_pressure",
    "setpoint_bounds",
    "zone_levels",
]


class OptimizeStatus(enum.IntEnum):
    """How an optimisation ended; `message` says it in words."""

    CONVERGED = 0
    SUBOPTIMAL = 1
    INFEASIBLE = 2
    NOT_VERIFIED = 3
    SOLVER_FAILED = 4

    @property
    def message(self) -> str:
        """A sentence for operators and logs."""
        return {
            OptimizeStatus.CONVERGED: "optimal schedule found and verified by re-simulation",
            OptimizeStatus.SUBOPTIMAL: "the optimiser stopped early (iteration limit or line search); "
            "the schedule is verified but may not be the lowest possible",
            OptimizeStatus.INFEASIBLE: "some zones cannot reach their minimum pressure even with every "
            "control at its upper bound (see `infeasible`)",
            OptimizeStatus.NOT_VERIFIED: "re-simulation finds consumers under minimum + margin after "
            "every tightening round",
            OptimizeStatus.SOLVER_FAILED: "the hydraulic solve did not converge for some period",
        }[self]


@dataclass(frozen=True)
class Controls:
    """What the schedule may move."""

    regulators: Sequence[str] | None = None
    """Regulator ids whose set-points are scheduled; None: every in-service reducing regulator
    (boost links — compressors — and shut regulators are left as they are)."""
    throttles: Sequence[str] = ()
    """Valve ids whose opening is scheduled (throttling valves)."""
    opening_bounds: tuple[float, float] = (0.1, 1.0)
    """Lowest and highest opening of a throttle (0 would cut its segment off: not allowed)."""


@dataclass(frozen=True)
class OptimizeOptions:
    """Modelling and solver choices of `optimize_pressure`."""

    margin_pa: float = 100.0
    """Safety margin over each point's minimum the schedule aims for (Pa)."""
    softmin_pa: float = 5.0
    """Temperature τ of the per-zone soft minimum (Pa): smaller is closer to the hard minimum."""
    weighting: str = "length"
    """"length": each node weighs half the length of its pipes; "nodes": every node alike."""
    regulator_min_differential_pa: float = 10_000.0
    """A regulator's inlet must stay this much above its set-point (Pa)."""
    max_iterations: int = 200
    """SLSQP iterations per round."""
    ftol: float = 1e-8
    """SLSQP's tolerance on the scaled objective (1 = the fixed set-points' mean pressure)."""
    max_rounds: int = 3
    """Optimise–verify rounds (each may raise the margin of periods that missed it)."""
    verify_tolerance_pa: float = 1.0
    """Shortfall below minimum + margin the verification tolerates (SLSQP's own tolerance)."""
    solver: SolverOptions = field(default_factory=SolverOptions)


@dataclass(frozen=True)
class PressureSchedule:
    """A set-point schedule and its predicted effect; arrays are [periods, …], pressures Pa gauge."""

    status: OptimizeStatus
    message: str
    """`status.message` plus the optimiser's own words."""
    regulator_ids: list[str]
    setpoint_pa_gauge: np.ndarray
    """[T, n_regulators] the schedule (regulators not controlled keep their fixed value)."""
    fixed_setpoint_pa_gauge: np.ndarray
    """[n_regulators] the fixed set-points it is compared with."""
    controlled: np.ndarray
    """[n_regulators] bool: the set-point is scheduled."""
    throttle_ids: list[str]
    valve_opening: np.ndarray
    """[T, n_throttles] scheduled openings of the throttles (0…1)."""
    mean_pressure_before_pa: np.ndarray
    """[T] weighted mean gauge pressure of the managed zones with the fixed set-points."""
    mean_pressure_after_pa: np.ndarray
    """[T] the same with the schedule (re-simulated)."""
    reduction_percent: float
    """100·(1 − Σ_t after / Σ_t before): the day's mean pressure reduction."""
    min_margin_before_pa: np.ndarray
    """[T] lowest p − p_min over the constraint points with the fixed set-points (< 0: violated)."""
    min_margin_pa: np.ndarray
    """[T] lowest p − p_min over the constraint points with the schedule (re-simulated)."""
    critical_node: list[list[str | None]]
    """[T][n_regulators] the binding node of each regulator's outlet zone (lowest p − p_min);
    None where the zone holds no constraint point."""
    zone_mean_before_pa: np.ndarray
    """[T, n_zones] weighted mean gauge pressure per pressure zone, fixed set-points (NaN: no weight)."""
    zone_mean_after_pa: np.ndarray
    """[T, n_zones] the same with the schedule."""
    margin_pa: np.ndarray
    """[T] the safety margin finally aimed for (raised where a round missed it)."""
    infeasible: list[tuple[int, int]]
    """(period, zone) pairs that miss their minimum even with every control at its upper bound."""
    weighting: str
    iterations: int
    """SLSQP iterations, all rounds."""
    rounds: int

    @property
    def converged(self) -> bool:
        """The schedule is optimal and verified."""
        return self.status == OptimizeStatus.CONVERGED


# ---------------------------------------------------------------------------------------------
# inputs


def zone_levels(net: CompiledNetwork, level_max_pa_gauge: Mapping[str, float]) -> list[str]:
    """Pressure level code of every zone [n_zones]: the lowest level whose maximum (Pa gauge)
    holds the zone's nominal pressure (its highest source or set-point in the description)."""
    ordered = sorted(level_max_pa_gauge.items(), key=lambda kv: kv[1])
    if not ordered:
        raise ValueError("level_max_pa_gauge is empty")
    out = []
    for nominal in np.asarray(net.zone_nominal_pa_gauge).tolist():
        code = next((c for c, top in ordered if nominal <= top), ordered[-1][0])
        out.append(code)
    return out


def delivery_minimum_pa_gauge(
    net: CompiledNetwork, level_min_pa_gauge: Mapping[str, float], level_max_pa_gauge: Mapping[str, float]
) -> np.ndarray:
    """Minimum delivery pressure of every consumer [n_consumers], Pa gauge.

    The larger of the consumer's own `min_pressure_pa_gauge` and the minimum of its zone's
    pressure level (`level_min_pa_gauge` by level code, e.g. {"low": 1_800.0}: the pressure the
    farthest consumer of a low-pressure district must keep; levels not given add nothing).
    Levels are assigned by `zone_levels(net, level_max_pa_gauge)`.
    """
    levels = zone_levels(net, level_max_pa_gauge)
    zone_min = np.array([float(level_min_pa_gauge.get(c, 0.0)) for c in levels])
    own = np.asarray(net.consumer_min_pa_gauge, dtype=np.float64)
    if not len(own):
        return own
    return np.maximum(own, zone_min[net.zone_of_node[net.consumer_node]])


def setpoint_bounds(net: CompiledNetwork, levels: Mapping[str, tuple[float, float]]) -> np.ndarray:
    """Bounds [n_regulators, 2] (Pa gauge) of each regulator's set-point: its outlet level's
    (min, max) from `levels` (code → (min_pa_gauge, max_pa_gauge), the registry's pressure levels)."""
    codes = zone_levels(net, {c: hi for c, (_, hi) in levels.items()})
    outlet_zone = net.zone_of_node[net.to_node[net.regulators]]
    return np.array([levels[codes[z]] for z in outlet_zone.tolist()], dtype=np.float64).reshape(-1, 2)


def hourly_demands_kg_s(
    categories: Sequence[str],
    annual_volume_m3: np.ndarray,
    temperature_c: float,
    density_kg_m3: float,
    hours: Sequence[int] = tuple(range(24)),
) -> np.ndarray:
    """Forecast demand of every consumer in every hour [len(hours), n], kg/s.

    The SigLinDe profiles of `twin_jax.demand` (as the live twin uses them): each consumer's
    category (`household`, `commercial`, `critical`, `industrial`), its annual volume (m³ at the
    reference state whose density is `density_kg_m3`), the day's mean air temperature (°C) and
    the category's hourly shape.
    """
    cats = np.asarray(categories)
    annual = np.asarray(annual_volume_m3, dtype=np.float64)
    if cats.shape != annual.shape:
        raise ValueError(f"categories {cats.shape} and annual_volume_m3 {annual.shape} differ")
    out = np.zeros((len(hours), len(cats)))
    for k, hour in enumerate(hours):
        for cat in set(cats.tolist()):
            at = cats == cat
            out[k, at] = hourly_demand_m3h(cat, annual[at], temperature_c, hour)
    return out * density_kg_m3 / 3600.0


# ---------------------------------------------------------------------------------------------
# the batched evaluation (jitted; `net` is static, everything else arrays)


class _Data(NamedTuple):
    params: Parameters
    demands: jnp.ndarray
    """[T, n_consumers]"""
    reg_index: jnp.ndarray
    """[n_r] controlled regulators"""
    valve_index: jnp.ndarray
    """[n_v] controlled throttles"""
    node_weight: jnp.ndarray
    """[n_nodes] objective weights (0 outside the managed zones), sum 1"""
    point_node: jnp.ndarray
    """[K] node of each constraint point"""
    point_min: jnp.ndarray
    """[K] fixed part of its minimum (Pa gauge)"""
    point_reg: jnp.ndarray
    """[K] regulator whose set-point adds to the minimum (inlet points), else −1"""
    point_group: jnp.ndarray
    """[K] constraint group (zone) of each point"""
    group_zone: jnp.ndarray
    """[G] zone of each group"""


def _hour(
    net: CompiledNetwork,
    data: _Data,
    x: jnp.ndarray,
    demand: jnp.ndarray,
    margin: jnp.ndarray,
    tau: float,
    options: SolverOptions,
) -> tuple[jnp.ndarray, ...]:
    """One period: weighted mean gauge pressure, soft minima [G], margins [K], gauge [n_nodes], status."""
    n_r = data.reg_index.shape[0]
    params = data.params
    sp = params.setpoint_pa_gauge.at[data.reg_index].set(x[:n_r])
    opening = params.valve_opening.at[data.valve_index].set(x[n_r:])
    prm = params._replace(consumer_demand_kg_s=demand, setpoint_pa_gauge=sp, valve_opening=opening)
    res = solve_steady(net, prm, options)
    p = res.state.pressure_pa_abs - net.ambient_pa
    mean = jnp.sum(data.node_weight * p)
    coupled = jnp.where(data.point_reg >= 0, sp[jnp.maximum(data.point_reg, 0)], 0.0)
    hard = p[data.point_node] - data.point_min - coupled
    m = hard - margin
    g = data.group_zone.shape[0]
    low = jax.lax.stop_gradient(jax.ops.segment_min(m, data.point_group, num_segments=g))
    total = jax.ops.segment_sum(jnp.exp(-(m - low[data.point_group]) / tau), data.point_group, num_segments=g)
    soft = low - tau * jnp.log(total)
    return mean, soft, hard, p, res.status


@eqx.filter_jit
def _evaluate(
    net: CompiledNetwork, data: _Data, x: jnp.ndarray, margin: jnp.ndarray, tau: float, options: SolverOptions
) -> tuple[jnp.ndarray, ...]:
    """All periods: mean [T], soft minima [T, G], hard margins [T, K], gauge [T, n_nodes], status [T]."""
    return jax.vmap(lambda xt, dt, mt: _hour(net, data, xt, dt, mt, tau, options))(x, data.demands, margin)


@eqx.filter_jit
def _jacobian(
    net: CompiledNetwork, data: _Data, x: jnp.ndarray, margin: jnp.ndarray, tau: float, options: SolverOptions
) -> jnp.ndarray:
    """d(mean, soft minima)/dx per period: [T, 1 + G, n_controls] (implicit gradients)."""

    def outputs(xt: jnp.ndarray, dt: jnp.ndarray, mt: jnp.ndarray) -> jnp.ndarray:
        mean, soft, *_ = _hour(net, data, xt, dt, mt, tau, options)
        return jnp.concatenate([mean[None], soft])

    return jax.vmap(jax.jacrev(outputs))(x, data.demands, margin)


# ---------------------------------------------------------------------------------------------
# the problem


class PressureProblem:
    """The pressure-management problem of one network, demand day and set of controls.

    Controls x are [T, n_controls]: the controlled regulators' set-points (Pa gauge) first,
    then the throttles' openings. `objective`, `gradient`, `evaluate` and `jacobian` are the
    pieces `optimize_pressure` hands to SLSQP; they are public for tests and other optimisers.
    """

    def __init__(
        self,
        net: CompiledNetwork,
        params: Parameters,
        demands_kg_s: np.ndarray,
        *,
        min_pressure_pa_gauge: np.ndarray | None = None,
        bounds_pa_gauge: np.ndarray | None = None,
        controls: Controls | None = None,
        options: OptimizeOptions | None = None,
    ) -> None:
        controls = controls or Controls()
        self.options = options = options or OptimizeOptions()
        self.net = net
        demands = np.asarray(demands_kg_s, dtype=np.float64)
        if demands.ndim != 2 or demands.shape[1] != len(net.consumer_ids) or not len(demands):
            raise ValueError(f"demands_kg_s must be [periods, {len(net.consumer_ids)}], got {demands.shape}")
        if not np.all(np.isfinite(demands)):
            raise ValueError("demands_kg_s must be finite")
        if options.weighting not in ("length", "nodes"):
            raise ValueError(f"weighting must be 'length' or 'nodes', got {options.weighting!r}")
        self.periods = len(demands)
        nr_all = net.n_regulators
        in_service = np.asarray(params.regulator_in_service) > 0.0
        if controls.regulators is None:
            reg = [k for k in range(nr_all) if in_service[k] and not net.regulator_boost[k]]
        else:
            index = {r: k for k, r in enumerate(net.regulator_ids)}
            unknown = [r for r in controls.regulators if r not in index]
            if unknown:
                raise ValueError(f"not regulators of the network: {unknown}")
            reg = [index[r] for r in controls.regulators]
        vindex = {v: k for k, v in enumerate(net.valve_ids)}
        unknown = [v for v in controls.throttles if v not in vindex]
        if unknown:
            raise ValueError(f"not valves of the network: {unknown}")
        thr = [vindex[v] for v in controls.throttles]
        self.regulator_index = np.array(reg, dtype=np.int32)
        self.throttle_index = np.array(thr, dtype=np.int32)
        self.fixed_setpoint = np.asarray(params.setpoint_pa_gauge, dtype=np.float64).copy()
        self.fixed_opening = np.asarray(params.valve_opening, dtype=np.float64).copy()

        if bounds_pa_gauge is None:
            lo_r = np.zeros(nr_all)
            hi_r = np.maximum(self.fixed_setpoint, 0.0)
        else:
            b = np.asarray(bounds_pa_gauge, dtype=np.float64)
            if b.shape != (nr_all, 2):
                raise ValueError(f"bounds_pa_gauge must be [{nr_all}, 2], got {b.shape}")
            lo_r, hi_r = b[:, 0], b[:, 1]
        o_lo, o_hi = controls.opening_bounds
        if not 0.0 < o_lo <= o_hi <= 1.0:
            raise ValueError(f"opening_bounds must satisfy 0 < low ≤ high ≤ 1, got {controls.opening_bounds}")
        self.lower = np.concatenate([lo_r[self.regulator_index], np.full(len(thr), o_lo)])
        self.upper = np.concatenate([hi_r[self.regulator_index], np.full(len(thr), o_hi)])
        if np.any(~(self.lower <= self.upper)) or not np.all(np.isfinite(self.lower + self.upper)):
            raise ValueError("every control needs finite bounds with low ≤ high")

        if min_pressure_pa_gauge is None:
            p_min = np.asarray(net.consumer_min_pa_gauge, dtype=np.float64)
        else:
            p_min = np.asarray(min_pressure_pa_gauge, dtype=np.float64)
            if p_min.shape != (len(net.consumer_ids),):
                n_c = len(net.consumer_ids)
                raise ValueError(f"min_pressure_pa_gauge must be [{n_c}], got {p_min.shape}")
        self.consumer_min = p_min

        supplied = np.asarray(supplied_nodes(net, params))
        self._setup_points(params, supplied, in_service)
        self._setup_weights(supplied)
        self.data = _Data(
            params=params,
            demands=jnp.asarray(demands),
            reg_index=jnp.asarray(self.regulator_index),
            valve_index=jnp.asarray(self.throttle_index),
            node_weight=jnp.asarray(self.node_weight),
            point_node=jnp.asarray(self.point_node),
            point_min=jnp.asarray(self.point_min),
            point_reg=jnp.asarray(self.point_reg),
            point_group=jnp.asarray(self.point_group),
            group_zone=jnp.asarray(self.group_zone),
        )

    def _setup_points(self, params: Parameters, supplied: np.ndarray, in_service: np.ndarray) -> None:
        """Constraint points: supplied consumers, and inlets of regulators fed from the network."""
        net = self.net
        nodes = [int(n) for n in net.consumer_node]
        mins = self.consumer_min.tolist()
        regs = [-1] * len(nodes)
        sources = set(net.source_node.tolist())
        reg_in = net.from_node[net.regulators]
        for k in range(net.n_regulators):
            if in_service[k] and not net.regulator_boost[k] and int(reg_in[k]) not in sources:
                nodes.append(int(reg_in[k]))
                mins.append(self.options.regulator_min_differential_pa)
                regs.append(k)
        keep = np.array([bool(supplied[n]) for n in nodes], dtype=bool)
        self.point_node = np.array(nodes, dtype=np.int32)[keep]
        self.point_min = np.array(mins, dtype=np.float64)[keep]
        self.point_reg = np.array(regs, dtype=np.int32)[keep]
        zones = net.zone_of_node[self.point_node]
        self.group_zone, self.point_group = np.unique(zones, return_inverse=True)
        self.point_group = self.point_group.astype(np.int32)
        self.group_zone = self.group_zone.astype(np.int32)
        if not len(self.point_node):
            raise ValueError("no supplied consumer or regulator inlet to keep at a minimum pressure")
        # per-group scale for SLSQP: the pressure the group must hold (at least 1 kPa)
        coupled = np.where(self.point_reg >= 0, self.fixed_setpoint[np.maximum(self.point_reg, 0)], 0.0)
        need = self.point_min + coupled
        self.group_scale = np.maximum(
            np.array([need[self.point_group == g].max() for g in range(len(self.group_zone))]), 1_000.0
        )

    def _setup_weights(self, supplied: np.ndarray) -> None:
        """Objective weights: supplied nodes of the managed zones, by half their pipes' length."""
        net = self.net
        managed = np.zeros(net.n_zones, dtype=bool)
        managed[net.zone_of_node[net.to_node[net.regulators]]] = True
        if len(self.throttle_index):
            v = net.valves
            managed[net.zone_of_node[net.from_node[v][self.throttle_index]]] = True
        if self.options.weighting == "length":
            ends = slice(0, net.n_pipes)
            w = (
                np.bincount(net.from_node[ends], weights=net.pipe_length_m, minlength=net.n_nodes)
                + np.bincount(net.to_node[ends], weights=net.pipe_length_m, minlength=net.n_nodes)
            ) / 2
        else:
            w = np.ones(net.n_nodes)
        w = w * supplied * managed[net.zone_of_node]
        if not w.sum() > 0:
            raise ValueError("no managed zone: the network has no regulator or controlled throttle")
        self.node_weight = w / w.sum()
        self.zone_weight = np.bincount(net.zone_of_node, weights=self.node_weight, minlength=net.n_zones)

    # -- evaluation ----------------------------------------------------------------------------

    @property
    def n_controls(self) -> int:
        """Controls per period: controlled regulators, then throttles."""
        return len(self.lower)

    def fixed_controls(self) -> np.ndarray:
        """x [T, n_controls] of the fixed set-points and openings (possibly outside the bounds)."""
        row = np.concatenate(
            [self.fixed_setpoint[self.regulator_index], self.fixed_opening[self.throttle_index]]
        )
        return np.tile(row, (self.periods, 1))

    def evaluate(self, x: np.ndarray, margin_pa: np.ndarray | float | None = None) -> dict[str, np.ndarray]:
        """Solve every period at controls x [T, n_controls].

        Returns NumPy arrays: `mean` [T] weighted mean gauge pressure (Pa); `soft` [T, G] soft
        minimum of p − p_min − margin per constraint group (Pa); `hard` [T, K] p − p_min per
        point (Pa); `gauge` [T, n_nodes] (Pa); `status` [T] (`Status` ints).
        """
        margin = self._margin(margin_pa)
        out = _evaluate(
            self.net,
            self.data,
            jnp.asarray(x, dtype=jnp.float64),
            jnp.asarray(margin),
            self.options.softmin_pa,
            self.options.solver,
        )
        keys = ("mean", "soft", "hard", "gauge", "status")
        return {k: np.asarray(v) for k, v in zip(keys, out, strict=True)}

    def jacobian(self, x: np.ndarray, margin_pa: np.ndarray | float | None = None) -> np.ndarray:
        """d(mean, soft minima)/dx per period [T, 1 + G, n_controls], Pa per control unit."""
        margin = self._margin(margin_pa)
        return np.asarray(
            _jacobian(
                self.net,
                self.data,
                jnp.asarray(x, dtype=jnp.float64),
                jnp.asarray(margin),
                self.options.softmin_pa,
                self.options.solver,
            )
        )

    def objective(self, x: np.ndarray) -> float:
        """The day's mean of the periods' weighted mean gauge pressure (Pa) at controls x [T, n_controls]."""
        return float(np.mean(self.evaluate(x)["mean"]))

    def gradient(self, x: np.ndarray) -> np.ndarray:
        """d objective / dx [T, n_controls] (Pa per Pa of set-point, Pa per unit opening)."""
        return self.jacobian(x)[:, 0, :] / self.periods

    def _margin(self, margin_pa: np.ndarray | float | None) -> np.ndarray:
        m = self.options.margin_pa if margin_pa is None else margin_pa
        return np.broadcast_to(np.asarray(m, dtype=np.float64), (self.periods,)).copy()

    def group_min(self, hard: np.ndarray) -> np.ndarray:
        """Lowest p − p_min per period and constraint group [T, G] from point margins [T, K]."""
        return np.stack(
            [hard[:, self.point_group == g].min(axis=1) for g in range(len(self.group_zone))], axis=1
        )

    def zone_means(self, gauge: np.ndarray) -> np.ndarray:
        """Weighted mean gauge pressure per zone [T, n_zones] from gauge [T, n_nodes]; NaN: no weight."""
        net = self.net
        sums = np.stack(
            [
                np.bincount(net.zone_of_node, weights=self.node_weight * g, minlength=net.n_zones)
                for g in gauge
            ]
        )
        with np.errstate(invalid="ignore", divide="ignore"):
            has = self.zone_weight > 0
            return np.where(has, sums / np.where(has, self.zone_weight, 1.0), np.nan)

    def critical_nodes(self, hard: np.ndarray) -> list[list[str | None]]:
        """Binding node per period and regulator [T][n_regulators]: lowest p − p_min in its outlet zone."""
        net = self.net
        out_zone = net.zone_of_node[net.to_node[net.regulators]]
        point_zone = net.zone_of_node[self.point_node]
        zone_points = {z: np.flatnonzero(point_zone == z) for z in set(out_zone.tolist())}
        rows: list[list[str | None]] = []
        for h in hard:
            row: list[str | None] = []
            for z in out_zone.tolist():
                pts = zone_points[z]
                row.append(net.node_ids[int(self.point_node[pts[np.argmin(h[pts])]])] if len(pts) else None)
            rows.append(row)
        return rows


# ---------------------------------------------------------------------------------------------
# the optimiser


_FIRST_STEP = 0.25
"""Fraction of its range each variable's first SLSQP step should take (see `_Slsqp`)."""


class _Slsqp:
    """SciPy callbacks over scaled variables v, cached by v.

    v_j = c_j·u_j with u_j ∈ [0, 1] the control within its bounds (x = lower + u·(upper − lower))
    and c_j a diagonal preconditioning: SLSQP starts from a unit Hessian, so its first step is
    −∇f, and a district's set-point — a few kPa against a network mean of tens of kPa — would
    crawl towards its constraint for dozens of iterations. With c_j = √(|∂f/∂u_j| / s) at the
    start, the first step moves every variable by about s of its range, whatever its weight.
    """

    def __init__(
        self,
        problem: PressureProblem,
        margin: np.ndarray,
        floor: np.ndarray,
        reference: float,
        scale: np.ndarray,
    ) -> None:
        self.p = problem
        self.margin = margin
        self.floor = floor  # [T, G] lowest allowed soft minimum (0, or the best reachable)
        self.reference = reference  # objective scale: the fixed set-points' mean pressure
        self.scale = scale  # [T·n] c_j
        self.width = problem.upper - problem.lower  # dx/du (0 for a control pinned by its bounds)
        self._values: tuple[bytes, dict[str, np.ndarray]] | None = None
        self._jac: tuple[bytes, np.ndarray] | None = None

    def x(self, v: np.ndarray) -> np.ndarray:
        u = np.clip(v / self.scale, 0.0, 1.0)
        return self.p.lower + u.reshape(self.p.periods, -1) * self.width

    def values(self, v: np.ndarray) -> dict[str, np.ndarray]:
        key = v.tobytes()
        if self._values is None or self._values[0] != key:
            self._values = (key, self.p.evaluate(self.x(v), self.margin))
        return self._values[1]

    def jac(self, v: np.ndarray) -> np.ndarray:
        """d(mean, soft minima)/dv [T, 1 + G, n]."""
        key = v.tobytes()
        if self._jac is None or self._jac[0] != key:
            per_u = self.p.jacobian(self.x(v), self.margin) * self.width
            self._jac = (key, per_u / self.scale.reshape(self.p.periods, 1, -1))
        return self._jac[1]

    def fun(self, v: np.ndarray) -> float:
        value = float(np.sum(self.values(v)["mean"])) / self.reference
        return value if np.isfinite(value) else 1e3

    def grad(self, v: np.ndarray) -> np.ndarray:
        return np.nan_to_num(self.jac(v)[:, 0, :].ravel() / self.reference)

    def cons(self, v: np.ndarray) -> np.ndarray:
        c = (self.values(v)["soft"] - self.floor) / self.p.group_scale
        return np.nan_to_num(c.ravel(), nan=-1e3)

    def cons_jac(self, v: np.ndarray) -> np.ndarray:
        j = self.jac(v)[:, 1:, :] / self.p.group_scale[None, :, None]  # [T, G, n]
        t, g, n = j.shape
        out = np.zeros((t, g, t, n))
        out[np.arange(t), :, np.arange(t), :] = j
        return np.nan_to_num(out.reshape(t * g, t * n))


def optimize_pressure(
    net: CompiledNetwork,
    params: Parameters,
    demands_kg_s: np.ndarray,
    *,
    min_pressure_pa_gauge: np.ndarray | None = None,
    bounds_pa_gauge: np.ndarray | None = None,
    controls: Controls | None = None,
    options: OptimizeOptions | None = None,
) -> PressureSchedule:
    """An hourly set-point (and throttle) schedule minimising the managed zones' mean pressure.

    Arguments: `net` (compiled); `params` the current state (fixed set-points, openings, source
    pressures, temperature; its demands are replaced); `demands_kg_s` [T, n_consumers] one demand
    vector per period (24 hours: `hourly_demands_kg_s`); `min_pressure_pa_gauge` [n_consumers]
    each consumer's minimum delivery pressure (default: the consumers' own; see
    `delivery_minimum_pa_gauge` for level minima); `bounds_pa_gauge` [n_regulators, 2] lowest
    and highest set-point (default: 0 … the fixed set-point; see `setpoint_bounds` for level
    bounds); `controls` what may move; `options`.
    Returns a `PressureSchedule`: set-points [T, n_regulators] Pa gauge, throttle openings, mean
    pressure per period before/after (re-simulated), the reduction %, the lowest margin per
    period, the binding node per regulator and period, and a status. Raises `ValueError` only
    for malformed arguments (shapes, unknown ids, bounds); numerical trouble is in `status`.
    """
    problem = PressureProblem(
        net,
        params,
        demands_kg_s,
        min_pressure_pa_gauge=min_pressure_pa_gauge,
        bounds_pa_gauge=bounds_pa_gauge,
        controls=controls,
        options=options,
    )
    opt = problem.options
    t_count, n = problem.periods, problem.n_controls
    margin = np.full(t_count, opt.margin_pa)
    fixed = problem.fixed_controls()
    before = problem.evaluate(fixed, margin)
    reference = float(np.sum(before["mean"]))
    if not np.isfinite(reference) or reference <= 0:
        reference = 1.0

    # What the upper bounds reach. A group that misses minimum + margin even there may stay as
    # far below it as it is there (its constraint's floor); one under its minimum is infeasible.
    top = problem.evaluate(np.tile(problem.upper, (t_count, 1)), margin)
    floor = np.minimum(0.0, top["soft"] - opt.verify_tolerance_pa)
    top_hard = problem.group_min(top["hard"])
    starved = np.nonzero(top_hard < 0)
    infeasible = [(int(t), int(problem.group_zone[g])) for t, g in zip(*starved, strict=True)]

    span = np.where(problem.upper > problem.lower, problem.upper - problem.lower, 1.0)
    u = np.clip((fixed - problem.lower) / span, 0.0, 1.0).ravel()
    scale = np.ones(len(u))
    if n:  # preconditioning from the objective's gradient at the start (see `_Slsqp`)
        g = np.abs(_Slsqp(problem, margin, floor, reference, scale).grad(u))
        g = np.maximum(g, 1e-3 * g.max()) if g.max() > 0 else np.ones_like(g)
        scale = np.sqrt(g / _FIRST_STEP)
    cb = _Slsqp(problem, margin, floor, reference, scale)
    iterations, rounds, message, success, hit_limit = 0, 0, "nothing to optimise", True, False
    after = before
    v = u * scale
    while n and rounds < opt.max_rounds:
        rounds += 1
        cb = _Slsqp(problem, margin, floor, reference, scale)
        res = minimize(
            cb.fun,
            v,
            jac=cb.grad,
            method="SLSQP",
            bounds=[(0.0, c) for c in scale.tolist()],
            constraints=[{"type": "ineq", "fun": cb.cons, "jac": cb.cons_jac}],
            options={"maxiter": opt.max_iterations, "ftol": opt.ftol},
        )
        v = np.clip(res.x, 0.0, scale)
        iterations += int(res.nit)
        message, success, hit_limit = str(res.message), bool(res.success), int(res.status) == 9
        # verification: the hard margins of the re-simulated schedule, per period and group
        after = problem.evaluate(cb.x(v), margin)
        short = np.max(margin[:, None] + floor - problem.group_min(after["hard"]), axis=1)
        if (after["status"] != Status.CONVERGED).any() or not (short > opt.verify_tolerance_pa).any():
            break
        margin = np.where(short > opt.verify_tolerance_pa, margin + short + opt.verify_tolerance_pa, margin)

    x = cb.x(v) if n else fixed
    sp = np.tile(problem.fixed_setpoint, (t_count, 1))
    sp[:, problem.regulator_index] = x[:, : len(problem.regulator_index)]
    worst = np.min(after["hard"], axis=1)
    missed = margin[:, None] + floor - problem.group_min(after["hard"]) > opt.verify_tolerance_pa
    if (after["status"] != Status.CONVERGED).any():
        status = OptimizeStatus.SOLVER_FAILED
    elif infeasible:
        status = OptimizeStatus.INFEASIBLE
    elif missed.any():
        status = OptimizeStatus.NOT_VERIFIED
    elif hit_limit or not success:
        status = OptimizeStatus.SUBOPTIMAL
    else:
        status = OptimizeStatus.CONVERGED
    controlled = np.zeros(net.n_regulators, dtype=bool)
    controlled[problem.regulator_index] = True
    return PressureSchedule(
        status=status,
        message=f"{status.message} (SLSQP: {message or 'nothing to optimise'})",
        regulator_ids=list(net.regulator_ids),
        setpoint_pa_gauge=sp,
        fixed_setpoint_pa_gauge=problem.fixed_setpoint.copy(),
        controlled=controlled,
        throttle_ids=[net.valve_ids[k] for k in problem.throttle_index.tolist()],
        valve_opening=x[:, len(problem.regulator_index) :].copy(),
        mean_pressure_before_pa=before["mean"],
        mean_pressure_after_pa=after["mean"],
        reduction_percent=float(100.0 * (1.0 - np.sum(after["mean"]) / np.sum(before["mean"]))),
        min_margin_before_pa=np.min(before["hard"], axis=1),
        min_margin_pa=worst,
        critical_node=problem.critical_nodes(after["hard"]),
        zone_mean_before_pa=problem.zone_means(before["gauge"]),
        zone_mean_after_pa=problem.zone_means(after["gauge"]),
        margin_pa=margin,
        infeasible=infeasible,
        weighting=opt.weighting,
        iterations=iterations,
        rounds=rounds,
    )
