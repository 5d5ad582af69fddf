"""A small synthetic network written straight through the registry service, for e2e tests."""

from __future__ import annotations

import asyncio
import threading

from erp.adapters.db import create_engine, session_factory
from erp.services import audit, registry
from erp.services.registry import AssetRecord

__all__ = ["grid_records", "seed_grid"]


def grid_records(n_pipes: int, area: str = "T1") -> list[AssetRecord]:
    """A chain of `n_pipes` low-pressure PE pipes in one area (nodes N-0 … N-n)."""
    recs = [AssetRecord("area", area, {"name": f"Test {area}"})]
    for k in range(n_pipes + 1):
        recs.append(AssetRecord("node", f"{area}-N-{k:04d}", {
            "lat": 57.6 + k * 1e-4, "lon": 39.8, "pressure_level": "low", "area_id": area}))
    for k in range(n_pipes):
        recs.append(AssetRecord("pipe", f"{area}-P-{k:04d}", {
            "from_node_id": f"{area}-N-{k:04d}", "to_node_id": f"{area}-N-{k + 1:04d}",
            "length_m": 11.1, "inner_diameter_m": 0.0514, "material": "pe",
            "roughness_m": 7e-6, "pressure_level": "low", "area_id": area}))
    return recs


def seed_grid(database_url: str, n_pipes: int, area: str = "T1") -> None:
    """Write the grid (from any thread; runs its own event loop)."""

    async def run() -> None:
        engine = create_engine(database_url)
        try:
            async with session_factory(engine).begin() as s:
                await registry.bulk_import(s, grid_records(n_pipes, area),
                                           audit.Actor("test", "admin"))
        finally:
            await engine.dispose()

    t = threading.Thread(target=lambda: asyncio.run(run()))
    t.start()
    t.join()


def station_records(station_id: str = "GRP-01", area: str = "T1") -> list[AssetRecord]:
    """One GRP with its inlet and outlet nodes in `area` (the area itself included)."""
    return [
        AssetRecord("area", area, {"name": f"Test {area}"}),
        AssetRecord("node", f"{station_id}-IN", {"lat": 57.6, "lon": 39.8,
                                                "pressure_level": "medium", "area_id": area}),
        AssetRecord("node", f"{station_id}-OUT", {"lat": 57.6, "lon": 39.8,
                                                 "pressure_level": "low", "area_id": area}),
        AssetRecord("station", station_id, {
            "name": station_id, "kind": "GRP", "inlet_node_id": f"{station_id}-IN",
            "outlet_node_id": f"{station_id}-OUT", "inlet_level": "medium",
            "outlet_level": "low", "outlet_setpoint_pa_gauge": 2800, "capacity_m3h_std": 600,
            "lat": 57.6, "lon": 39.8, "area_id": area}),
    ]


def seed_stations(database_url: str, records: list[AssetRecord], *,
                  alarm_definitions: bool = False) -> None:
    """Migrate, write the records and their tag definitions (and, if asked, their default
    alarm definitions) from any thread."""
    from erp.adapters.db import migrate
    from erp.services import alarms, tags

    async def run() -> None:
        engine = create_engine(database_url)
        try:
            await migrate(engine)
            async with session_factory(engine).begin() as s:
                await registry.bulk_import(s, records, audit.Actor("test", "admin"))
                await tags.ensure_tags(s)
                if alarm_definitions:
                    await alarms.ensure_alarm_definitions(s)
        finally:
            await engine.dispose()

    t = threading.Thread(target=lambda: asyncio.run(run()))
    t.start()
    t.join()
