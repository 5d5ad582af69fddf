"""The demo's hidden hydraulic plant: the registry network solved, perturbed, with leaks."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path

import pytest

from erp.adapters.db import create_engine, session_factory
from server.plant import SimulatedPlant
from tests.e2e._network import seed_stations
from tests.e2e.test_twin_live import town


def _run(coro_fn) -> object:
    box: dict[str, object] = {}
    t = threading.Thread(target=lambda: box.setdefault("r", asyncio.run(coro_fn())))
    t.start()
    t.join()
    return box["r"]


def test_plant_feeds_stations_and_leaks_show_in_the_inflow(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'gasops.sqlite3'}"
    seed_stations(url, town())  # with IND-1's corrector M-IND-1

    async def scenario() -> dict[str, object]:
        engine = create_engine(url)
        plant = SimulatedPlant(session_factory(engine), period_s=0.05, leak_every_h=1e-9,
                               air_temperature_c=-10.0)
        try:
            await plant.start()
            for _ in range(600):
                if plant.station("GRP-1") is not None and plant.truth():
                    break
                await asyncio.sleep(0.05)
            first, n_first = plant.station("GRS-1"), len(plant.truth())
            for _ in range(600):  # five more leaks, ~2.5 % of the demand at least
                if len(plant.truth()) >= n_first + 5:
                    break
                await asyncio.sleep(0.05)
            await asyncio.sleep(0.2)
            later = plant.station("GRS-1")
            return {"grp": plant.station("GRP-1"), "first": first, "later": later,
                    "corrector": plant.meter("M-IND-1"),
                    "leaks": plant.truth()}
        finally:
            await plant.stop()
            await engine.dispose()

    out = _run(scenario)
    flow, p_in, p_out = out["grp"]
    assert flow > 1.0  # m³/h: the street's households take gas at −10 °C
    assert p_out == pytest.approx(2_800.0, abs=1.0)  # the regulator holds the registry set-point
    assert 250_000.0 < p_in < 300_000.0  # the medium-pressure side, below the GRS outlet
    p_abs, q = out["corrector"]  # the industrial consumer's corrector: its node, its demand
    assert 300_000.0 < p_abs < 401_325.0 and q > 1.0  # absolute, below the GRS outlet
    assert out["leaks"], "a leak should have started (one per period asked for)"
    assert out["leaks"][0].rate_kg_s > 0
    # the GRS now also feeds the leaks (the town-wide demand wanders by at most ±5 %)
    assert out["later"][0] > out["first"][0] * 0.96
