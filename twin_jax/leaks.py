"""Leak detection and localization from pressure sensors (ANA-1, first version).

Given the network's state without a leak (the baseline) and a window of measurements, every
node is a candidate leak position at once:

1. **Sensitivities.** `S[i, j] = ∂p_i/∂q_j`, how sensor i's pressure falls when node j loses
   gas, for every sensor and every node: reverse mode through the implicit-function-theorem
   gradient of the steady solve, one transposed KLU solve per sensor (`jax.jacrev`, batched).
2. **Screening.** With residuals r = measured − modelled (window means, noise σ per sensor), a
   leak of size q at node j explains r ≈ S[:, j]·q; the best q ≥ 0 has a closed form and the
   χ² improvement `Δχ²_j` scores the node — all nodes in one matrix product.
3. **Refinement.** The best candidates are re-solved with the full nonlinear model, their leak
   sizes fitted by a few Gauss–Newton steps through `jax.vmap`, and re-ranked.
4. **Detection.** A leak is reported when the best candidate's Δχ² exceeds a threshold set for
   a false-alarm rate (under no leak, Δχ² of the best of many candidates is the maximum of
   near-χ²₁ variables).

Pure JAX/NumPy; the server feeds it residuals from the tag store and the live twin's state.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import jax
import jax.numpy as jnp
import numpy as np

from twin_jax.network import CompiledNetwork, Parameters
from twin_jax.solve import Result, solve_steady

__all__ = ["LeakCandidate", "LeakLocator", "screen"]


def screen(signatures: np.ndarray, residual: np.ndarray, sigma: np.ndarray,
           nuisance: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Every candidate at once by the linear model r ≈ g_j·q: (sizes q ≥ 0 [C], χ² gains [C]).

    Arguments: `signatures` [R, C] what a leak of 1 kg/s at each candidate leaves in the
    residual rows (Pa or kg/s per kg/s); `residual` [R] measured − modelled (NaN: not used);
    `sigma` [R] each row's noise; `nuisance` [R, K] columns fitted away with every candidate
    (a town-wide demand factor). The gain χ²(0) − χ²(q) scores a candidate: under no leak, the
    best of many is the maximum of near-χ²₁ variables.
    """
    g = np.asarray(signatures, dtype=np.float64)
    r = np.asarray(residual, dtype=np.float64)
    ok = np.isfinite(r)
    w = np.where(ok, 1.0 / np.asarray(sigma, dtype=np.float64) ** 2, 0.0)
    r = np.where(ok, r, 0.0)
    if nuisance is not None and np.size(nuisance):
        n = np.nan_to_num(np.asarray(nuisance, dtype=np.float64).reshape(len(r), -1))
        wn = w[:, None] * n
        a = np.linalg.pinv(n.T @ wn)
        g = g - n @ (a @ (wn.T @ g))
        r = r - n @ (a @ (wn.T @ r))
    norm2 = np.einsum("rc,r,rc->c", g, w, g)
    dot = g.T @ (w * r)
    q = np.where(norm2 > 0, dot / np.where(norm2 > 0, norm2, 1.0), 0.0)
    q = np.maximum(q, 0.0)  # a leak only takes gas
    return q, 2.0 * q * dot - q * q * norm2


@dataclass(frozen=True)
class LeakCandidate:
    """A possible leak: node, fitted size (kg/s) and score (χ² improvement over no leak)."""

    node_id: str
    leak_kg_s: float
    score: float


class LeakLocator:
    """Leak screening and refinement for one network state and one set of pressure sensors."""

    def __init__(self, net: CompiledNetwork, params: Parameters, sensor_nodes: Sequence[str],
                 sigma_pa: Sequence[float], baseline: Result | None = None) -> None:
        self.net = net
        self.params = params
        self.sensor_index = np.array([net.node_index[n] for n in sensor_nodes], dtype=np.int32)
        self.sigma = np.asarray(sigma_pa, dtype=np.float64)
        self.baseline = baseline if baseline is not None else solve_steady(net, params)
        supplied = np.asarray(self.baseline.state.supplied)
        fixed = np.zeros(net.n_nodes, dtype=bool)
        fixed[net.source_node] = True
        self.candidates = np.flatnonzero(supplied & ~fixed)
        idx = jnp.asarray(self.sensor_index)

        def sensor_p(extra: jnp.ndarray) -> jnp.ndarray:
            r = solve_steady(net, params._replace(extra_demand_kg_s=extra),
                             initial=self.baseline.state)
            return r.state.pressure_pa_abs[idx]

        # ∂p_sensor/∂q_node: rows sensors, columns nodes (negative: a leak lowers pressures)
        jac = jax.jacrev(sensor_p)(params.extra_demand_kg_s)
        self.sensitivity = np.asarray(jac)[:, self.candidates]
        self._sensor_p = jax.jit(jax.vmap(sensor_p))

    def screen(self, residual_pa: np.ndarray, top: int = 20) -> list[LeakCandidate]:
        """Candidates ranked by the linear model: residual [n_sensors] (measured − modelled, Pa)."""
        q, gain = screen(self.sensitivity, residual_pa, self.sigma)
        order = np.argsort(-gain)[:top]
        ids = self.net.node_ids
        return [LeakCandidate(ids[int(self.candidates[k])], float(q[k]), float(gain[k])) for k in order]

    def refine(self, residual_pa: np.ndarray, candidates: Sequence[LeakCandidate],
               steps: int = 3) -> list[LeakCandidate]:
        """Re-fit each candidate's size with the nonlinear model (batched) and re-rank."""
        if not candidates:
            return []
        net = self.net
        nodes = np.array([net.node_index[c.node_id] for c in candidates])
        q = np.array([max(c.leak_kg_s, 1e-6) for c in candidates])
        base_p = np.asarray(self.baseline.state.pressure_pa_abs)[self.sensor_index]
        measured = base_p + np.asarray(residual_pa, dtype=np.float64)
        w = 1.0 / self.sigma

        def predict(sizes: np.ndarray) -> np.ndarray:
            extra = np.zeros((len(nodes), net.n_nodes))
            extra[np.arange(len(nodes)), nodes] = sizes
            return np.asarray(self._sensor_p(jnp.asarray(extra)))

        # Gauss–Newton on one unknown per candidate with the slope at no leak (the chord method:
        # the sensitivity column is already known, so a step costs one batched solve, not two
        # for a finite difference). A size is kept under 3× the screened one: a candidate the
        # sensors hardly see gets a huge linear estimate, and the nonlinear solve of a leak that
        # empties its zone takes the whole batch to its iteration limit.
        cols = {int(c): k for k, c in enumerate(self.candidates)}
        slope = np.stack([self.sensitivity[:, cols[int(n)]] for n in nodes]) * w[None, :]
        cap = 3.0 * q
        norm2 = np.maximum(np.einsum("ki,ki->k", slope, slope), 1e-30)
        for _ in range(steps):
            r = (measured[None, :] - predict(q)) * w
            q = np.clip(q + np.einsum("ki,ki->k", slope, r) / norm2, 0.0, cap)
        p_fit = predict(q)
        chi0 = float(np.sum(((measured - base_p) * w) ** 2))
        chi = np.sum(((measured[None, :] - p_fit) * w) ** 2, axis=1)
        ranked = sorted(zip(candidates, q, chi0 - chi, strict=True), key=lambda t: -t[2])
        return [LeakCandidate(c.node_id, float(size), float(g)) for c, size, g in ranked]
