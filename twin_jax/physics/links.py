"""Branch laws: the residual F(ṁ, p_from, p_to) = 0 of each pipe, valve and regulator, in Pa.

One pure function per kind; `solve.py` differentiates them with `jax.linearize`, so the Newton
matrix and the implicit gradients use the exact derivatives of what is written here.
"""

from __future__ import annotations

import jax.numpy as jnp

from twin_jax.physics.friction import FrictionLaw, momentum_term, momentum_term_and_slope
from twin_jax.physics.gas import GRAVITY_M_S2, GasProperties

__all__ = ["REGULATOR_DROOP_PA_PER_KG_S", "pipe_residual", "pipe_residual_partials", "regulator_limit",
           "regulator_limit_slope", "regulator_residual", "regulator_residual_partials", "smooth_max"]

REGULATOR_DROOP_PA_PER_KG_S = 1e-3
"""A regulator's outlet falls this much per kg/s it passes: a real pilot regulator's droop,
made tiny. It gives the regulator equation a flow derivative, so an active regulator enters the
Newton matrix like a fixed pressure behind a very small resistance."""
_KINK_WIDTH_PA = 1e-8
"""Width of the smoothed corners (open ↔ regulating ↔ shut); far below any tolerance."""


def smooth_max(x: jnp.ndarray, width: float = _KINK_WIDTH_PA) -> jnp.ndarray:
    """max(x, 0) with a corner rounded over `width`: differentiable everywhere."""
    return 0.5 * (x + jnp.sqrt(x * x + width * width))


def smooth_max_slope(x: jnp.ndarray, width: float = _KINK_WIDTH_PA) -> jnp.ndarray:
    """d smooth_max / dx."""
    return 0.5 * (1.0 + x / jnp.sqrt(x * x + width * width))


def pipe_residual(
    m: jnp.ndarray, p_from: jnp.ndarray, p_to: jnp.ndarray, *, law: FrictionLaw, gas: GasProperties,
    temperature_k: jnp.ndarray, length_m: jnp.ndarray, diameter_m: jnp.ndarray,
    roughness_m: jnp.ndarray, zeta: jnp.ndarray, dz_m: jnp.ndarray | None,
    incompressible: jnp.ndarray | None, reference_density: jnp.ndarray,
) -> jnp.ndarray:
    """Darcy–Weisbach residual of pipes (and open valves, with length 0), Pa.

    Compressible (squared-pressure) form, isothermal, absolute pressures:
    p₁ − p₂ + ρ̄·g·(z₁ − z₂) − Z(p̄)·p_n·T·(λ·L/D + ζ)·ṁ|ṁ| / (T_n·ρ_n·A²·(p₁ + p₂)) = 0,
    which is p₁² − p₂² = (λL/D + ζ)·ṁ|ṁ|·Z·R·T/A² divided by p₁ + p₂ (pandapipes' form, with p̄ the
    mean pressure of the squared law). Incompressible form (low pressure): constant density
    ρ_ref, p₁ − p₂ + ρ_ref·g·(z₁ − z₂) − (λL/D + ζ)·ṁ|ṁ|/(2·ρ_ref·A²) = 0.

    Arguments are shape (n,) except `temperature_k` (scalar); `dz_m` = z_from − z_to, None on
    flat ground; `incompressible` a mask, None when no pipe uses that form (both decided at
    compile time, so a flat all-compressible network pays for neither).
    """
    area = jnp.pi * diameter_m ** 2 / 4.0
    lam_mm = momentum_term(law, m, diameter_m, roughness_m, gas.viscosity_pa_s)
    friction = lam_mm * length_m / diameter_m + zeta * m * jnp.abs(m)
    p_sum = p_from + p_to
    p_mean = 2.0 / 3.0 * (p_from * p_from + p_from * p_to + p_to * p_to) / p_sum
    z = gas.compressibility(p_mean)
    c = (gas.standard_pressure_pa * temperature_k
         / (gas.standard_temperature_k * gas.density_std_kg_m3 * area ** 2))
    compressible = p_from - p_to - c * z * friction / p_sum
    if dz_m is not None:
        rho_mean = 0.5 * (gas.density_kg_m3(p_from, temperature_k) + gas.density_kg_m3(p_to, temperature_k))
        compressible = compressible + rho_mean * GRAVITY_M_S2 * dz_m
    if incompressible is None:
        return compressible
    incompress = p_from - p_to - friction / (2.0 * reference_density * area ** 2)
    if dz_m is not None:
        incompress = incompress + reference_density * GRAVITY_M_S2 * dz_m
    return jnp.where(incompressible, incompress, compressible)


def regulator_residual(
    m: jnp.ndarray, p_in: jnp.ndarray, p_out: jnp.ndarray, *, setpoint_pa_abs: jnp.ndarray,
    boost: jnp.ndarray,
) -> jnp.ndarray:
    """Regulator residual, Pa: droop·ṁ = max(0, min(set-point, p_in) − p_out).

    Regulating: outlet at the set-point; inlet too low: fully open, outlet ≈ inlet; outlet
    held higher from elsewhere: shut, no reverse flow. A `boost` link (compressor) targets the
    set-point whatever the inlet.
    """
    limit = regulator_limit(p_in, setpoint_pa_abs=setpoint_pa_abs, boost=boost)
    return REGULATOR_DROOP_PA_PER_KG_S * m - smooth_max(limit - p_out)


