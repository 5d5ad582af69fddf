"""Gas properties and the atmosphere: what turns mass flows into pressure drops.

SI throughout: Pa (absolute unless a name says gauge), K, kg/m³, Pa·s. "Standard" means the
reference state the density is given at (by default 0 °C and 101.325 kPa, the "normal" state
of European practice and of pandapipes; Russian commercial metering uses 20 °C — convert the
density, not the equations).
"""

from __future__ import annotations

from dataclasses import dataclass

import jax.numpy as jnp

__all__ = ["GRAVITY_M_S2", "GasProperties", "ambient_pressure_pa"]

GRAVITY_M_S2 = 9.81
_SEA_LEVEL_PRESSURE_PA = 101_325.0
_SEA_LEVEL_TEMPERATURE_K = 288.15
_LAPSE_RATE_K_PER_M = 0.0065
_BAROMETRIC_EXPONENT = 5.255


@dataclass(frozen=True)
class GasProperties:
    """Natural gas as the solver sees it: an isothermal real gas with a linear Z(p).

    Defaults are pandapipes' "hgas" at 0 °C (its `lgas`/`hgas` tables), so a comparison needs
    no tuning; a utility sets its own gas quality from the laboratory passport.
    """

    density_std_kg_m3: float = 0.7329356
    """Density at the standard state below."""
    viscosity_pa_s: float = 1.0407e-5
    """Dynamic viscosity at the flowing temperature."""
    temperature_k: float = 283.15
    """Flowing gas temperature (isothermal model); the live twin sets it from the ground."""
    compressibility_slope_per_pa: float = -2.2e-8
    """Z = 1 + slope · p_abs: pandapipes' linear model (−0.0022 per bar). 0 is an ideal gas."""
    standard_pressure_pa: float = 101_325.0
    standard_temperature_k: float = 273.15

    def compressibility(self, p_abs_pa: jnp.ndarray) -> jnp.ndarray:
        """Z at absolute pressure `p_abs_pa` (Pa)."""
        return 1.0 + self.compressibility_slope_per_pa * p_abs_pa

    def density_kg_m3(self, p_abs_pa: jnp.ndarray, temperature_k: jnp.ndarray | float) -> jnp.ndarray:
        """Density at absolute pressure (Pa) and temperature (K)."""
        z = self.compressibility(p_abs_pa)
        return (self.density_std_kg_m3 * p_abs_pa * self.standard_temperature_k
                / (self.standard_pressure_pa * temperature_k * z))


def ambient_pressure_pa(elevation_m: jnp.ndarray) -> jnp.ndarray:
    """Atmospheric pressure (Pa) at `elevation_m` above sea level: the barometric formula.

    Gauge pressures are taken against it, so a low-pressure network's gauge pressure rises
    uphill by (ρ_air − ρ_gas)·g·Δz, as it does in the street.
    """
    return _SEA_LEVEL_PRESSURE_PA * (
        1.0 - _LAPSE_RATE_K_PER_M * elevation_m / _SEA_LEVEL_TEMPERATURE_K) ** _BAROMETRIC_EXPONENT
