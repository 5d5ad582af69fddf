"""Value types of the demo town."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from erp.services.registry import AssetRecord

__all__ = ["DemoCrew", "DemoTown"]


@dataclass(frozen=True)
class DemoCrew:
    """A field crew: id, name, home area, vehicle, foreman and member usernames."""

    id: str
    name: str
    area_id: str
    vehicle: str
    foreman: str
    members: tuple[str, ...]


@dataclass(frozen=True)
class DemoTown:
    """The generated town: registry records (SI units), crews and the map centre (WGS84)."""

    records: list[AssetRecord]
    crews: list[DemoCrew]
    centre_lat: float
    centre_lon: float