def regulator_limit(p_in: jnp.ndarray, *, setpoint_pa_abs: jnp.ndarray, boost: jnp.ndarray) -> jnp.ndarray:
    """The highest outlet pressure a regulator can hold: min(set-point, inlet); a boost link's set-point."""
    return jnp.where(boost, setpoint_pa_abs, setpoint_pa_abs - smooth_max(setpoint_pa_abs - p_in))


def regulator_limit_slope(p_in: jnp.ndarray, *, setpoint_pa_abs: jnp.ndarray,
                          boost: jnp.ndarray) -> jnp.ndarray:
    """d(min(set-point, p_in))/dp_in of `regulator_residual`: 1 passing through, 0 regulating."""
    return jnp.where(boost, 0.0, smooth_max_slope(setpoint_pa_abs - p_in))


def pipe_residual_partials(
    m: jnp.ndarray, p_from: jnp.ndarray, p_to: jnp.ndarray, *, law: FrictionLaw, gas: GasProperties,
    temperature_k: jnp.ndarray, length_m: jnp.ndarray, diameter_m: jnp.ndarray,
    roughness_m: jnp.ndarray, zeta: jnp.ndarray, dz_m: jnp.ndarray | None,
    incompressible: jnp.ndarray | None, reference_density: jnp.ndarray,
) -> tuple[jnp.ndarray, jnp.ndarray, jnp.ndarray, jnp.ndarray]:
    """`pipe_residual` and its partials (∂F/∂ṁ, ∂F/∂p_from, ∂F/∂p_to), in closed form.

    One forward pass instead of a reverse-mode gradient: the Newton iteration's largest cost
    after the LU. Arguments as `pipe_residual`; tests compare the partials with `jax.grad`.
    """
    area = jnp.pi * diameter_m ** 2 / 4.0
    lam_mm, lam_mm_slope = momentum_term_and_slope(law, m, diameter_m, roughness_m, gas.viscosity_pa_s)
    m_abs = jnp.abs(m)
    friction = lam_mm * length_m / diameter_m + zeta * m * m_abs
    friction_slope = lam_mm_slope * length_m / diameter_m + 2.0 * zeta * m_abs
    a, b = p_from, p_to
    p_sum = a + b
    p_mean = 2.0 / 3.0 * (a * a + a * b + b * b) / p_sum
    dmean_da = 2.0 / 3.0 * (a * a + 2.0 * a * b) / p_sum ** 2
    dmean_db = 2.0 / 3.0 * (b * b + 2.0 * a * b) / p_sum ** 2
    z = gas.compressibility(p_mean)
    z_slope = gas.compressibility_slope_per_pa
    c = (gas.standard_pressure_pa * temperature_k
         / (gas.standard_temperature_k * gas.density_std_kg_m3 * area ** 2))
    loss = c * z * friction / p_sum
    f = a - b - loss
    f_m = -c * z * friction_slope / p_sum
    f_a = 1.0 - c * friction * (z_slope * dmean_da / p_sum - z / p_sum ** 2)
    f_b = -1.0 - c * friction * (z_slope * dmean_db / p_sum - z / p_sum ** 2)
    if dz_m is not None:
        k = gas.density_std_kg_m3 * gas.standard_temperature_k / (gas.standard_pressure_pa * temperature_k)
        za, zb = gas.compressibility(a), gas.compressibility(b)
        rho_mean = 0.5 * k * (a / za + b / zb)
        f = f + rho_mean * GRAVITY_M_S2 * dz_m
        # dρ/dp = k·(Z − p·Z')/Z² = k/Z² for Z = 1 + s·p
        f_a = f_a + 0.5 * k / (za * za) * GRAVITY_M_S2 * dz_m
        f_b = f_b + 0.5 * k / (zb * zb) * GRAVITY_M_S2 * dz_m
    if incompressible is None:
        return f, f_m, f_a, f_b
    scale = 1.0 / (2.0 * reference_density * area ** 2)
    f_i = a - b - friction * scale
    if dz_m is not None:
        f_i = f_i + reference_density * GRAVITY_M_S2 * dz_m
    return (jnp.where(incompressible, f_i, f), jnp.where(incompressible, -friction_slope * scale, f_m),
            jnp.where(incompressible, 1.0, f_a), jnp.where(incompressible, -1.0, f_b))


def regulator_residual_partials(
    m: jnp.ndarray, p_in: jnp.ndarray, p_out: jnp.ndarray, *, setpoint_pa_abs: jnp.ndarray,
    boost: jnp.ndarray,
) -> tuple[jnp.ndarray, jnp.ndarray, jnp.ndarray, jnp.ndarray]:
    """`regulator_residual` and its partials (∂F/∂ṁ, ∂F/∂p_in, ∂F/∂p_out), in closed form."""
    limit = regulator_limit(p_in, setpoint_pa_abs=setpoint_pa_abs, boost=boost)
    x = limit - p_out
    slope = smooth_max_slope(x)
    limit_slope = regulator_limit_slope(p_in, setpoint_pa_abs=setpoint_pa_abs, boost=boost)
    f = REGULATOR_DROOP_PA_PER_KG_S * m - smooth_max(x)
    return f, jnp.full_like(m, REGULATOR_DROOP_PA_PER_KG_S), -slope * limit_slope, slope
