"""What-if scenarios (TWIN-2): change valves, set-points, demands, add bursts and consumers; compare.

A `ScenarioSpec` is applied to a network's current parameters (`apply`), solved, and compared
with a baseline solve (`run_scenario`): pressures and flows, consumers below their minimum
pressure, consumers left without gas, flow reversals, the change of every node's pressure.

Bursts: a hole of `hole_diameter_m` at `position` (0 = from-node … 1 = to-node) along a pipe
leaks gas at the orifice rate for the local pressure — critical (choked) flow above a pressure
ratio of about 1.85 to the atmosphere, as in every medium-pressure burst; subsonic
`Cd·A·√(2ρΔp)` below it. The network is not re-compiled for a burst: the leak is withdrawn at
the pipe end nearer to the hole, and because the rate depends on the pressure it causes, the
two are found by a damped fixed-point iteration of solves (a few, each warm-started).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import jax.numpy as jnp
import numpy as np

from twin_jax.network import CompiledNetwork, Parameters
from twin_jax.solve import Result, SolverOptions, Status, solve_steady

__all__ = ["Burst", "NewConsumer", "ScenarioOutcome", "ScenarioSpec", "apply", "burst_leak_kg_s",
           "run_scenario"]

HEAT_CAPACITY_RATIO = 1.31  # natural gas, κ = cp/cv
DISCHARGE_COEFFICIENT = 0.62  # a sharp-edged hole
_REVERSAL_MIN_KG_S = 1e-4  # flows smaller than this have no direction worth reporting


@dataclass(frozen=True)
class Burst:
    """A hole in a pipe."""

    pipe_id: str
    hole_diameter_m: float
    position: float = 0.5
    discharge_coefficient: float = DISCHARGE_COEFFICIENT


@dataclass(frozen=True)
class NewConsumer:
    """A consumer not yet in the network, connected at an existing node."""

    id: str
    node_id: str
    demand_kg_s: float
    min_pressure_pa_gauge: float = 0.0
    critical: bool = False


@dataclass(frozen=True)
class ScenarioSpec:
    """Changes against the current state; everything not mentioned stays as it is."""

    valve_openings: Mapping[str, float] = field(default_factory=dict)
    """Valve id → opening 0 (closed) … 1 (open)."""
    regulator_setpoints_pa_gauge: Mapping[str, float] = field(default_factory=dict)
    regulators_shut: Sequence[str] = ()
    demand_factor: float = 1.0
    """Multiplies every consumer's demand (after `consumer_demand_kg_s`)."""
    consumer_demand_kg_s: Mapping[str, float] = field(default_factory=dict)
    """Consumer id → demand, e.g. every consumer at a design temperature."""
    bursts: Sequence[Burst] = ()
    new_consumers: Sequence[NewConsumer] = ()


@dataclass(frozen=True)
class ScenarioOutcome:
    """A solved scenario next to its baseline; pressures gauge (Pa), flows kg/s."""

    status: Status
    iterations: int
    pressure_pa_gauge: dict[str, float]
    mass_flow_kg_s: dict[str, float]
    pressure_change_pa: dict[str, float]
    """Scenario − baseline per node."""
    below_minimum: list[tuple[str, float, float, bool]]
    """(consumer id, pressure, minimum, critical) of supplied consumers under their minimum."""
    unsupplied: list[str]
    """Consumers no source reaches."""
    critical_unsupplied: list[str]
    reversals: list[str]
    """Branches whose flow changed direction."""
    burst_leaks_kg_s: dict[str, float]
    min_pressure_pa_gauge: float
    """Lowest pressure at a supplied node."""


