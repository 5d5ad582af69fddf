"""The same network in pandapipes: the reference the twin's steady solver is checked against.

pandapipes 0.16's gas model is the squared-pressure law with a linear Z(p) and the "hgas"
property tables; `reference_gas` reads those so that both sides use identical numbers, and
`to_pandapipes` builds junctions, pipes, valves, pressure controls (our regulators), external
grids (our sources) and sinks (our consumers) from a `NetworkDescription`.
"""

from __future__ import annotations

import warnings

import numpy as np

from twin_jax import GasProperties, NetworkDescription

TEMPERATURE_K = 283.15


def reference_gas(temperature_k: float = TEMPERATURE_K) -> GasProperties:
    """pandapipes' hgas at `temperature_k`, as our `GasProperties`."""
    import pandapipes as pp

    net = pp.create_empty_network(fluid="hgas")
    fluid = net.fluid if not isinstance(net.fluid, dict) else next(iter(net.fluid.values()))
    from pandapipes.constants import NORMAL_PRESSURE, NORMAL_TEMPERATURE

    return GasProperties(
        density_std_kg_m3=float(fluid.get_density(NORMAL_TEMPERATURE)),
        viscosity_pa_s=float(fluid.get_viscosity(temperature_k)),
        temperature_k=temperature_k,
        compressibility_slope_per_pa=float(fluid.get_property("compressibility", 1.0) - 1.0) / 1e5,
        standard_pressure_pa=NORMAL_PRESSURE * 1e5,
        standard_temperature_k=NORMAL_TEMPERATURE,
    )


def to_pandapipes(desc: NetworkDescription):  # -> pandapipesNet
    """Build the pandapipes net of `desc`; returns (net, junction index per node id)."""
    import pandapipes as pp

    net = pp.create_empty_network(fluid="hgas")
    t = desc.gas.temperature_k
    nominal = max((s.pressure_pa_gauge for s in desc.sources), default=1e5) / 1e5
    ids = [n.id for n in desc.nodes]
    junctions = pp.create_junctions(net, len(ids), pn_bar=nominal, tfluid_k=t,
                                    height_m=np.array([n.elevation_m for n in desc.nodes]))
    j = dict(zip(ids, junctions, strict=True))
    if desc.pipes:
        pp.create_pipes_from_parameters(
            net, [j[p.from_node] for p in desc.pipes], [j[p.to_node] for p in desc.pipes],
            length_km=np.array([p.length_m for p in desc.pipes]) / 1e3,
            inner_diameter_mm=np.array([p.diameter_m for p in desc.pipes]) * 1e3,
            k_mm=np.array([p.roughness_m for p in desc.pipes]) * 1e3,
            loss_coefficient=np.array([p.loss_coefficient for p in desc.pipes]))
    for v in desc.valves:
        pp.create_valve(net, j[v.from_node], j[v.to_node], et="ju", inner_diameter_mm=v.diameter_m * 1e3,
                        opened=v.opening > 0, loss_coefficient=v.loss_coefficient)
    for r in desc.regulators:
        pp.create_pressure_control(net, j[r.inlet_node], j[r.outlet_node], j[r.outlet_node],
                                   controlled_p_bar=r.setpoint_pa_gauge / 1e5)
    for s in desc.sources:
        pp.create_ext_grid(net, j[s.node], p_bar=s.pressure_pa_gauge / 1e5, t_k=t)
    if desc.consumers:
        pp.create_sinks(net, [j[c.node] for c in desc.consumers],
                        mdot_kg_per_s=np.array([c.demand_kg_s for c in desc.consumers]))
    return net, j


def run_pandapipes(net, friction: str, *, tol: float = 1e-10, max_iter: int = 100) -> None:
    """Hydraulic pipeflow with tight tolerances, no numba (as the benchmark anchor is run)."""
    import pandapipes as pp

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        pp.pipeflow(net, mode="hydraulics", friction_model=friction, tol_p=tol, tol_m=tol,
                    tol_res=tol, max_iter_hyd=max_iter, use_numba=False)
