"""The demo town generator: lays out districts on a grid of tiles around the centre, the
supply side around them, and the crews.

The town is a 4 × 4 arrangement of ~2.2 km tiles around the centre of Yaroslavl with the
south-western and north-eastern tiles left out (the GRS stands in the south-western gap): 14
low-pressure districts. The four inner tiles and four outer ones are blocks of flats, four are
mixed and two are private housing. Each district draws from its own random stream
(`Random(f"{seed}:district:{n}")`), so the town is the same for the same seed.
"""

from __future__ import annotations

import datetime as dt
import random

from erp.demo_town._catalogue import CREW_NAMES, DISTRICT_NAMES
from erp.demo_town._district import DistrictSpec, build_district
from erp.demo_town._geo import CENTRE_LAT, CENTRE_LON
from erp.demo_town._medium import AREA as MP_AREA
from erp.demo_town._medium import build_medium
from erp.demo_town._model import DemoCrew, DemoTown
from erp.demo_town._plan import IdMint, SerialMint, TownPlan

__all__ = ["DEMO_EPOCH", "generate_demo_town"]

DEMO_EPOCH = dt.date(2027, 1, 1)  # "today" of the demo: verification dates count from here
_TILE_M = 2_200.0
_STREET_MARGIN_M = 90.0
_LEFT_OUT = {(0, 0), (3, 3)}
_TARGETS = {"apartments": (1_700, 2_200), "mixed": (700, 1_000), "private": (220, 360)}
_PLATE_LETTERS = "ABEKMHOPCTYX"  # letters of Russian plates that look Latin


def _boundaries(rng: random.Random) -> list[float]:
    return [(k - 2) * _TILE_M + (rng.uniform(-150.0, 150.0) if 0 < k < 4 else 0.0)
            for k in range(5)]


def _crews(rng: random.Random, district_ids: list[str]) -> list[DemoCrew]:
    picked = iter(rng.sample(district_ids, len(CREW_NAMES)))
    areas = [MP_AREA if "MP" in name or "athodic" in name else next(picked) for name in CREW_NAMES]
    crews, member = [], 0
    for k, (name, area) in enumerate(zip(CREW_NAMES, areas, strict=True), start=1):
        size = rng.randint(2, 3)
        members = tuple(f"crew{member + i}" for i in range(1, size + 1))
        member += size
        letters = "".join(rng.choice(_PLATE_LETTERS) for _ in range(3))
        model = rng.choice(("GAZ-27057", "GAZ-27057", "UAZ-390995", "GAZ-A32R32"))
        plate = f"{letters[0]}{rng.randint(100, 999)}{letters[1:]}76"
        crews.append(DemoCrew(f"CR-{k}", name, area, f"{model} {plate}", f"foreman{k}", members))
    return crews


def generate_demo_town(seed: int = 42, *, epoch: dt.date = DEMO_EPOCH) -> DemoTown:
    """A deterministic city distribution network for `seed`, as registry records.

    `epoch` is the demo's "today": meter verification dates fall in the ten years after it.
    Same seed and epoch, identical records.
    """
    rng = random.Random(f"{seed}:town")
    plan = TownPlan()
    ids = IdMint()
    serials = SerialMint(f"{seed}:serials")
    xb, yb = _boundaries(rng), _boundaries(rng)
    tiles = [(i, j) for j in range(4) for i in range(4) if (i, j) not in _LEFT_OUT]
    inner = [t for t in tiles if t[0] in (1, 2) and t[1] in (1, 2)]
    outer_kinds = ["apartments"] * 4 + ["mixed"] * 4 + ["private"] * 2
    rng.shuffle(outer_kinds)
    kinds = iter(outer_kinds)
    kind_of = {t: "apartments" if t in inner else next(kinds) for t in tiles}
    names = rng.sample(DISTRICT_NAMES, len(tiles))
    flats_districts = [n for n, t in enumerate(tiles) if kind_of[t] == "apartments"]
    critical_at = dict(zip(rng.sample(flats_districts, 3), ("hospital", "school", "kindergarten"),
                           strict=True))
    plan.areas[MP_AREA] = "Medium-pressure network and GRS"
    specs = []
    for n, (i, j) in enumerate(tiles):
        area = f"D{n + 1:02d}"
        plan.areas[area] = names[n]
        specs.append(DistrictSpec(
            n + 1, area, names[n], kind_of[(i, j)],
            xb[i] + _STREET_MARGIN_M, xb[i + 1] - _STREET_MARGIN_M,
            yb[j] + _STREET_MARGIN_M, yb[j + 1] - _STREET_MARGIN_M,
            rng.randint(*_TARGETS[kind_of[(i, j)]]),
            (critical_at[n],) if n in critical_at else ()))
    districts = [build_district(plan, spec, ids, serials,
                                random.Random(f"{seed}:district:{spec.number}"), epoch)
                 for spec in specs]
    build_medium(plan, districts, xb, yb, ids, serials, random.Random(f"{seed}:medium"), epoch)
    crews = _crews(random.Random(f"{seed}:crews"), [s.area_id for s in specs])
    return DemoTown(plan.to_records(), crews, CENTRE_LAT, CENTRE_LON)