def _check(net: CompiledNetwork, spec: ScenarioSpec) -> None:
    problems = []
    valves, regs = set(net.valve_ids), set(net.regulator_ids)
    problems += [f"{v}: not a valve of the network" for v in spec.valve_openings if v not in valves]
    problems += [f"{v}: opening must be within 0…1" for v, o in spec.valve_openings.items()
                 if not 0.0 <= o <= 1.0]
    problems += [f"{r}: not a regulator of the network"
                 for r in [*spec.regulator_setpoints_pa_gauge, *spec.regulators_shut] if r not in regs]
    consumers = set(net.consumer_ids)
    problems += [f"{c}: not a consumer of the network"
                 for c in spec.consumer_demand_kg_s if c not in consumers]
    pipes = set(net.pipe_ids)
    for b in spec.bursts:
        if b.pipe_id not in pipes:
            problems.append(f"{b.pipe_id}: not a pipe of the network")
        if not (0.0 <= b.position <= 1.0) or not b.hole_diameter_m > 0:
            problems.append(f"{b.pipe_id}: burst position must be within 0…1 and the hole larger than 0")
    for c in spec.new_consumers:
        if c.node_id not in net.node_index:
            problems.append(f"{c.id}: node {c.node_id!r} is not in the network")
    if not spec.demand_factor >= 0:
        problems.append("demand_factor must be ≥ 0")
    if problems:
        raise ValueError("; ".join(problems))


def apply(net: CompiledNetwork, params: Parameters, spec: ScenarioSpec) -> Parameters:
    """`params` with the spec's changes (bursts excluded: they need the pressures)."""
    _check(net, spec)
    opening = np.asarray(params.valve_opening, dtype=np.float64).copy()
    vi = {v: k for k, v in enumerate(net.valve_ids)}
    for v, o in spec.valve_openings.items():
        opening[vi[v]] = o
    ri = {r: k for k, r in enumerate(net.regulator_ids)}
    sp = np.asarray(params.setpoint_pa_gauge, dtype=np.float64).copy()
    for r, value in spec.regulator_setpoints_pa_gauge.items():
        sp[ri[r]] = value
    in_service = np.asarray(params.regulator_in_service, dtype=np.float64).copy()
    for r in spec.regulators_shut:
        in_service[ri[r]] = 0.0
    demand = np.asarray(params.consumer_demand_kg_s, dtype=np.float64).copy()
    ci = {c: k for k, c in enumerate(net.consumer_ids)}
    for c, value in spec.consumer_demand_kg_s.items():
        demand[ci[c]] = value
    extra = np.asarray(params.extra_demand_kg_s, dtype=np.float64).copy()
    for c in spec.new_consumers:
        extra[net.node_index[c.node_id]] += c.demand_kg_s
    return params._replace(
        valve_opening=jnp.asarray(opening), setpoint_pa_gauge=jnp.asarray(sp),
        regulator_in_service=jnp.asarray(in_service),
        consumer_demand_kg_s=jnp.asarray(demand * spec.demand_factor),
        extra_demand_kg_s=jnp.asarray(extra))


def burst_leak_kg_s(net: CompiledNetwork, burst: Burst, p_abs_pa: float, p_ambient_pa: float,
                    temperature_k: float) -> float:
    """Gas escaping through the hole at absolute pressure `p_abs_pa` (kg/s); 0 without overpressure."""
    if p_abs_pa <= p_ambient_pa:
        return 0.0
    gas = net.gas
    k = HEAT_CAPACITY_RATIO
    area = np.pi * burst.hole_diameter_m ** 2 / 4.0
    z = float(gas.compressibility(jnp.asarray(p_abs_pa)))
    r_specific = gas.standard_pressure_pa / (gas.density_std_kg_m3 * gas.standard_temperature_k)
    critical_ratio = ((k + 1) / 2) ** (k / (k - 1))
    if p_abs_pa / p_ambient_pa >= critical_ratio:  # choked
        return float(burst.discharge_coefficient * area * p_abs_pa
                     * np.sqrt(k / (z * r_specific * temperature_k))
                     * (2 / (k + 1)) ** ((k + 1) / (2 * (k - 1))))
    rho = float(gas.density_kg_m3(jnp.asarray(p_abs_pa), temperature_k))
    return float(burst.discharge_coefficient * area * np.sqrt(2 * rho * (p_abs_pa - p_ambient_pa)))


def _node_of(net: CompiledNetwork, burst: Burst) -> int:
    k = net.pipe_ids.index(burst.pipe_id)
    return int(net.from_node[k] if burst.position < 0.5 else net.to_node[k])


