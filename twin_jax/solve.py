"""Steady-state solve: Newton on the branch–node equations, one sparse LU per iteration.

Unknowns are every branch's mass flow ṁ (kg/s) and every non-source node's absolute pressure p
(Pa). Equations: each branch's law F(ṁ, p_from, p_to) = 0 (physics/links.py) and each node's
mass balance G = inflow − outflow − demand = 0. Every branch equation depends on its own flow
only, so a Newton step eliminates Δṁ = −(F + F_p·Δp)/F_ṁ and solves the node system

    A·diag(1/F_ṁ)·F_p · Δp = G − A·(F/F_ṁ)

— the global gradient algorithm of EPANET (Todini–Pilati), here with gas laws. The matrix has
the pattern of the network's graph Laplacian, fixed at compile time: its symbolic LU (KLU, via
klujax) is computed once per network and reused by every iteration, scenario and gradient.

Nodes that no source reaches (behind a closed valve or a shut regulator) carry no demand and
are held at ambient pressure: their rows become identity rows, so the matrix stays regular.

Gradients: the solve is wrapped in a custom VJP (implicit function theorem): the cotangent of
the solution costs one transposed solve with the same matrix, whatever the parameter.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from functools import partial
from typing import NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from twin_jax.linalg import solve_numeric, solve_pattern
from twin_jax.network import CompiledNetwork, Parameters
from twin_jax.physics.gas import GasProperties
from twin_jax.physics.links import (
    REGULATOR_DROOP_PA_PER_KG_S,
    pipe_residual,
    pipe_residual_partials,
    regulator_limit,
    regulator_limit_slope,
    regulator_residual,
    regulator_residual_partials,
)

__all__ = ["Result", "SolverOptions", "State", "Status", "solve_steady", "supplied_nodes"]

_DERIVATIVE_FLOOR = 1e-9
"""|∂F/∂ṁ| below this (a valve with no flow) is raised to it in the Newton matrix only."""
_REGULATOR_MIN_SLOPE = 1e-3
"""Smallest ∂F/∂p_out of a regulator in the Newton matrix (see `_newton_partials`)."""


class Status(enum.IntEnum):
    """How a solve ended; `message` says it in words."""

    CONVERGED = 0
    MAX_ITERATIONS = 1
    NONFINITE = 2

    @property
    def message(self) -> str:
        """A sentence for operators and logs."""
        return {
            Status.CONVERGED: "converged",
            Status.MAX_ITERATIONS: "did not converge within the iteration limit",
            Status.NONFINITE: "diverged (a value became infinite or NaN): check demands against capacity",
        }[self]


@dataclass(frozen=True)
class SolverOptions:
    """Tolerances and limits of the Newton iteration."""

    tol_pressure_pa: float = 1e-6
    """Largest branch-law residual accepted (Pa)."""
    tol_flow_kg_s: float = 1e-9
    """Largest node mass-balance residual accepted (kg/s)."""
    max_iterations: int = 50
    min_pressure_ratio: float = 0.2
    """A step may lower an absolute pressure to at most this fraction of its value (damping)."""


class State(NamedTuple):
    """A network state: shapes [n_nodes] and [n_branches]."""

    pressure_pa_abs: jnp.ndarray
    mass_flow_kg_s: jnp.ndarray
    """Positive from `from_node` to `to_node` (inlet → outlet for regulators)."""
    supplied: jnp.ndarray
    """Bool per node: some source reaches it through open valves and regulators."""


class Result(NamedTuple):
    """Outcome of a solve; failures are values (`status`), never exceptions under jit."""

    state: State
    status: jnp.ndarray
    """A `Status` as an int array."""
    iterations: jnp.ndarray
    residual: jnp.ndarray
    """max(|F| / tol_pressure, |G| / tol_flow) at the end: ≤ 1 when converged."""


# --------------------------------------------------------------------------------------------
# Supply: which nodes a source reaches (valve segments joined by open valves and regulators)


def supplied_nodes(net: CompiledNetwork, params: Parameters) -> jnp.ndarray:
    """Bool [n_nodes]: the node is connected to a source through open valves and regulators."""
    reach = jnp.zeros(net.n_segments, dtype=bool).at[net.source_segments].set(True)
    if net.n_valves or net.n_regulators:
        v_open = params.valve_opening > 0.0
        r_open = params.regulator_in_service > 0.0
        va, vb = net.valve_segments[:, 0], net.valve_segments[:, 1]
        ra, rb = net.regulator_segments[:, 0], net.regulator_segments[:, 1]

        def spread(carry: tuple[jnp.ndarray, jnp.ndarray]) -> tuple[jnp.ndarray, jnp.ndarray]:
            r, _ = carry
            new = r.at[vb].max(r[va] & v_open).at[va].max(r[vb] & v_open).at[rb].max(r[ra] & r_open)
            return new, jnp.any(new != r)

        reach, _ = jax.lax.while_loop(lambda c: c[1], spread, (reach, jnp.bool_(True)))
    return reach[net.segment_of_node]


# --------------------------------------------------------------------------------------------
# Residuals


def _node_demand(net: CompiledNetwork, params: Parameters) -> jnp.ndarray:
    """Withdrawal per node [n_nodes], kg/s."""
    return params.extra_demand_kg_s.at[net.consumer_node].add(params.consumer_demand_kg_s)


def _incidence(net: CompiledNetwork, x: jnp.ndarray) -> jnp.ndarray:
    """A·x: per node, inflow minus outflow of the branch quantity x."""
    return jnp.zeros(net.n_nodes, dtype=x.dtype).at[net.to_node].add(x).at[net.from_node].add(-x)


def _node_residual(net: CompiledNetwork, params: Parameters, m: jnp.ndarray, p: jnp.ndarray,
                   supplied: jnp.ndarray) -> jnp.ndarray:
    """G per free node [n_free]: mass balance (kg/s), or p − p_ambient where unsupplied."""
    g = _incidence(net, m) - _node_demand(net, params) * supplied
    g = jnp.where(supplied, g, p - net.ambient_pa)
    return g[net.free_nodes]


def _linearized(net: CompiledNetwork, params: Parameters, m: jnp.ndarray, p: jnp.ndarray
                ) -> tuple[jnp.ndarray, jnp.ndarray, jnp.ndarray, jnp.ndarray]:
    """F and its exact partials ∂F/∂ṁ, ∂F/∂p_from, ∂F/∂p_to, all [n_branches]."""
    f, f_m, f_pf, f_pt = _branch_laws(net, params, m, p[net.from_node], p[net.to_node], partials=True)
    return f, f_m, f_pf, f_pt


def _branch_laws(net: CompiledNetwork, params: Parameters, m: jnp.ndarray, pf: jnp.ndarray,
                 pt: jnp.ndarray, *, partials: bool) -> tuple[jnp.ndarray, ...]:
    """F per branch [n_branches] from its end pressures (Pa; a closed link's F is its flow),
    and with `partials` also ∂F/∂ṁ, ∂F/∂p_from, ∂F/∂p_to in closed form."""
    gas: GasProperties = net.gas
    nb = net.n_pipes + net.n_valves
    opening = params.valve_opening
    closed_v = opening <= 0.0
    safe_opening = jnp.where(closed_v, 1.0, opening)
    zeta = jnp.concatenate([net.branch_zeta[net.pipes], net.branch_zeta[net.valves] / safe_opening ** 2])
    length = jnp.concatenate([net.pipe_length_m, jnp.zeros(net.n_valves)])
    rough = jnp.concatenate([params.roughness_m, jnp.full(net.n_valves, 1e-5)])
    incompressible = (np.concatenate([net.pipe_incompressible, np.zeros(net.n_valves, dtype=bool)])
                      if net.pipe_incompressible.any() else None)
    rho_ref = jnp.concatenate([net.pipe_reference_density, jnp.ones(net.n_valves)])
    dz = net.elevation_m[net.from_node[:nb]] - net.elevation_m[net.to_node[:nb]]
    dz = dz if np.any(dz != 0.0) else None
    law = pipe_residual_partials if partials else pipe_residual
    out = law(
        m[:nb], pf[:nb], pt[:nb], law=net.physics.friction, gas=gas, temperature_k=params.temperature_k,
        length_m=length, diameter_m=net.branch_diameter_m, roughness_m=rough, zeta=zeta, dz_m=dz,
        incompressible=incompressible, reference_density=rho_ref)
    pv = out if partials else (out,)
    closed = jnp.concatenate([jnp.zeros(net.n_pipes, dtype=bool), closed_v])
    shut_values = (m[:nb], jnp.ones(nb), jnp.zeros(nb), jnp.zeros(nb))
    pv = tuple(jnp.where(closed, shut, x) for x, shut in zip(pv, shut_values, strict=False))
    if not net.n_regulators:
        return pv
    rs = net.regulators
    sp_abs = params.setpoint_pa_gauge + net.ambient_pa[net.to_node[rs]]
    reg_law = regulator_residual_partials if partials else regulator_residual
    out_r = reg_law(m[rs], pf[rs], pt[rs], setpoint_pa_abs=sp_abs, boost=net.regulator_boost)
    rv = out_r if partials else (out_r,)
    nr = net.n_regulators
    in_service = params.regulator_in_service > 0.0
    shut_values = (m[rs], jnp.ones(nr), jnp.zeros(nr), jnp.zeros(nr))
    rv = tuple(jnp.where(in_service, x, shut) for x, shut in zip(rv, shut_values, strict=False))
    return tuple(jnp.concatenate([x, y]) for x, y in zip(pv, rv, strict=True))


def _branch_residual_on_ends(net: CompiledNetwork, params: Parameters, m: jnp.ndarray,
                             pf: jnp.ndarray, pt: jnp.ndarray) -> jnp.ndarray:
    """F per branch [n_branches] from its end pressures: Pa; a closed link's F is its flow."""
    return _branch_laws(net, params, m, pf, pt, partials=False)[0]


def _matrix_values(net: CompiledNetwork, f_m: jnp.ndarray, f_pf: jnp.ndarray, f_pt: jnp.ndarray,
                   supplied: jnp.ndarray) -> jnp.ndarray:
    """Values [nnz] of A·diag(1/F_ṁ)·F_p on the compiled pattern; identity rows where unsupplied."""
    ci, cj = f_pf / f_m, f_pt / f_m
    vals = (jnp.zeros(net.nnz + 1, dtype=f_m.dtype)
            .at[net.slot_ii].add(-ci).at[net.slot_ij].add(-cj)
            .at[net.slot_ji].add(ci).at[net.slot_jj].add(cj))[: net.nnz]
    row_ok = supplied[net.entry_row_node]
    return jnp.where(row_ok, vals, jnp.where(net.entry_is_diag, 1.0, 0.0))


def _safe_derivative(f_m: jnp.ndarray) -> jnp.ndarray:
    small = jnp.abs(f_m) < _DERIVATIVE_FLOOR
    return jnp.where(small, jnp.where(f_m < 0, -_DERIVATIVE_FLOOR, _DERIVATIVE_FLOOR), f_m)


def _newton_partials(net: CompiledNetwork, params: Parameters, m: jnp.ndarray, p: jnp.ndarray,
                     f: jnp.ndarray, f_pf: jnp.ndarray, f_pt: jnp.ndarray
                     ) -> tuple[jnp.ndarray, jnp.ndarray, jnp.ndarray]:
    """Regulator rows as the Newton step uses them: (F, ∂F/∂p_from, ∂F/∂p_to).

    A regulator's residual droop·ṁ − max(0, limit − p_out) has two branches: regulating
    (slope 1 in p_out) and shut (slope 0). A shut regulator that still carries flow at this
    iterate — its zone demands gas, so the outlet must come down to the set-point — is
    linearized on its regulating branch (that branch's residual and slopes), which lands the
    outlet on the set-point in one step; any other shut one keeps a small slope
    `_REGULATOR_MIN_SLOPE`, so that a zone whose regulators are all shut at once does not make
    the matrix singular. Convergence is measured on the exact residuals, so the converged state
    is the same; only the path to it changes.
    """
    if not net.n_regulators:
        return f, f_pf, f_pt
    rs = net.regulators
    slope = f_pt[rs]
    sp_abs = params.setpoint_pa_gauge + net.ambient_pa[net.to_node[rs]]
    p_in, p_out = p[net.from_node[rs]], p[net.to_node[rs]]
    reopen = (m[rs] > 0.0) & (slope < 0.5) & (params.regulator_in_service > 0.0)
    limit = regulator_limit(p_in, setpoint_pa_abs=sp_abs, boost=net.regulator_boost)
    f_reg = jnp.where(reopen, REGULATOR_DROOP_PA_PER_KG_S * m[rs] - (limit - p_out), f[rs])
    slope = jnp.where(reopen, 1.0, jnp.maximum(slope, _REGULATOR_MIN_SLOPE))
    limit_slope = regulator_limit_slope(p_in, setpoint_pa_abs=sp_abs, boost=net.regulator_boost)
    return f.at[rs].set(f_reg), f_pf.at[rs].set(-slope * limit_slope), f_pt.at[rs].set(slope)


def _initial_state(net: CompiledNetwork, params: Parameters, supplied: jnp.ndarray
                   ) -> tuple[jnp.ndarray, jnp.ndarray]:
    """A robust start: flows of the spanning forest from the sources (exact in a tree), and every
    pressure zone at its highest source pressure or regulator set-point."""
    src_abs = params.source_pressure_pa_gauge + net.ambient_pa[net.source_node]
    zone_p = jnp.full(net.n_zones, -jnp.inf).at[net.zone_of_node[net.source_node]].max(src_abs)
    if net.n_regulators:
        out = net.to_node[net.regulators]
        zone_p = zone_p.at[net.zone_of_node[out]].max(params.setpoint_pa_gauge + net.ambient_pa[out])
    p0 = zone_p[net.zone_of_node]
    p0 = jnp.where(jnp.isfinite(p0), p0, net.ambient_pa).at[net.source_node].set(src_abs)
    m0 = jnp.zeros(net.n_branches)
    if net.n_free:
        demand = (_node_demand(net, params) * supplied)[net.free_nodes]
        tree_flow = solve_numeric(net.tree_numeric, net.tree_symbolic, demand)
        is_branch = net.tree_branch >= 0
        m0 = m0.at[jnp.where(is_branch, net.tree_branch, net.n_branches)].set(tree_flow, mode="drop")
    return m0, p0


# --------------------------------------------------------------------------------------------
# Newton


def _newton(net: CompiledNetwork, params: Parameters, options: SolverOptions,
            initial: State | None) -> tuple[jnp.ndarray, jnp.ndarray, jnp.ndarray, jnp.ndarray, jnp.ndarray]:
    supplied = supplied_nodes(net, params)
    m0, p0 = _initial_state(net, params, supplied)
    if initial is not None:
        # Warm start: the previous flows, and pressures shifted per zone so that each zone's
        # highest pressure is its source or set-point now. Previous pressures as they were would
        # leave a zone above a lowered set-point, its regulators shut and the zone floating.
        top_old = jnp.full(net.n_zones, -jnp.inf).at[net.zone_of_node].max(initial.pressure_pa_abs)
        top_new = jnp.full(net.n_zones, -jnp.inf).at[net.zone_of_node].max(p0)
        shift = jnp.where(jnp.isfinite(top_old) & jnp.isfinite(top_new), top_new - top_old, 0.0)
        p_warm = initial.pressure_pa_abs + shift[net.zone_of_node]
        p0 = jnp.where(supplied, p_warm, p0).at[net.source_node].set(p0[net.source_node])
        m0 = initial.mass_flow_kg_s
    scale = jnp.concatenate([
        jnp.full(net.n_branches, 1.0 / options.tol_pressure_pa),
        jnp.full(net.n_free, 1.0 / options.tol_flow_kg_s)])

    def evaluate(m: jnp.ndarray, p: jnp.ndarray) -> tuple:
        """Residuals, partials and the convergence measure at (ṁ, p)."""
        f, f_m, f_pf, f_pt = _linearized(net, params, m, p)
        g = _node_residual(net, params, m, p, supplied)
        res = jnp.max(jnp.abs(jnp.concatenate([f, g])) * scale, initial=0.0)
        f_step, f_pf, f_pt = _newton_partials(net, params, m, p, f, f_pf, f_pt)
        return f_step, _safe_derivative(f_m), f_pf, f_pt, g, res

    def step(carry: tuple) -> tuple:
        m, p, it, (f, f_m, f_pf, f_pt, g, _) = carry
        vals = _matrix_values(net, f_m, f_pf, f_pt, supplied)
        rhs = g - _incidence(net, f / f_m)[net.free_nodes]
        rhs = jnp.where(supplied[net.free_nodes], rhs, -g)
        dp_free = solve_pattern(net.matrix_rows, net.matrix_cols, vals, rhs, net.symbolic)
        dp = jnp.zeros(net.n_nodes).at[net.free_nodes].set(dp_free)
        dm = -(f + f_pf * dp[net.from_node] + f_pt * dp[net.to_node]) / f_m
        # Damping: no absolute pressure may fall below min_pressure_ratio of its value.
        floor = (1.0 - options.min_pressure_ratio) * p
        ratio = jnp.where(dp < 0, floor / jnp.maximum(-dp, 1e-300), jnp.inf)
        alpha = jnp.minimum(1.0, jnp.min(ratio, initial=jnp.inf))
        m_new, p_new = m + alpha * dm, p + alpha * dp
        return m_new, p_new, it + 1, evaluate(m_new, p_new)

    def keep_going(carry: tuple) -> jnp.ndarray:
        _, _, it, ev = carry
        res = ev[-1]
        return (res > 1.0) & (it < options.max_iterations) & jnp.isfinite(res)

    m, p, it, ev = jax.lax.while_loop(keep_going, step, (m0, p0, jnp.int32(0), evaluate(m0, p0)))
    res = ev[-1]
    status = jnp.where(~jnp.isfinite(res), Status.NONFINITE,
                       jnp.where(res <= 1.0, Status.CONVERGED, Status.MAX_ITERATIONS))
    return m, p, supplied, it, jnp.stack([res, status.astype(res.dtype)])


# --------------------------------------------------------------------------------------------
# Implicit differentiation


@partial(jax.custom_vjp, nondiff_argnums=(0,))
def _implicit(net: CompiledNetwork, params: Parameters, m: jnp.ndarray,
              p: jnp.ndarray) -> tuple[jnp.ndarray, jnp.ndarray]:
    """Identity on the converged (ṁ, p); its VJP is the implicit-function-theorem gradient."""
    return m, p


def _implicit_fwd(net: CompiledNetwork, params: Parameters, m: jnp.ndarray,
                  p: jnp.ndarray) -> tuple[tuple[jnp.ndarray, jnp.ndarray], tuple]:
    return (m, p), (params, m, p)


def _implicit_bwd(net: CompiledNetwork, saved: tuple, cotangent: tuple) -> tuple:
    params, m, p = saved
    m_bar, p_bar = cotangent
    supplied = supplied_nodes(net, params)
    f, f_m, f_pf, f_pt = _linearized(net, params, m, p)
    f_m = _safe_derivative(f_m)
    _, f_pf, f_pt = _newton_partials(net, params, m, p, f, f_pf, f_pt)
    vals = _matrix_values(net, f_m, f_pf, f_pt, supplied)
    # J = [[F_ṁ, F_p], [G_ṁ, G_p]] over (ṁ, p_free); Jᵀλ = (ṁ̄, p̄) by the Schur complement:
    # Kᵀλ_G = F_pᵀ·F_ṁ⁻¹·ṁ̄ − p̄ with K = G_ṁ·F_ṁ⁻¹·F_p − G_p. The Newton matrix M is K with
    # the (identity) rows of unsupplied nodes negated, so λ_G is Mᵀ's solution with those
    # entries negated back.
    w = m_bar / f_m
    fp_t_w = jnp.zeros(net.n_nodes).at[net.from_node].add(f_pf * w).at[net.to_node].add(f_pt * w)
    rhs = (fp_t_w - p_bar)[net.free_nodes]
    y = solve_pattern(net.transposed_rows, net.transposed_cols, vals[net.transpose_order], rhs,
                      net.transposed_symbolic)
    sup_free = supplied[net.free_nodes]
    lam_g = jnp.where(sup_free, y, -y)
    lam_bal = jnp.zeros(net.n_nodes).at[net.free_nodes].set(jnp.where(sup_free, lam_g, 0.0))
    lam_f = (m_bar - (lam_bal[net.to_node] - lam_bal[net.from_node])) / f_m

    def residuals(prm: Parameters) -> tuple[jnp.ndarray, jnp.ndarray]:
        src_abs = prm.source_pressure_pa_gauge + net.ambient_pa[net.source_node]
        pe = p.at[net.source_node].set(src_abs)
        f = _branch_residual_on_ends(net, prm, m, pe[net.from_node], pe[net.to_node])
        return f, _node_residual(net, prm, m, pe, supplied)

    _, vjp = jax.vjp(residuals, params)
    (params_bar,) = vjp((-lam_f, -lam_g))
    return params_bar, jnp.zeros_like(m), jnp.zeros_like(p)


_implicit.defvjp(_implicit_fwd, _implicit_bwd)


@eqx.filter_jit
def solve_steady(net: CompiledNetwork, params: Parameters, options: SolverOptions = SolverOptions(),
                 initial: State | None = None) -> Result:
    """Steady state of `net` under `params`.

    Arguments: `net` from `compile_network` (static); `params` (pytree of arrays, see
    `Parameters`); `options`; `initial` a previous state to start from (warm start).
    Returns `Result`: state (absolute pressures Pa [n_nodes], mass flows kg/s [n_branches],
    supplied mask), status, iterations, residual. Differentiable in `params` (implicit
    function theorem), batchable with `jax.vmap` over `params`.
    """
    frozen = jax.lax.stop_gradient(params)
    init = None if initial is None else jax.lax.stop_gradient(initial)
    m, p, supplied, it, info = _newton(net, frozen, options, init)
    m, p = _implicit(net, params, m, p)
    src_abs = params.source_pressure_pa_gauge + net.ambient_pa[net.source_node]
    p = p.at[net.source_node].set(src_abs)
    return Result(State(p, m, supplied), info[1].astype(jnp.int32), it, info[0])
