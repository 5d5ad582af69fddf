"""The demo town: a realistic, deterministic city gas distribution network around Yaroslavl.

One GRS feeds a looped steel medium-pressure ring; 14 GRP/ShRP feed low-pressure PE districts
on a street grid (shortest-path trees with a few loops), sized so that every node keeps at
least 1.8 kPa gauge at the winter design peak; ~20,000 metered service points, a dozen
industrial consumers with volume correctors, critical consumers, SKZ stations along the steel
mains and field crews. `generate_demo_town(seed)` returns registry records that pass
`erp.services.registry.bulk_import`; the `check_*` functions recompute the hydraulics from the
records.
"""

from erp.demo_town._build import DEMO_EPOCH as DEMO_EPOCH
from erp.demo_town._build import generate_demo_town as generate_demo_town
from erp.demo_town._checks import DistrictHydraulics as DistrictHydraulics
from erp.demo_town._checks import MediumHydraulics as MediumHydraulics
from erp.demo_town._checks import check_low_pressure as check_low_pressure
from erp.demo_town._checks import check_medium_pressure as check_medium_pressure
from erp.demo_town._checks import district_design_flows as district_design_flows
from erp.demo_town._checks import district_hydraulics as district_hydraulics
from erp.demo_town._checks import medium_hydraulics as medium_hydraulics
from erp.demo_town._model import DemoCrew as DemoCrew
from erp.demo_town._model import DemoTown as DemoTown

__all__ = [
    "DEMO_EPOCH",
    "DemoCrew",
    "DemoTown",
    "DistrictHydraulics",
    "MediumHydraulics",
    "check_low_pressure",
    "check_medium_pressure",
    "district_design_flows",
    "district_hydraulics",
    "generate_demo_town",
    "medium_hydraulics",
]