def run_scenario(net: CompiledNetwork, params: Parameters, spec: ScenarioSpec, *,
                 baseline: Result | None = None, options: SolverOptions | None = None,
                 leak_iterations: int = 12) -> ScenarioOutcome:
    """Solve `spec` against `params` (the current state) and compare with the baseline."""
    options = options or SolverOptions()
    if baseline is None:
        baseline = solve_steady(net, params, options)
    scen = apply(net, params, spec)
    result = solve_steady(net, scen, options, initial=baseline.state)
    leaks: dict[str, float] = {}
    if spec.bursts:
        nodes = [_node_of(net, b) for b in spec.bursts]
        rates = np.zeros(len(spec.bursts))
        base_extra = np.asarray(scen.extra_demand_kg_s)
        temperature = float(scen.temperature_k)
        for _ in range(leak_iterations):
            p = np.asarray(result.state.pressure_pa_abs)
            supplied = np.asarray(result.state.supplied)
            target = np.array([burst_leak_kg_s(net, b, float(p[n]), float(net.ambient_pa[n]), temperature)
                               if supplied[n] else 0.0 for b, n in zip(spec.bursts, nodes, strict=True)])
            new = 0.5 * rates + 0.5 * target if rates.any() else target
            done = np.allclose(new, rates, rtol=1e-4, atol=1e-7)
            rates = new
            extra = base_extra.copy()
            np.add.at(extra, nodes, rates)
            start = result.state if int(result.status) == Status.CONVERGED else baseline.state
            result = solve_steady(net, scen._replace(extra_demand_kg_s=jnp.asarray(extra)), options,
                                  initial=start)
            if done:
                break
        leaks = {b.pipe_id: float(r) for b, r in zip(spec.bursts, rates, strict=True)}
    return _compare(net, spec, baseline, result, leaks)


def _compare(net: CompiledNetwork, spec: ScenarioSpec, baseline: Result, result: Result,
             leaks: dict[str, float]) -> ScenarioOutcome:
    p = np.asarray(result.state.pressure_pa_abs) - net.ambient_pa
    p0 = np.asarray(baseline.state.pressure_pa_abs) - net.ambient_pa
    supplied = np.asarray(result.state.supplied)
    m = np.asarray(result.state.mass_flow_kg_s)
    m0 = np.asarray(baseline.state.mass_flow_kg_s)
    below: list[tuple[str, float, float, bool]] = []
    unsupplied: list[str] = []
    critical_unsupplied: list[str] = []
    consumers: list[Any] = [(cid, int(net.consumer_node[k]), float(net.consumer_min_pa_gauge[k]),
                             bool(net.consumer_critical[k])) for k, cid in enumerate(net.consumer_ids)]
    consumers += [(c.id, net.node_index[c.node_id], c.min_pressure_pa_gauge, c.critical)
                  for c in spec.new_consumers]
    for cid, n, pmin, critical in consumers:
        if not supplied[n]:
            unsupplied.append(cid)
            if critical:
                critical_unsupplied.append(cid)
        elif p[n] < pmin:
            below.append((cid, float(p[n]), pmin, critical))
    flowing = (np.abs(m) > _REVERSAL_MIN_KG_S) & (np.abs(m0) > _REVERSAL_MIN_KG_S)
    reversed_ = np.flatnonzero(flowing & (np.sign(m) != np.sign(m0)))
    ok = supplied.any()
    return ScenarioOutcome(
        status=Status(int(result.status)), iterations=int(result.iterations),
        pressure_pa_gauge=dict(zip(net.node_ids, p.tolist(), strict=True)),
        mass_flow_kg_s=dict(zip(net.branch_ids, m.tolist(), strict=True)),
        pressure_change_pa=dict(zip(net.node_ids, (p - p0).tolist(), strict=True)),
        below_minimum=below, unsupplied=sorted(unsupplied), critical_unsupplied=sorted(critical_unsupplied),
        reversals=[net.branch_ids[k] for k in reversed_.tolist()], burst_leaks_kg_s=leaks,
        min_pressure_pa_gauge=float(p[supplied].min()) if ok else float("nan"))
