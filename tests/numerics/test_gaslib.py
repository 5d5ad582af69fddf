"""GasLib-11 and GasLib-40 through the registry mapping, solved by the twin and by pandapipes 0.16.

The set-up is the one `server/twin_model.py` documents for GasLib files: exits take their
nominated flows (the `.scn` next to the `.net`), every entry is a fixed-pressure slack (its
nominated upper pressure bound, GasLib-40: 80 barg; GasLib-11 nominates none, so its nodes'
pressureMax, 70 bar absolute), every valve open. Compressor stations: GasLib-11 both as boost
regulators at their pressureOutMax (pandapipes: `create_pressure_control`, an ideal controller)
and all in bypass; GasLib-40 in bypass (held at pressureOutMax, 70 barg, below its 80 barg
entries, it has no steady state — see the module docstring of server/twin_model.py).

Both sides: pandapipes' hgas at 10 °C (`reference_gas`), Nikuradse friction, the squared-pressure
form everywhere. Every node of both networks is at height 0 (elevation plays no part here).
Agreement required: node pressures within 0.1 % of the network's pressure drop; measured: about
0.07 Pa on GasLib-11 with boosting compressors (the regulators' 1e-3 Pa per kg/s droop), below
1e-7 Pa in bypass, against drops of 0.46–3.7 MPa.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from server.twin_model import load_network_file
from tests.numerics._pandapipes import reference_gas, run_pandapipes, to_pandapipes
from twin_jax import FrictionLaw, Physics, Status, compile_network, solve_steady

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore::FutureWarning")

GASLIB = Path(__file__).resolve().parents[1] / "data" / "gaslib"


@pytest.mark.parametrize(("name", "compressors", "n_boost"), [
    ("GasLib-11", "boost", 2), ("GasLib-11", "bypass", 0), ("GasLib-40", "bypass", 0)])
def test_gaslib_agrees_with_pandapipes(name: str, compressors: str, n_boost: int) -> None:
    desc = load_network_file(GASLIB / f"{name}.net", gas=reference_gas(), compressors=compressors)
    assert sum(r.boost for r in desc.regulators) == n_boost
    assert all(v.opening == 1.0 for v in desc.valves)
    net = compile_network(desc, Physics(friction=FrictionLaw.NIKURADSE, low_pressure_incompressible=False))
    result = solve_steady(net, net.parameters())
    assert Status(int(result.status)) is Status.CONVERGED, Status(int(result.status)).message
    ours = np.asarray(result.state.pressure_pa_abs) - net.ambient_pa
    flow = np.asarray(result.state.mass_flow_kg_s)
    assert bool(np.all(result.state.supplied))

    pp_net, junction = to_pandapipes(desc)
    run_pandapipes(pp_net, "nikuradse")
    assert pp_net.converged
    ref = pp_net.res_junction.p_bar.to_numpy()[[junction[i] for i in net.node_ids]] * 1e5

    drop = ref.max() - ref.min()
    assert drop > 4e5  # 4 bar at least: a network that carries gas
    assert 3e6 < ours.min() and ours.max() <= 8e6 + 1e-6  # 30…80 barg, transmission pressures
    assert np.abs(ours - ref).max() <= 1e-3 * drop
    # Flows too, to 1e-5 of the throughput: the regulators' droop (0.06 Pa at 60 kg/s) shifts
    # the flow of GasLib-11's pipe03, which joins two nodes held at the same 68.99 barg, by
    # 2e-4 kg/s (and CS01's, which feeds it through the valve); all others agree to 1e-7 kg/s.
    demand = sum(c.demand_kg_s for c in desc.consumers)
    pipe_ref = pp_net.res_pipe.mdot_from_kg_per_s.to_numpy()
    assert np.abs(flow[net.pipes] - pipe_ref).max() <= 1e-5 * demand
    if n_boost:  # compressors carry gas forward (the twin's regulators never flow backwards)
        assert np.all(flow[net.regulators] > 0)
        reg_ref = pp_net.res_press_control.mdot_from_kg_per_s.to_numpy()
        assert np.abs(flow[net.regulators] - reg_ref).max() <= 1e-5 * demand
