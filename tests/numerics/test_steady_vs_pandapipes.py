"""The twin's steady solve against pandapipes 0.16 on generated city networks.

Same friction law, gas (pandapipes' hgas at 10 °C) and compressibility model on both sides, the
squared-pressure form everywhere (pandapipes has no incompressible low-pressure form). Tolerances
are those of the issue: with Nikuradse 0.1 % of the network's total pressure drop (and in fact
far below a pascal), with Colebrook–White and Swamee–Jain 0.5 % of each level's drop —
pandapipes solves Colebrook to 1e-4 only.
"""

from __future__ import annotations

import numpy as np
import pytest

from tests.numerics._pandapipes import reference_gas, run_pandapipes, to_pandapipes
from twin_jax import FrictionLaw, NetworkDescription, Physics, Status, compile_network, solve_steady
from twin_jax.synthetic import synthetic_city

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore::FutureWarning")


def _both(desc: NetworkDescription, law: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(ours gauge Pa, pandapipes gauge Pa, zone per node) in our node order."""
    net = compile_network(desc, Physics(friction=FrictionLaw(law), low_pressure_incompressible=False))
    result = solve_steady(net, net.parameters())
    assert Status(int(result.status)) is Status.CONVERGED, Status(int(result.status)).message
    ours = np.asarray(result.state.pressure_pa_abs) - net.ambient_pa
    pp_net, junction = to_pandapipes(desc)
    run_pandapipes(pp_net, law)
    assert pp_net.converged
    ref = pp_net.res_junction.p_bar.to_numpy()[[junction[i] for i in net.node_ids]] * 1e5
    return ours, ref, net.zone_of_node


@pytest.mark.parametrize("n", [100, 1_000])
def test_looped_medium_pressure_several_infeeds_nikuradse(n: int) -> None:
    desc = synthetic_city(n, seed=n, sources=4, gas=reference_gas())
    ours, ref, _ = _both(desc, "nikuradse")
    drop = ref.max() - ref.min()
    assert drop > 1_000.0  # a network that actually carries gas
    assert np.abs(ours - ref).max() <= 1e-3 * drop
    assert np.abs(ours - ref).max() < 1e-3  # Pa: the same equations solved to rounding


@pytest.mark.slow
def test_ten_thousand_nodes_colebrook() -> None:
    desc = synthetic_city(10_000, seed=3, gas=reference_gas())
    ours, ref, _ = _both(desc, "colebrook")
    assert np.abs(ours - ref).max() <= 5e-3 * (ref.max() - ref.min())


@pytest.mark.parametrize("law", ["nikuradse", "colebrook", "swamee-jain"])
def test_medium_and_low_pressure_joined_by_regulators(law: str) -> None:
    desc = synthetic_city(400, seed=7, low_pressure_districts=3, district_nodes=60, gas=reference_gas())
    ours, ref, zone = _both(desc, law)
    total_drop = ref.max() - ref.min()
    if law == "nikuradse":
        assert np.abs(ours - ref).max() <= 1e-3 * total_drop
    levels = np.unique(zone)
    assert len(levels) == 4  # the medium-pressure grid and three districts
    for z in levels:
        at = zone == z
        level_drop = ref[at].max() - ref[at].min()
        assert level_drop > 10.0
        assert np.abs(ours[at] - ref[at]).max() <= 5e-3 * level_drop, f"zone {z}"
    # every district held at its regulator's set-point (3 kPa) at its head
    heads = [i for i, n in enumerate(desc.nodes) if n.id.endswith(".N0")]
    assert np.allclose(ours[heads], 3_000.0, atol=0.05)
