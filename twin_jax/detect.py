"""Leak detection in the live loop: one CUSUM per district on the twin's residuals (ANA-1).

Every twin cycle hands in a residual vector r (measured − modelled: pressure sensors in Pa, and
per metered pressure zone its inflow balance in kg/s) and the detector asks, per district d:
*do the residuals sag in the pattern a leak in d makes?*

1. **Signature.** `g_d` [rows] is the residual a leak of 1 kg/s somewhere in d leaves: the mean,
   over the district's candidate nodes j, of the sensitivity column ∂p_sensor/∂q_j
   (`twin_jax.leaks.LeakLocator.sensitivity`), corrected for what the live twin does with a
   metered zone — it scales the zone's consumers to the metered inflow, so the leak's gas is
   modelled as spread over them, and a pressure sensor sees only the difference between the
   leak's column and the zone's demand-weighted mean column; the zone's balance row (inflow −
   profile demand) sees +1 (`district_signatures`).
2. **Statistic.** Against a learned baseline b (below), the weighted least-squares leak size
   along g_d, with W = diag(1/σ²) and optional nuisance columns N projected out (a town-wide
   demand factor: every zone's balance moves with its profile demand):
   ``q̂_d = g̃ᵀW(r − b) / g̃ᵀWg̃`` (kg/s), its standard error ``1/√(g̃ᵀWg̃)``, and
   ``z_d = q̂_d / se_d`` — N(0, 1) without a leak, positive when pressures sag like a leak in d.
3. **CUSUM.** ``S_d ← min(cap·h, max(0, S_d + z_d − k))``; an alarm is raised when S_d ≥ h and
   clears when S_d falls below `clear`·h, which also resets S_d and the leak estimate. The leak
   rate reported is the mean of q̂_d since S_d last left zero.

**Why k and h.** k = 0.5 is the classical choice for a shift of one standard error per cycle (the
CUSUM is optimal for a shift of 2k): at the twin's 10 s cycle a leak of 1 % of a district's
inflow moves its balance row by about one σ of a station flow meter (1 %). h comes from
Siegmund's approximation of the in-control average run length, ARL₀(k, h) =
(e^{2kb} − 2kb − 1)/(2k²) with b = h + 1.166 (`cusum_arl0`), solved for
ARL₀ = districts × cycles per week / (false alarms per week): `CusumConfig.for_period` takes
0.1 a week for the town, a tenfold margin under the target of one a week, because the noise
level and the baseline are learned, not known (a baseline off by 0.05 σ in z alone costs
a factor of about 2–4 in ARL₀ at these h). Demo town (15 districts, 10 s): h ≈ 14; a shift of
1 σ is then found in about 30 cycles (5 min), 2 σ in 10 (`cusum_arl1`).
`tests/numerics/test_detect.py` simulates the week.

**Learned baseline and noise.** The live twin is not calibrated (roughness, per-consumer demand),
so residuals carry a model error that changes with the load. Per row the detector learns
``b = a + β·x`` by exponentially weighted least squares on a regressor x the caller hands in
(the runner: the modelled pressure drop from the zone's feed to the sensor, the zone's profile
demand for a balance row; none: a plain mean), and the noise σ around it once the nuisance
columns are fitted away (never below the caller's σ), over `baseline_cycles` (a day) and
`noise_cycles` (three days). Rows that a suspicious district touches
(S_d ≥ `freeze`·h or in alarm) stop learning, so a leak is not learnt away. The first
`warmup_cycles` only learn. A leak present at start is part of the baseline: finding that is the
state estimator's and the gas balance's job, not this detector's. The variance of each
district's raw statistic is learned too (floored at 1), which absorbs correlation between rows.

Pure NumPy; failures are values (`Detection.status`, `DistrictLeak.observable`). Units: Pa,
kg/s; `leak_m3h_std` at the standard density the caller gives.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

import numpy as np

__all__ = [
    "CusumConfig",
    "CusumState",
    "Detection",
    "DetectorStatus",
    "DistrictLeak",
    "LeakDetector",
    "cusum_arl0",
    "cusum_arl1",
    "cusum_threshold",
    "district_signatures",
]

SECONDS_PER_WEEK = 7 * 86_400.0
_SIEGMUND = 1.166  # Siegmund's correction for the overshoot of a Gaussian CUSUM over h
_TOUCH = 0.05  # a row is touched by a district where its weighted signature is ≥ 5 % of the largest
# The baseline's intercept is shrunk towards zero as if `_PRIOR_CYCLES` more samples had said
# "no offset": while few samples have come in, the baseline is a share of its regressor (a
# demand profile off by some per cent, a pressure drop off by some per cent: the model errors
# the live twin has), which one sample fixes; a line fitted on the first hour, whose load
# hardly moves, would be extrapolated all day. After a few hours the intercept is free (a gauge's
# calibration offset, a constant unmetered use).
_PRIOR_CYCLES = 360.0


def cusum_arl0(k: float, h: float) -> float:
    """Average run length (cycles) of a one-sided CUSUM on N(0, 1) to a false alarm (Siegmund)."""
    b = h + _SIEGMUND
    if k <= 0:
        return b * b
    a = 2.0 * k * b
    return (math.expm1(a) - a) / (2.0 * k * k)


def cusum_arl1(k: float, h: float, shift: float) -> float:
    """Average cycles to detect a shift of `shift` standard errors (Siegmund; shift > k)."""
    d = shift - k
    b = h + _SIEGMUND
    if abs(d) < 1e-9:
        return b * b
    return (math.exp(-2.0 * d * b) + 2.0 * d * b - 1.0) / (2.0 * d * d)


def cusum_threshold(arl0_cycles: float, k: float = 0.5) -> float:
    """The threshold h whose in-control average run length is `arl0_cycles` (bisection)."""
    lo, hi = 0.0, 200.0
    for _ in range(100):
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if cusum_arl0(k, mid) < arl0_cycles else (lo, mid)
    return hi


@dataclass(frozen=True, slots=True)
class CusumConfig:
    """Detector parameters; `k`, `h` in standard errors, lengths in cycles (see the module doc)."""

    h: float = 14.0
    k: float = 0.5
    clear: float = 0.5
    """The alarm clears (and the CUSUM restarts from zero) once S ≤ clear·h."""
    cap: float = 2.0
    """S never exceeds cap·h: after a repair the alarm clears within (cap − clear)·h/k cycles."""
    freeze: float = 0.25
    """Rows a district with S ≥ freeze·h touches stop learning their baseline and noise."""
    warmup_cycles: int = 60
    """The first cycles only learn (10 minutes at the live twin's 10 s)."""
    baseline_cycles: float = 8_640.0
    """The baseline's memory: a day at 10 s. Its regressor follows the load through the day, so
    it can remember long; a short memory would learn a slowly growing statistic away."""
    noise_cycles: float = 25_920.0
    """The noise level's memory: three days at 10 s."""

    def __post_init__(self) -> None:
        if not (self.h > 0 and self.k >= 0 and 0 <= self.clear < 1 <= self.cap and 0 < self.freeze <= 1):
            raise ValueError(f"bad CUSUM parameters: {self}")
        if self.warmup_cycles < 2 or self.baseline_cycles < 1 or self.noise_cycles < 1:
            raise ValueError(f"bad learning lengths: {self}")

    @classmethod
    def for_period(cls, period_s: float, n_districts: int, *, false_alarms_per_week: float = 0.1,
                   k: float = 0.5, **more: Any) -> CusumConfig:
        """h for at most `false_alarms_per_week` (whole town, nominal) at one cycle per `period_s`;
        the learning lengths in the same time as the defaults' at 10 s, unless given."""
        arl0 = max(n_districts, 1) * SECONDS_PER_WEEK / period_s / false_alarms_per_week
        per_10s = 10.0 / period_s
        lengths = {"warmup_cycles": max(2, round(60 * per_10s)),
                   "baseline_cycles": max(1.0, 8_640.0 * per_10s),
                   "noise_cycles": max(1.0, 25_920.0 * per_10s)}
        return cls(h=cusum_threshold(arl0, k), k=k, **{**lengths, **more})


@dataclass(slots=True)
class CusumState:
    """Everything the detector carries from one cycle to the next (D districts, R rows)."""

    cycles: int
    cusum: np.ndarray
    """[D] S_d, standard errors."""
    run: np.ndarray
    """[D] cycles since S_d last left zero."""
    leak_sum_kg_s: np.ndarray
    """[D] Σ q̂_d over the run."""
    alarm: np.ndarray
    """[D] bool."""
    moments: np.ndarray
    """[4, R] exponentially weighted means of x, x², r, x·r (the residual baseline)."""
    noise_var: np.ndarray
    """[R] exponentially weighted variance of r − baseline (residual unit²)."""
    seen: np.ndarray
    """[R] cycles each row has learned from."""
    z_var: np.ndarray
    """[D] exponentially weighted variance of the raw statistic while quiet."""
    z_seen: np.ndarray
    """[D]"""


class DetectorStatus(StrEnum):
    """What a cycle's detection could do."""

    warming_up = "warming_up"  # learning the baseline; no CUSUM yet
    watching = "watching"
    no_data = "no_data"  # no usable residual this cycle: nothing changed


@dataclass(frozen=True, slots=True)
class DistrictLeak:
    """One district after a cycle."""

    district: str
    z: float
    """This cycle's statistic (standard errors; > 0: pressures sag like a leak here)."""
    cusum: float
    """S_d, standard errors."""
    level: float
    """S_d / h: 1 is the alarm threshold."""
    leak_kg_s: float
    """Mean fitted leak since S_d last left zero (0 while S_d = 0), kg/s."""
    leak_m3h_std: float
    """The same, m³/h at the caller's standard conditions."""
    alarm: bool
    raised: bool
    """The alarm was raised this cycle."""
    cleared: bool
    """The alarm cleared this cycle (S_d and the estimate restarted)."""
    observable: bool
    """Whether this cycle's sensors see a leak here at all."""


@dataclass(frozen=True, slots=True)
class Detection:
    """The outcome of one cycle."""

    status: DetectorStatus
    districts: tuple[DistrictLeak, ...] = field(default_factory=tuple)
    deviation: np.ndarray | None = None
    """[R] this cycle's residual less the learned baseline (NaN where missing): what leak
    localization averages over a window (`twin_jax.leaks.screen`)."""
    sigma: np.ndarray | None = None
    """[R] each row's noise this cycle (the learned one, never below the caller's floor)."""

    @property
    def alarms(self) -> list[DistrictLeak]:
        """Districts in alarm, the strongest first."""
        return sorted((d for d in self.districts if d.alarm), key=lambda d: -d.cusum)


class LeakDetector:
    """Per-district CUSUM leak detection on residual rows (see the module docstring).

    Arguments: `districts` [D] names; `signatures` [R, D] residual per kg/s of leak in each
    district (pressure rows Pa/(kg/s), negative; balance rows 1); `sigma` [R] each row's noise
    floor (its unit); `density_std_kg_m3` converts leak rates to m³/h at standard conditions.
    """

    def __init__(self, districts: Sequence[str], signatures: np.ndarray, sigma: np.ndarray, *,
                 config: CusumConfig | None = None, density_std_kg_m3: float = 0.68) -> None:
        g = np.asarray(signatures, dtype=np.float64)
        s = np.asarray(sigma, dtype=np.float64)
        if g.ndim != 2 or g.shape[1] != len(districts) or s.shape != (g.shape[0],):
            raise ValueError(f"signatures {g.shape}, sigma {s.shape} and {len(districts)} districts "
                             "do not fit")
        if not np.all(np.isfinite(g)) or np.any(s <= 0):
            raise ValueError("signatures must be finite and sigma positive")
        self.districts = tuple(districts)
        self.signatures = g
        self.sigma = s
        self.config = config or CusumConfig()
        self.density_std_kg_m3 = float(density_std_kg_m3)
        weighted = np.abs(g) / s[:, None]
        top = weighted.max(axis=0, initial=0.0)
        self.touch = (weighted >= _TOUCH * top[None, :]) & (weighted > 0)  # [R, D]

    @property
    def n_rows(self) -> int:
        """R, the residual rows."""
        return int(self.signatures.shape[0])

    def init(self) -> CusumState:
        """The state before the first cycle."""
        n_r, n_d = self.signatures.shape
        return CusumState(cycles=0, cusum=np.zeros(n_d), run=np.zeros(n_d, dtype=np.int64),
                          leak_sum_kg_s=np.zeros(n_d), alarm=np.zeros(n_d, dtype=bool),
                          moments=np.zeros((4, n_r)), noise_var=np.zeros(n_r),
                          seen=np.zeros(n_r, dtype=np.int64), z_var=np.ones(n_d),
                          z_seen=np.zeros(n_d, dtype=np.int64))

    def baseline(self, state: CusumState, x: np.ndarray | None = None) -> np.ndarray:
        """[R] the learned residual baseline a + β·x at regressor x (none: its mean)."""
        mx, mxx, mr, mxr = state.moments
        n_eff = np.minimum(np.maximum(state.seen, 1), self.config.baseline_cycles)
        lam = np.where(mxx > 0, _PRIOR_CYCLES / n_eff, 0.0)  # no regressor: a plain mean
        # least squares of r ≈ a + β·x on the moments, with λ·a² added (2×2 normal equations)
        mxx_safe = np.maximum(mxx, 1e-12 * mx * mx + 1e-300)
        det = (1.0 + lam) * mxx_safe - mx * mx
        det = np.where(np.abs(det) > 1e-12 * (1.0 + lam) * mxx_safe, det, np.inf)  # x constant
        a = np.where(np.isfinite(det), (mxx_safe * mr - mx * mxr) / det, mr)
        beta = np.where(np.isfinite(det), ((1.0 + lam) * mxr - mx * mr) / det, 0.0)
        at = mx if x is None else np.asarray(x, dtype=np.float64)
        return np.where(state.seen > 0, a + beta * at, 0.0)

    def step(self, state: CusumState, residual: np.ndarray, *, x: np.ndarray | None = None,
             sigma: np.ndarray | None = None, nuisance: np.ndarray | None = None
             ) -> tuple[CusumState, Detection]:
        """One cycle: the new state and what it found.

        Arguments: `residual` [R] measured − modelled (NaN: missing this cycle); `x` [R] the
        baseline's regressor (see the module docstring); `sigma` [R] this cycle's noise floors
        (default: the constructor's); `nuisance` [R, K] columns fitted away with every district.
        """
        cfg = self.config
        n_d = len(self.districts)
        r = np.asarray(residual, dtype=np.float64)
        if r.shape != (self.n_rows,):
            raise ValueError(f"residual has shape {r.shape}, expected ({self.n_rows},)")
        valid = np.isfinite(r)
        if not valid.any():
            none = np.zeros(n_d, dtype=bool)
            return state, Detection(DetectorStatus.no_data,
                                    self._report(state, np.zeros(n_d), none, none, none))
        xr = np.zeros(self.n_rows) if x is None else np.nan_to_num(np.asarray(x, dtype=np.float64))
        rr = np.where(valid, r, 0.0)
        floor = self.sigma if sigma is None else np.asarray(sigma, dtype=np.float64)

        # the district statistics, against what was learned before this cycle
        base = self.baseline(state, xr)
        dev = np.where(valid, rr - base, 0.0)
        sig = np.maximum(floor, np.sqrt(np.where(state.seen > 1, state.noise_var, 0.0)))
        w = np.where(valid & (state.seen > 0), 1.0 / (sig * sig), 0.0)
        g = self.signatures
        n = None
        if nuisance is not None and np.size(nuisance):
            n = np.nan_to_num(np.asarray(nuisance, dtype=np.float64).reshape(self.n_rows, -1))
            g = g - _fitted(n, w, g)
        dev_raw = dev
        if n is not None:
            dev = dev - _fitted(n, w, dev)
        den = np.einsum("rd,r,rd->d", g, w, g)
        num = g.T @ (w * dev)
        observable = den > 1e-300
        safe = np.where(observable, den, 1.0)
        q = np.where(observable, num / safe, 0.0)
        z_raw = np.where(observable, num / np.sqrt(safe), 0.0)
        z = z_raw / np.sqrt(np.maximum(state.z_var, 1.0))

        # the CUSUM (not while warming up)
        cycles = state.cycles + 1
        warming = cycles <= cfg.warmup_cycles
        s, run, leak_sum, alarm = state.cusum, state.run, state.leak_sum_kg_s, state.alarm
        raised = cleared = np.zeros(n_d, dtype=bool)
        if not warming:
            s = np.clip(s + z - cfg.k, 0.0, cfg.cap * cfg.h)
            raised = ~alarm & (s >= cfg.h)
            cleared = alarm & (s <= cfg.clear * cfg.h)
            alarm = (alarm | raised) & ~cleared
            up = (s > 0) & ~cleared
            s = np.where(up, s, 0.0)
            run = np.where(up, run + 1, 0)
            leak_sum = np.where(up, leak_sum + q, 0.0)

        # learning: rows a suspicious district touches keep what they knew (a leak is not learnt)
        suspicious = alarm | (s >= cfg.freeze * cfg.h)
        learn = valid & ~(self.touch[:, suspicious].any(axis=1))
        # what the rows learn is cleaned of the nuisance, fitted on the learning rows alone: a
        # town-wide factor that wanders with the load would otherwise bend the baselines' slope,
        # and a leak would leak into the other districts' baselines through the common fit
        clean = np.zeros(self.n_rows) if n is None else _fitted(n, np.where(learn, w, 0.0), dev_raw)
        rr_clean, dev_clean = rr - clean, dev_raw - clean
        seen = state.seen + learn
        inv_n = 1.0 / np.maximum(seen, 1)
        alpha_b = np.where(learn, np.maximum(inv_n, 1.0 / cfg.baseline_cycles), 0.0)
        alpha_v = np.where(learn, np.maximum(inv_n, 1.0 / cfg.noise_cycles), 0.0)
        sample = np.stack([xr, xr * xr, rr_clean, xr * rr_clean])
        moments = state.moments + alpha_b[None, :] * (sample - state.moments)
        # the noise that matters is what is left once the nuisance columns are fitted away
        # (a town-wide demand factor moves every balance row at once: it is no leak's noise)
        d2 = np.where(learn & (state.seen > 0), dev_clean * dev_clean, 0.0)
        noise_var = (1.0 - alpha_v) * (state.noise_var + alpha_v * d2)
        quiet = ~suspicious & observable & (cycles > cfg.warmup_cycles // 2)
        z_seen = state.z_seen + quiet
        alpha_z = np.where(quiet, np.maximum(1.0 / np.maximum(z_seen, 1), 1.0 / cfg.noise_cycles), 0.0)
        z_var = state.z_var + alpha_z * (z_raw * z_raw - state.z_var)

        new = CusumState(cycles, s, run, leak_sum, alarm, moments, noise_var, seen, z_var, z_seen)
        status = DetectorStatus.warming_up if warming else DetectorStatus.watching
        return new, Detection(status, self._report(new, z, observable, raised, cleared),
                              deviation=np.where(valid & (state.seen > 0), dev_raw, np.nan), sigma=sig)

    def _report(self, state: CusumState, z: np.ndarray, observable: np.ndarray, raised: np.ndarray,
                cleared: np.ndarray) -> tuple[DistrictLeak, ...]:
        h = self.config.h
        mean = np.where(state.run > 0, state.leak_sum_kg_s / np.maximum(state.run, 1), 0.0)
        kg_s = np.maximum(mean, 0.0)
        m3h = kg_s / self.density_std_kg_m3 * 3600.0
        return tuple(
            DistrictLeak(d, float(z[i]), float(state.cusum[i]), float(state.cusum[i] / h),
                         float(kg_s[i]), float(m3h[i]), bool(state.alarm[i]), bool(raised[i]),
                         bool(cleared[i]), bool(observable[i]))
            for i, d in enumerate(self.districts))


def _fitted(n: np.ndarray, w: np.ndarray, y: np.ndarray) -> np.ndarray:
    """The part of y [R] or [R, D] that the columns n [R, K] explain, weighted least squares."""
    wn = w[:, None] * n
    return n @ (np.linalg.pinv(n.T @ wn) @ (wn.T @ y))


def district_signatures(sensitivity: np.ndarray, candidates: np.ndarray,
                        node_district: Sequence[str | None], zone_of_node: np.ndarray,
                        consumer_node: np.ndarray, consumer_demand_kg_s: np.ndarray,
                        flow_zones: Sequence[int]) -> tuple[list[str], np.ndarray]:
    """Each district's leak signature on the pressure rows and the zones' balance rows.

    Arguments: `sensitivity` [P, C] ∂p_sensor/∂q_node, Pa per kg/s, for the candidate nodes
    `candidates` [C] (node indices; `LeakLocator.sensitivity` and `.candidates`);
    `node_district` [n_nodes] each node's district (None: in none); `zone_of_node` [n_nodes];
    `consumer_node` [n_consumers] and `consumer_demand_kg_s` [n_consumers] (the twin's demand:
    its proportions inside a zone); `flow_zones` [F] the zones the twin scales to their metered
    inflow, each with one balance row (inflow − profile demand, kg/s) after the P pressure rows.

    Returns: (districts [D] sorted, signatures [P + F, D]): the mean over the district's
    candidate nodes of what a leak of 1 kg/s there leaves in the residuals of the live twin.
    """
    s = np.asarray(sensitivity, dtype=np.float64)
    cand = np.asarray(candidates, dtype=np.int64)
    zones = np.asarray(zone_of_node, dtype=np.int64)
    n_p = s.shape[0]
    n_zones = int(zones.max()) + 1 if len(zones) else 0
    flow_row = np.full(n_zones, -1, dtype=np.int64)
    for f, z in enumerate(flow_zones):
        flow_row[int(z)] = n_p + f
    # the demand-weighted mean column of each scaled zone (where the twin puts the leak's gas)
    col_of_node = np.full(len(zones), -1, dtype=np.int64)
    col_of_node[cand] = np.arange(len(cand))
    c_node = np.asarray(consumer_node, dtype=np.int64)
    demand = np.asarray(consumer_demand_kg_s, dtype=np.float64)
    col = col_of_node[c_node] if len(c_node) else np.zeros(0, dtype=np.int64)
    use = (col >= 0) & (demand > 0) & (flow_row[zones[c_node]] >= 0) if len(c_node) else col >= 0
    zone_total = np.bincount(zones[c_node[use]], weights=demand[use], minlength=n_zones)
    spread = np.zeros((n_p, n_zones))
    if use.any():
        weight = demand[use] / zone_total[zones[c_node[use]]]
        np.add.at(spread.T, zones[c_node[use]], (s[:, col[use]] * weight[None, :]).T)
    names = sorted({d for n in cand.tolist() if (d := node_district[n]) is not None})
    index = {d: i for i, d in enumerate(names)}
    out = np.zeros((n_p + len(flow_zones), len(names)))
    count = np.zeros(len(names))
    for j, n in enumerate(cand.tolist()):
        d = node_district[n]
        if d is None:
            continue
        i = index[d]
        out[:n_p, i] += s[:, j]
        row = flow_row[zones[n]]
        if row >= 0:
            out[:n_p, i] -= spread[:, zones[n]]
            out[row, i] += 1.0
        count[i] += 1
    return names, out / np.maximum(count, 1.0)[None, :]
