"""Catalogue of the demo town: standard pipe sizes, device models and made-up names."""

from __future__ import annotations

from typing import NamedTuple

__all__ = [
    "COMMERCIAL_METERS",
    "CORRECTORS",
    "CREW_NAMES",
    "DISTRICT_NAMES",
    "HOUSEHOLD_METERS_LARGE",
    "HOUSEHOLD_METERS_SMALL",
    "INDUSTRIAL_NAMES",
    "INTERNAL_METERS",
    "PE_ROUGHNESS_M",
    "PE_SDR11_SIZES",
    "STEEL_ROUGHNESS_M",
    "STEEL_SIZES",
    "STREET_NAMES",
    "PipeSize",
]


class PipeSize(NamedTuple):
    """A standard pipe: outside diameter × wall (mm, as ordered) and bore (m)."""

    label: str
    inner_diameter_m: float


def _pe(od_mm: float, wall_mm: float) -> PipeSize:
    return PipeSize(f"PE100 SDR11 {od_mm:g}x{wall_mm:g}", round((od_mm - 2 * wall_mm) / 1000, 4))


def _steel(od_mm: float, wall_mm: float) -> PipeSize:
    return PipeSize(f"steel {od_mm:g}x{wall_mm:g}", round((od_mm - 2 * wall_mm) / 1000, 4))


# The sizes a utility keeps in stock (GOST R 58121 SDR 11; GOST 10704 electric-welded steel).
PE_SDR11_SIZES: tuple[PipeSize, ...] = (
    _pe(32, 3.0), _pe(40, 3.7), _pe(63, 5.8), _pe(90, 8.2), _pe(110, 10.0), _pe(160, 14.6),
    _pe(225, 20.5), _pe(315, 28.6),
)
STEEL_SIZES: tuple[PipeSize, ...] = (
    _steel(159, 4.5), _steel(219, 6.0), _steel(273, 7.0), _steel(325, 8.0), _steel(377, 9.0),
)
PE_ROUGHNESS_M = 0.007e-3
STEEL_ROUGHNESS_M = 0.1e-3

DISTRICT_NAMES: tuple[str, ...] = (
    "Bragino", "Zavolzhye", "Pyaterka", "Krasny Perekop", "Dyadkovo", "Sokol", "Tveritsy",
    "Lipovaya Gora", "Neftestroy", "Suzdalka", "Yakovlevskoye", "Kresty", "Parfenovka",
    "Chelyuskintsev", "Nikitino", "Peremilovo",
)
STREET_NAMES: tuple[str, ...] = (
    "ul. Sovetskaya", "ul. Pervomayskaya", "ul. Sadovaya", "ul. Lesnaya", "ul. Shkolnaya",
    "ul. Molodezhnaya", "ul. Tsentralnaya", "ul. Polevaya", "ul. Zarechnaya", "ul. Mira",
    "ul. Kirova", "ul. Komsomolskaya", "ul. Oktyabrskaya", "ul. Naberezhnaya", "ul. Stroiteley",
    "ul. Rabochaya", "ul. Gagarina", "ul. Pushkina", "ul. Chekhova", "ul. Lermontova",
    "ul. Tolstogo", "ul. Gogolya", "ul. Nekrasova", "ul. Lomonosova", "ul. Mendeleeva",
    "ul. Vokzalnaya", "ul. Zavodskaya", "ul. Rechnaya", "ul. Ozernaya", "ul. Berezovaya",
    "ul. Lipovaya", "ul. Klenovaya", "ul. Sosnovaya", "ul. Vishnevaya", "ul. Yablonevaya",
    "ul. Solnechnaya", "ul. Vesennyaya", "ul. Letnyaya", "ul. Yuzhnaya", "ul. Severnaya",
    "ul. Vostochnaya", "ul. Zapadnaya", "ul. Novaya", "ul. Kooperativnaya", "per. Elektrichesky",
    "pr. Lenina", "pr. Oktyabrya", "pr. Tolbukhina", "pr. Frunze", "pr. Dzerzhinskogo",
)
INDUSTRIAL_NAMES: tuple[str, ...] = (
    "Volga Brewery", "Kotorosl Bread Factory No. 1", "Yaroslavl Paint Works",
    "Glass Container Plant", "Dairy Combine", "Brick Works No. 2", "Meat Processing Plant",
    "Greenhouse Complex 'Severny'",
    "Iron Foundry", "Asphalt Concrete Plant", "Linen Mill", "Industrial Laundry 'Chistota'",
    "Confectionery Factory", "Ceramic Tile Plant",
)
CREW_NAMES: tuple[str, ...] = (
    "Linear crew MP network", "Emergency crew 1", "Emergency crew 2", "Service crew North",
    "Service crew South", "Cathodic protection crew",
)

# Residential smart meters by size: (model, serial prefix).
HOUSEHOLD_METERS_SMALL: tuple[tuple[str, str], ...] = (
    ("Elehant SVG-1.6", "EL16"), ("Betar SGBM-1.6", "BT16"), ("Grand-1.6", "GR16"),
)
HOUSEHOLD_METERS_LARGE: tuple[tuple[str, str], ...] = (
    ("Betar SGBM-4", "BT40"), ("Elehant SVK G4", "EL40"), ("Grand-6", "GR60"),
)
COMMERCIAL_METERS: tuple[tuple[str, str], ...] = (
    ("Grand-10", "GR10"), ("Elehant SVK G10", "EL10"), ("Betar SGBM-6", "BT60"),
)
CORRECTORS: tuple[tuple[str, str], ...] = (
    ("Elster EK270", "EK27"), ("Vympel BK-G25", "VBK2"), ("Logika SPG-742", "SPG7"),
    ("Irvis-RS4-Ultra", "IRV4"),
)
INTERNAL_METERS: dict[str, tuple[str, str]] = {
    "internal_gas": ("Betar SGBM-4", "BTIG"),
    "internal_electricity": ("Mercury 230 ART", "ME23"),
    "internal_water": ("Pulsar DU15", "PU15"),
    "internal_heat": ("Logika SPT-943", "SPT9"),
}
