"""Darcy friction: the momentum term λ·ṁ·|ṁ| of a pipe, safe at zero flow and differentiable.

Every law returns `λ(Re)·ṁ·|ṁ|` rather than λ alone: in laminar flow λ = 64/Re grows without
bound as the flow stops, but the product stays linear in ṁ (Hagen–Poiseuille), which is what
keeps the Newton matrix regular in dead ends and in loops whose flow passes through zero.

Laws (the `FrictionLaw` names are what `gasops twin solve --friction` accepts):

- `colebrook`: Colebrook–White, 1/√λ = −2·log10(2.51/(Re·√λ) + k/(3.71·D)), solved here by a
  few Newton steps on x = 1/√λ started from Swamee–Jain (converged to rounding in 3 steps for
  Re ≥ 2000). Laminar 64/Re wherever it is larger.
- `swamee-jain`: the explicit approximation 0.25/log10(k/(3.7·D) + 5.74/Re^0.9)²; laminar 64/Re
  wherever larger.
- `nikuradse`: fully rough λ = 1/(2·log10(D/k) + 1.14)² plus 64/Re — pandapipes' default law,
  the same sum it uses, which makes it the law of exact comparisons.
- `sp42-101`: SP 42-101-2003 (Russian design code, after Altshul): λ = 0.11·(k/D + 68/Re)^0.25
  in turbulent flow, 64/Re laminar, whichever is larger.

Colebrook's and Swamee–Jain's turbulent branch is evaluated at Re ≥ 2000 only (below it Colebrook
has no root); the larger-of rule joins it continuously to the laminar line.
"""

from __future__ import annotations

from enum import StrEnum

import jax.numpy as jnp

__all__ = ["FrictionLaw", "momentum_term", "momentum_term_and_slope"]

_LN10 = 2.302585092994046
_RE_TURBULENT_MIN = 2000.0
_COLEBROOK_STEPS = 3


class FrictionLaw(StrEnum):
    """A friction-factor law (see the module docstring)."""

    COLEBROOK = "colebrook"
    SWAMEE_JAIN = "swamee-jain"
    NIKURADSE = "nikuradse"
    SP42_101 = "sp42-101"


def _swamee_jain(re: jnp.ndarray, rel_roughness: jnp.ndarray) -> jnp.ndarray:
    return 0.25 / jnp.log10(rel_roughness / 3.7 + 5.74 / re ** 0.9) ** 2


def _colebrook(re: jnp.ndarray, rel_roughness: jnp.ndarray) -> jnp.ndarray:
    x = 1.0 / jnp.sqrt(_swamee_jain(re, rel_roughness))
    for _ in range(_COLEBROOK_STEPS):  # a fixed unrolled count: cheap, and exact to rounding
        inner = 2.51 * x / re + rel_roughness / 3.71
        f = x + 2.0 * jnp.log10(inner)
        df = 1.0 + 2.0 / _LN10 * (2.51 / re) / inner
        x = x - f / df
    return 1.0 / (x * x)


def momentum_term(law: FrictionLaw, mass_flow_kg_s: jnp.ndarray, diameter_m: jnp.ndarray,
                  roughness_m: jnp.ndarray, viscosity_pa_s: float | jnp.ndarray) -> jnp.ndarray:
    """λ(Re)·ṁ·|ṁ| per pipe, in kg²/s².

    Arguments (all shape (n,)): `mass_flow_kg_s` signed flow, `diameter_m` inner diameter,
    `roughness_m` absolute roughness; `viscosity_pa_s` dynamic viscosity (scalar or (n,)).
    Returns shape (n,), with the sign of the flow.
    """
    area = jnp.pi * diameter_m ** 2 / 4.0
    m_abs = jnp.abs(mass_flow_kg_s)
    laminar = 64.0 * viscosity_pa_s * area / diameter_m * mass_flow_kg_s  # (64/Re)·ṁ·|ṁ|
    rel = roughness_m / diameter_m
    if law is FrictionLaw.NIKURADSE:
        rough = 1.0 / (2.0 * jnp.log10(diameter_m / roughness_m) + 1.14) ** 2
        return laminar + rough * mass_flow_kg_s * m_abs
    re = m_abs * diameter_m / (viscosity_pa_s * area)
    re_t = jnp.maximum(re, _RE_TURBULENT_MIN)
    if law is FrictionLaw.COLEBROOK:
        lam_t = _colebrook(re_t, rel)
    elif law is FrictionLaw.SWAMEE_JAIN:
        lam_t = _swamee_jain(re_t, rel)
    elif law is FrictionLaw.SP42_101:
        lam_t = 0.11 * (rel + 68.0 / re_t) ** 0.25
    else:  # pragma: no cover - StrEnum is closed
        raise ValueError(f"unknown friction law {law!r}")
    turbulent = lam_t * mass_flow_kg_s * m_abs
    return jnp.where(jnp.abs(turbulent) > jnp.abs(laminar), turbulent, laminar)


