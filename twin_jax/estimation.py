"""State estimation (TWIN-3): demand scales and roughness factors fitted to pressure and flow sensors.

The registry's roughness and the load profiles' demands are uncertain; sensors (pressure gauges,
station flow meters) see their effect. This module fits a multiplicative factor per *group* —
demand scale per district and/or consumer category (a group index per consumer), roughness
factor per pipe group (a group index per pipe) — by weighted least squares:

    minimise  Σᵢ ((yᵢ − hᵢ(θ)) / σᵢ)²  +  Σₖ (θₖ / σ_prior)²,     factor = exp(θ)

with `h` the steady solve (`solve_steady`) read at the sensors, `σᵢ` each sensor's noise (of the
value handed in: for a window mean of n samples that is σ_sample/√n), and a weak prior on the
log-factors centred on the registry value (factor 1). Log space keeps every factor positive and
makes a step of ±0.1 mean ±10 % whatever the parameter.

**Solver: Levenberg–Marquardt, hand-written, one `lax.while_loop` under jit.** optimistix is not
installed in this project, and the loop is short (a damped Gauss–Newton step on a few dozen
unknowns, `jnp.linalg.solve`); writing it keeps the whole fit one traced program whose every
iteration is a warm-started steady solve plus one Jacobian. The Jacobian ∂h/∂θ comes from
reverse mode through the solve's implicit-function-theorem gradient (`jax.vjp`, batched over
the sensors with `vmap`): klujax batches the cotangents as right-hand sides of *one*
factorization, so a Jacobian of 1,000 sensors costs one LU and 1,000 triangular solves. (Forward
mode, cheaper for few parameters, is not available: the solve is a `custom_vjp`.)

**Uncertainty and observability.** The posterior covariance of θ is C = (JᵀWJ + P⁻¹)⁻¹ (J the
Jacobian at the estimate, W = diag(1/σ²), P the prior covariance); `std_log` = √diag C is the
relative standard deviation of the factor. A parameter is reported `observable` when the data
fix it to ±10 % at three standard deviations: `std_log ≤ observable_std_log` (default 0.1/3).
Why this criterion and not the rank of J: a rank test says whether *some* combination of
parameters is seen, not whether *this* parameter is; the marginal posterior variance with a weak
prior (σ_prior = 1, a factor e — far wider than any real error) answers the per-parameter
question, includes correlations (a district's demand and its pipes' roughness that trade off
against each other are both reported unobservable), degrades smoothly from "no sensor sees it"
(J column zero, posterior = prior, `information` 0) to "weakly seen" (hydraulically smooth PE
pipes: roughness barely changes λ), and keeps the normal equations regular in every case, so an
unobservable parameter stays at its prior value instead of wandering. `information` = 1 −
posterior/prior variance is reported too (0: the data say nothing; → 1: the data decide).

**Bad data: the largest normalized residual test.** With R = diag(σ²) and H = ∂h/∂θ, the
residual covariance is Ω = R − H·C·Hᵀ (C including the prior), and rᴺᵢ = rᵢ/√Ωᵢᵢ is N(0, 1)
for a good sensor. The sensor with the largest |rᴺ| above `bad_data_threshold` is removed and
the fit repeated (warm-started), until none exceeds it or `max_bad_data` are removed. A bias b on
sensor i gives E[rᴺᵢ] = (b/σᵢ)·√(1 − hᵢᵢ), hᵢᵢ its leverage: the test can never see a bias
smaller than the threshold in units of the σ of the value handed in, however redundant the
sensors — a 3σ bias on a single snapshot is flagged about half the time at best. What makes a
bias of 3σ (the sensor's per-sample noise) detectable is that a bias persists and noise does
not: over a window of n samples the mean's σ is σ/√n and the bias is 3√n of those (23 for an
hour of minute samples). Sensors with 1 − hᵢᵢ < `min_redundancy` are *critical*: the estimate
follows them whatever they read, so their errors cannot be seen; they are listed as untestable.
`min_detectable_bias` gives, per sensor, the bias whose expected rᴺ equals the threshold.

SI units inside: pressures absolute Pa (`pressure_pa_abs`), mass flows kg/s. Failures are
values: a solve that does not converge at the start is reported in `Estimate.message`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from twin_jax.network import CompiledNetwork, Parameters
from twin_jax.solve import SolverOptions, State, Status, solve_steady

__all__ = ["Estimate", "EstimationOptions", "ParameterGroups", "Sensors", "StateEstimator"]


@dataclass(frozen=True)
class ParameterGroups:
    """Which factors are estimated: a group per consumer (demand) and per pipe (roughness).

    `demand_group` [n_consumers] and `roughness_group` [n_pipes] are indices into
    `demand_names` and `roughness_names`; −1 keeps that consumer's demand or pipe's roughness
    at its given value.
    """

    demand_group: np.ndarray
    roughness_group: np.ndarray
    demand_names: tuple[str, ...]
    roughness_names: tuple[str, ...]

    @classmethod
    def from_labels(
        cls, demand_labels: Sequence[str | None], roughness_labels: Sequence[str | None]
    ) -> ParameterGroups:
        """Groups from a label per consumer and per pipe (None: not estimated), named by label."""

        def index(labels: Sequence[str | None]) -> tuple[np.ndarray, tuple[str, ...]]:
            names = tuple(sorted({str(x) for x in labels if x is not None}))
            at = {n: k for k, n in enumerate(names)}
            return np.array([at[str(x)] if x is not None else -1 for x in labels], dtype=np.int32), names

        dg, dn = index(demand_labels)
        rg, rn = index(roughness_labels)
        return cls(dg, rg, dn, rn)

    @property
    def names(self) -> tuple[str, ...]:
        """Parameter names in estimate order: `demand:<group>` then `roughness:<group>`."""
        return tuple(f"demand:{n}" for n in self.demand_names) + tuple(
            f"roughness:{n}" for n in self.roughness_names
        )

    @property
    def n_parameters(self) -> int:
        """Number of estimated factors."""
        return len(self.demand_names) + len(self.roughness_names)

    def slots(self) -> tuple[np.ndarray, np.ndarray]:
        """Index into the extended log-factor vector [θ, 0] per consumer and per pipe."""
        n = self.n_parameters
        nd = len(self.demand_names)
        d = np.where(self.demand_group >= 0, self.demand_group, n).astype(np.int32)
        r = np.where(self.roughness_group >= 0, self.roughness_group + nd, n).astype(np.int32)
        return d, r


@dataclass(frozen=True)
class Sensors:
    """Where the measurements are and their noise; measurement order is pressures, then flows.

    `pressure_sigma_pa` and `flow_sigma_kg_s` are the standard deviations of the values that will
    be handed to `estimate` (a window mean's σ is the per-sample σ / √samples). `names` label the
    sensors in reports (default `p:<node id>`, `m:<branch id>`).
    """

    pressure_nodes: Sequence[str] = ()
    pressure_sigma_pa: Sequence[float] = ()
    flow_branches: Sequence[str] = ()
    """Branch ids (pipes, valves, regulators); flow positive from `from_node` to `to_node`."""
    flow_sigma_kg_s: Sequence[float] = ()
    names: Sequence[str] | None = None

    @property
    def labels(self) -> tuple[str, ...]:
        """Sensor names in measurement order."""
        if self.names is not None:
            return tuple(self.names)
        return tuple(f"p:{n}" for n in self.pressure_nodes) + tuple(f"m:{b}" for b in self.flow_branches)

    @property
    def sigma(self) -> np.ndarray:
        """σ per measurement [n_sensors] (Pa or kg/s)."""
        return np.concatenate(
            [
                np.asarray(self.pressure_sigma_pa, dtype=np.float64),
                np.asarray(self.flow_sigma_kg_s, dtype=np.float64),
            ]
        )


@dataclass(frozen=True)
class EstimationOptions:
    """Prior, tolerances and the bad-data test."""

    prior_sigma_log: float = 1.0
    """σ of the weak prior on each log-factor (1.0: a factor e either way)."""
    observable_std_log: float = 0.1 / 3.0
    """A parameter is observable when its posterior σ (log) is at most this: ±10 % at 3σ."""
    max_iterations: int = 40
    """Levenberg–Marquardt iterations per fit."""
    step_tol_log: float = 1e-6
    """Converged when an accepted step changes no log-factor by more than this …"""
    cost_rtol: float = 1e-10
    """… or lowers the cost by less than this fraction."""
    max_step_log: float = 0.5
    """Largest change of a log-factor in one step (keeps trial solves in a sane range)."""
    initial_damping: float = 1e-3
    bad_data_threshold: float = 4.0
    """|normalized residual| above which the worst sensor is removed (4: with 1,000 good
    sensors, about 6 % of estimations would flag one wrongly; 3 would flag ~2.7 per estimation)."""
    max_bad_data: int = 5
    """At most this many sensors are removed per estimation."""
    min_redundancy: float = 0.01
    """A sensor with 1 − leverage below this is critical: its residual cannot be tested."""
    solver: SolverOptions = field(default_factory=SolverOptions)


@dataclass(frozen=True)
class Estimate:
    """Outcome of `StateEstimator.estimate`; shapes [n_parameters] or [n_sensors]."""

    names: tuple[str, ...]
    """Parameter names (`demand:<group>`, `roughness:<group>`)."""
    factor: np.ndarray
    """Estimated multiplier on the given demand / roughness of each group."""
    log_factor: np.ndarray
    std_log: np.ndarray
    """Posterior σ of log(factor): the factor's relative standard deviation."""
    observable: np.ndarray
    """Bool: the data fix the factor (std_log ≤ options.observable_std_log)."""
    information: np.ndarray
    """1 − posterior/prior variance: 0 the sensors say nothing, → 1 they decide."""
    converged: bool
    iterations: int
    """Levenberg–Marquardt iterations of the last fit (all fits: `total_iterations`)."""
    total_iterations: int
    chi2: float
    """Σ (residual/σ)² over the sensors used."""
    dof: float
    """Sensors used minus the parameters' effective number (Σ leverage)."""
    message: str
    sensor_names: tuple[str, ...]
    predicted: np.ndarray
    """Modelled value at each sensor with the estimate (Pa absolute / kg/s)."""
    residual: np.ndarray
    """Measured − modelled (NaN where missing)."""
    normalized_residual: np.ndarray
    """rᴺ = r/√Ωᵢᵢ of the last fit; for removed sensors r/√(R + HCHᵀ) (out of sample); NaN
    where missing or untestable."""
    redundancy: np.ndarray
    """1 − leverage of each sensor in the last fit (0: critical, 1: does not affect the estimate);
    NaN for sensors not used (missing or removed)."""
    min_detectable_bias: np.ndarray
    """Bias whose expected |rᴺ| equals the threshold (Pa or kg/s); inf where untestable."""
    bad_sensors: tuple[str, ...]
    """Sensors flagged as bad data, in the order removed."""
    untestable_sensors: tuple[str, ...]
    missing_sensors: tuple[str, ...]
    parameters: Parameters
    """The given parameters with the estimated factors applied (what the twin should solve)."""
    state: State

    def factors(self) -> dict[str, float]:
        """Parameter name → estimated factor."""
        return dict(zip(self.names, self.factor.tolist(), strict=True))


class _Fit(NamedTuple):
    theta: jnp.ndarray
    predicted: jnp.ndarray
    jac_all: jnp.ndarray
    """Weighted Jacobian ∂h/∂θ / σ [n_sensors, n_params] of every sensor, unused ones too."""
    state: State
    iterations: jnp.ndarray
    converged: jnp.ndarray
    ok: jnp.ndarray
    """The solve at the start converged (else nothing was fitted)."""


def _apply(
    base: Parameters, theta: jnp.ndarray, demand_slot: jnp.ndarray, rough_slot: jnp.ndarray
) -> Parameters:
    ext = jnp.concatenate([theta, jnp.zeros(1, dtype=theta.dtype)])
    return base._replace(
        consumer_demand_kg_s=base.consumer_demand_kg_s * jnp.exp(ext[demand_slot]),
        roughness_m=base.roughness_m * jnp.exp(ext[rough_slot]),
    )


@eqx.filter_jit
def _fit(
    net: CompiledNetwork,
    base: Parameters,
    demand_slot: jnp.ndarray,
    rough_slot: jnp.ndarray,
    p_index: jnp.ndarray,
    f_index: jnp.ndarray,
    measured: jnp.ndarray,
    sigma: jnp.ndarray,
    active: jnp.ndarray,
    theta0: jnp.ndarray,
    start: State,
    options: EstimationOptions,
) -> _Fit:
    """Levenberg–Marquardt from θ0 over the active sensors (one jit boundary, see the module doc)."""
    n_s = measured.shape[0]
    prior_w = 1.0 / options.prior_sigma_log**2
    weight = jnp.where(active, 1.0 / sigma, 0.0)
    y_meas = jnp.where(active, measured, 0.0)

    def model(theta: jnp.ndarray, initial: State) -> tuple[jnp.ndarray, tuple[State, jnp.ndarray]]:
        res = solve_steady(net, _apply(base, theta, demand_slot, rough_slot), options.solver, initial)
        y = jnp.concatenate([res.state.pressure_pa_abs[p_index], res.state.mass_flow_kg_s[f_index]])
        return y, (res.state, res.status == Status.CONVERGED)

    def evaluate(theta: jnp.ndarray, initial: State) -> tuple:
        y, vjp, (state, ok) = jax.vjp(lambda t: model(t, initial), theta, has_aux=True)
        (jac,) = jax.vmap(vjp)(jnp.eye(n_s, dtype=y.dtype))
        jac_all = jac / sigma[:, None]
        wres = (y_meas - y) * weight
        cost = jnp.sum(wres**2) + prior_w * jnp.sum(theta**2)
        ok = ok & jnp.isfinite(cost)
        return y, wres, jac_all, state, jnp.where(ok, cost, jnp.inf), ok

    y0, r0, ja0, s0, c0, ok0 = evaluate(theta0, start)
    n_p = theta0.shape[0]
    eye = jnp.eye(n_p, dtype=theta0.dtype)

    def step(carry: tuple) -> tuple:
        theta, y, wres, jac_all, state, cost, lam, nu, it, _, _ = carry
        jac = jac_all * active[:, None]
        a = jac.T @ jac + prior_w * eye
        g = jac.T @ wres - prior_w * theta
        d = jnp.diag(a)
        delta = jnp.linalg.solve(a + lam * jnp.diag(d), g)
        delta = delta / jnp.maximum(1.0, jnp.max(jnp.abs(delta)) / options.max_step_log)
        predicted_gain = 2.0 * delta @ g - delta @ a @ delta
        y1, r1, ja1, s1, c1, _ = evaluate(theta + delta, state)
        accept = c1 < cost
        rho = (cost - c1) / jnp.maximum(predicted_gain, 1e-300)
        lam_acc = lam * jnp.maximum(1.0 / 3.0, 1.0 - (2.0 * rho - 1.0) ** 3)
        small = jnp.max(jnp.abs(delta)) <= options.step_tol_log
        flat = (cost - c1) <= options.cost_rtol * cost
        done = accept & (small | flat)
        theta, y, wres, jac_all, state, cost = jax.tree_util.tree_map(
            lambda new, old: jnp.where(accept, new, old),
            (theta + delta, y1, r1, ja1, s1, c1),
            (theta, y, wres, jac_all, state, cost),
        )
        lam = jnp.where(accept, lam_acc, lam * nu)
        nu = jnp.where(accept, 2.0, 2.0 * nu)
        return theta, y, wres, jac_all, state, cost, lam, nu, it + 1, done, lam > 1e12

    def keep_going(carry: tuple) -> jnp.ndarray:
        it, done, stuck = carry[-3], carry[-2], carry[-1]
        return (it < options.max_iterations) & ~done & ~stuck

    init = (
        theta0,
        y0,
        r0,
        ja0,
        s0,
        c0,
        jnp.asarray(options.initial_damping),
        jnp.asarray(2.0),
        jnp.int32(0),
        ~ok0,
        jnp.bool_(False),
    )
    theta, y, _, jac_all, state, _, _, _, it, done, _ = jax.lax.while_loop(keep_going, step, init)
    return _Fit(theta, y, jac_all, state, it, done & ok0, ok0)


class StateEstimator:
    """Weighted least-squares estimation of group factors for one network and one sensor set."""

    def __init__(
        self,
        net: CompiledNetwork,
        params: Parameters,
        groups: ParameterGroups,
        sensors: Sensors,
        options: EstimationOptions | None = None,
    ) -> None:
        """`params`: the given (registry and live) parameters the factors multiply."""
        self.net = net
        self.params = params
        self.groups = groups
        self.sensors = sensors
        self.options = options or EstimationOptions()
        if len(groups.demand_group) != len(net.consumer_ids) or len(groups.roughness_group) != net.n_pipes:
            raise ValueError("groups need one entry per consumer and one per pipe")
        branch = {b: k for k, b in enumerate(net.branch_ids)}
        missing = [n for n in sensors.pressure_nodes if n not in net.node_index] + [
            b for b in sensors.flow_branches if b not in branch
        ]
        if missing:
            raise ValueError(f"sensors at unknown nodes or branches: {missing[:10]}")
        if len(sensors.pressure_sigma_pa) != len(sensors.pressure_nodes) or len(
            sensors.flow_sigma_kg_s
        ) != len(sensors.flow_branches):
            raise ValueError("one σ per sensor is needed")
        self.names = sensors.labels
        self.sigma = sensors.sigma
        if len(self.names) != len(self.sigma):
            raise ValueError("one name per sensor is needed")
        if not np.all(self.sigma > 0):
            raise ValueError("every sensor's σ must be positive")
        self._p_index = jnp.asarray([net.node_index[n] for n in sensors.pressure_nodes], dtype=jnp.int32)
        self._f_index = jnp.asarray([branch[b] for b in sensors.flow_branches], dtype=jnp.int32)
        d, r = groups.slots()
        self._demand_slot, self._rough_slot = jnp.asarray(d), jnp.asarray(r)
        self._start = solve_steady(net, params, self.options.solver).state

    def apply(self, factor: Sequence[float] | np.ndarray) -> Parameters:
        """The given parameters with `factor` [n_parameters] applied to their groups."""
        theta = jnp.log(jnp.asarray(np.asarray(factor, dtype=np.float64)))
        return _apply(self.params, theta, self._demand_slot, self._rough_slot)

    def measure(self, state: State) -> np.ndarray:
        """What the sensors would read in `state` [n_sensors] (Pa absolute, kg/s), no noise."""
        return np.concatenate(
            [
                np.asarray(state.pressure_pa_abs)[np.asarray(self._p_index)],
                np.asarray(state.mass_flow_kg_s)[np.asarray(self._f_index)],
            ]
        )

    def estimate(self, measured: Sequence[float] | np.ndarray, *, start: Estimate | None = None) -> Estimate:
        """Fit the group factors to `measured` [n_sensors] (pressures Pa absolute, then flows kg/s;
        NaN = missing), removing bad data by the largest normalized residual test.

        `start`: a previous estimate to start from (its factors and state). Returns `Estimate`.
        """
        opts = self.options
        y = np.asarray(measured, dtype=np.float64)
        if y.shape != self.sigma.shape:
            raise ValueError(f"expected {self.sigma.shape[0]} measurements, got {y.shape}")
        present = np.isfinite(y)
        active = present.copy()
        n_p = self.groups.n_parameters
        theta = np.zeros(n_p) if start is None else np.asarray(start.log_factor, dtype=np.float64)
        state = self._start if start is None else start.state
        bad: list[int] = []
        total = 0
        y_in = jnp.asarray(np.where(present, y, 0.0))
        # the fit sees only its own settings: changing the test's or the report's does not retrace
        fit_opts = replace(
            opts, observable_std_log=0.0, bad_data_threshold=0.0, max_bad_data=0, min_redundancy=0.0
        )
        sigma = jnp.asarray(self.sigma)
        while True:
            fit = _fit(
                self.net,
                self.params,
                self._demand_slot,
                self._rough_slot,
                self._p_index,
                self._f_index,
                y_in,
                sigma,
                jnp.asarray(active),
                jnp.asarray(theta),
                state,
                fit_opts,
            )
            total += int(fit.iterations)
            if not bool(fit.ok):
                return self._failed(fit, y, present, total)
            theta, state = np.asarray(fit.theta), fit.state
            rn, redundancy, _ = self._diagnostics(fit, y, present, active)
            testable = active & (np.nan_to_num(redundancy) >= opts.min_redundancy)
            score = np.where(testable, np.abs(np.nan_to_num(rn)), 0.0)
            worst = int(np.argmax(score)) if score.size else -1
            if worst < 0 or score[worst] <= opts.bad_data_threshold or len(bad) >= opts.max_bad_data:
                break
            bad.append(worst)
            active[worst] = False
        if bool(fit.converged):
            message = "converged"
        elif int(fit.iterations) >= opts.max_iterations:
            message = "did not converge within the iteration limit"
        else:
            message = "stopped: no step lowered the misfit (damping exhausted)"
        return self._result(fit, y, present, active, bad, total, message)

    def _diagnostics(
        self, fit: _Fit, y: np.ndarray, present: np.ndarray, active: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(normalized residual, redundancy 1 − leverage (NaN for unused sensors), covariance of θ).

        Used sensors: rᴺ = r/√Ωᵢᵢ with Ωᵢᵢ/σᵢ² = 1 − hᵢᵢ, hᵢᵢ = jᵢ·C·jᵢᵀ (weighted rows j).
        Removed sensors: r/√(σ² + HCHᵀ), the prediction error of a sensor the fit did not use.
        """
        jac_all = np.asarray(fit.jac_all)
        jac = jac_all * active[:, None]
        info = jac.T @ jac + np.eye(jac.shape[1]) / self.options.prior_sigma_log**2
        cov = np.linalg.inv(info)
        leverage = np.einsum("ij,jk,ik->i", jac_all, cov, jac_all)
        r_w = (y - np.asarray(fit.predicted)) / self.sigma
        redundancy = np.where(active, np.clip(1.0 - leverage, 0.0, 1.0), np.nan)
        spread = np.where(active, redundancy, 1.0 + leverage)
        testable = ~active | (np.nan_to_num(redundancy) >= self.options.min_redundancy)
        rn = np.full(len(y), np.nan)
        ok = present & testable
        rn[ok] = r_w[ok] / np.sqrt(spread[ok])
        return rn, redundancy, cov

    def _failed(self, fit: _Fit, y: np.ndarray, present: np.ndarray, total: int) -> Estimate:
        """The estimate when the model cannot be solved at the start: the prior, nothing fitted."""
        opts = self.options
        n_p, n_s = self.groups.n_parameters, len(y)
        theta = np.asarray(fit.theta)
        nan = np.full(n_s, np.nan)
        return Estimate(
            names=self.groups.names,
            factor=np.exp(theta),
            log_factor=theta,
            std_log=np.full(n_p, opts.prior_sigma_log),
            observable=np.zeros(n_p, dtype=bool),
            information=np.zeros(n_p),
            converged=False,
            iterations=0,
            total_iterations=total,
            chi2=float("nan"),
            dof=float("nan"),
            message="the steady solve did not converge at the starting factors: nothing was fitted",
            sensor_names=self.names,
            predicted=nan,
            residual=nan,
            normalized_residual=nan,
            redundancy=nan,
            min_detectable_bias=np.full(n_s, np.inf),
            bad_sensors=(),
            untestable_sensors=(),
            missing_sensors=tuple(self.names[k] for k in np.flatnonzero(~present)),
            parameters=_apply(self.params, jnp.asarray(theta), self._demand_slot, self._rough_slot),
            state=fit.state,
        )

    def _result(
        self,
        fit: _Fit,
        y: np.ndarray,
        present: np.ndarray,
        active: np.ndarray,
        bad: list[int],
        total: int,
        message: str,
    ) -> Estimate:
        opts = self.options
        rn, redundancy, cov = self._diagnostics(fit, y, present, active)
        theta = np.asarray(fit.theta)
        std = np.sqrt(np.diag(cov))
        leverage_sum = float(np.nansum(1.0 - redundancy))
        predicted = np.asarray(fit.predicted)
        testable = active & (np.nan_to_num(redundancy) >= opts.min_redundancy)
        detectable = np.full(len(y), np.inf)
        detectable[testable] = opts.bad_data_threshold * self.sigma[testable] / np.sqrt(redundancy[testable])
        names = self.names
        return Estimate(
            names=self.groups.names,
            factor=np.exp(theta),
            log_factor=theta,
            std_log=std,
            observable=std <= opts.observable_std_log,
            information=np.clip(1.0 - std**2 / opts.prior_sigma_log**2, 0.0, 1.0),
            converged=bool(fit.converged),
            iterations=int(fit.iterations),
            total_iterations=total,
            chi2=float(np.sum(np.where(active, ((y - predicted) / self.sigma) ** 2, 0.0))),
            dof=float(active.sum()) - leverage_sum,
            message=message,
            sensor_names=names,
            predicted=predicted,
            residual=np.where(present, y - predicted, np.nan),
            normalized_residual=rn,
            redundancy=redundancy,
            min_detectable_bias=detectable,
            bad_sensors=tuple(names[k] for k in bad),
            untestable_sensors=tuple(names[k] for k in np.flatnonzero(active & ~testable)),
            missing_sensors=tuple(names[k] for k in np.flatnonzero(~present)),
            parameters=_apply(self.params, jnp.asarray(theta), self._demand_slot, self._rough_slot),
            state=fit.state,
        )