def momentum_term_and_slope(law: FrictionLaw, mass_flow_kg_s: jnp.ndarray, diameter_m: jnp.ndarray,
                            roughness_m: jnp.ndarray, viscosity_pa_s: float | jnp.ndarray
                            ) -> tuple[jnp.ndarray, jnp.ndarray]:
    """(λ·ṁ·|ṁ|, its derivative in ṁ), in closed form: the Newton matrix's entries.

    Same law and arguments as `momentum_term`, whose value this repeats exactly; the slope is
    what `jax.grad` of it would give (tests check one against the other), without the reverse
    pass. Colebrook's dλ/dRe comes from its implicit equation at the converged root.
    """
    m = mass_flow_kg_s
    area = jnp.pi * diameter_m ** 2 / 4.0
    m_abs = jnp.abs(m)
    c_lam = 64.0 * viscosity_pa_s * area / diameter_m
    laminar, laminar_slope = c_lam * m, c_lam * jnp.ones_like(m)
    rel = roughness_m / diameter_m
    if law is FrictionLaw.NIKURADSE:
        rough = 1.0 / (2.0 * jnp.log10(diameter_m / roughness_m) + 1.14) ** 2
        return laminar + rough * m * m_abs, laminar_slope + 2.0 * rough * m_abs
    re_per_kg_s = diameter_m / (viscosity_pa_s * area)
    re = m_abs * re_per_kg_s
    turbulent_re = re > _RE_TURBULENT_MIN
    re_t = jnp.maximum(re, _RE_TURBULENT_MIN)
    if law is FrictionLaw.COLEBROOK:
        x = 1.0 / jnp.sqrt(_swamee_jain(re_t, rel))
        for _ in range(_COLEBROOK_STEPS):
            inner = 2.51 * x / re_t + rel / 3.71
            f = x + 2.0 * jnp.log10(inner)
            df = 1.0 + 2.0 / _LN10 * (2.51 / re_t) / inner
            x = x - f / df
        lam = 1.0 / (x * x)
        inner = 2.51 * x / re_t + rel / 3.71
        g_x = 1.0 + 2.0 / _LN10 * (2.51 / re_t) / inner
        g_re = 2.0 / _LN10 * (-2.51 * x / re_t ** 2) / inner
        dlam_dre = -2.0 / x ** 3 * (-g_re / g_x)
    elif law is FrictionLaw.SWAMEE_JAIN:
        arg = rel / 3.7 + 5.74 / re_t ** 0.9
        log_arg = jnp.log10(arg)
        lam = 0.25 / log_arg ** 2
        dlog_dre = (-0.9 * 5.74 * re_t ** -1.9) / (arg * _LN10)
        dlam_dre = -0.5 / log_arg ** 3 * dlog_dre
    elif law is FrictionLaw.SP42_101:
        base = rel + 68.0 / re_t
        lam = 0.11 * base ** 0.25
        dlam_dre = 0.11 * 0.25 * base ** -0.75 * (-68.0 / re_t ** 2)
    else:  # pragma: no cover - StrEnum is closed
        raise ValueError(f"unknown friction law {law!r}")
    turbulent = lam * m * m_abs
    slope_t = 2.0 * lam * m_abs + jnp.where(turbulent_re, dlam_dre * re_per_kg_s * m * m, 0.0)
    use_t = jnp.abs(turbulent) > jnp.abs(laminar)
    return jnp.where(use_t, turbulent, laminar), jnp.where(use_t, slope_t, laminar_slope)
