"""Synthetic city networks for tests and benchmarks: street grids that are trees with few loops.

`synthetic_city(n_nodes)` lays the medium-pressure network on a jittered street grid: a random
spanning tree of the grid (Kruskal over random weights) plus extra street edges closing loops
(by default one loop per ~16 nodes, as in city distribution), one fixed-pressure infeed per
2,500 nodes,
a demand at every node, and pipes sized from the flow they carry (tree accumulation from the
nearest infeed). Optional low-pressure districts hang off it through regulators. Deterministic
for a seed. Pure NumPy: building 100,000 nodes takes about a second.
"""

from __future__ import annotations

from collections import deque

import numpy as np

from twin_jax.network import Consumer, NetworkDescription, Node, Pipe, Regulator, Source
from twin_jax.physics.gas import GasProperties

__all__ = ["synthetic_city"]

_SIZES_M = np.array([0.05, 0.063, 0.08, 0.1, 0.125, 0.15, 0.2, 0.25, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8])


def _grid(n: int, rng: np.random.Generator, spacing_m: float, loop_fraction: float
          ) -> tuple[np.ndarray, np.ndarray]:
    """Positions [n, 2] and edges [e, 2] of a loopy spanning tree of a street grid."""
    side = int(np.ceil(np.sqrt(n)))
    idx = np.arange(n)
    row, col = idx // side, idx % side
    xy = np.stack([col, row], axis=1) * spacing_m + rng.uniform(-0.2, 0.2, (n, 2)) * spacing_m
    right = idx[(col + 1 < side) & (idx + 1 < n)]
    down = idx[idx + side < n]
    cand = np.concatenate([np.stack([right, right + 1], 1), np.stack([down, down + side], 1)])
    order = np.argsort(rng.random(len(cand)))
    parent = np.arange(n)

    def find(x: int) -> int:
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    in_tree = np.zeros(len(cand), dtype=bool)
    for k in order.tolist():
        a, b = find(int(cand[k, 0])), find(int(cand[k, 1]))
        if a != b:
            parent[max(a, b)] = min(a, b)
            in_tree[k] = True
    spare = np.flatnonzero(~in_tree)
    extra = rng.choice(spare, size=min(len(spare), int(round(loop_fraction * n))), replace=False)
    keep = in_tree.copy()
    keep[extra] = True
    return xy, cand[keep]


def _sizes(n: int, edges: np.ndarray, roots: list[int], demand: np.ndarray, density: float,
           velocity_m_s: float) -> np.ndarray:
    """Diameter per edge from the flow its breadth-first tree from the roots carries."""
    adj: list[list[tuple[int, int]]] = [[] for _ in range(n)]
    for k, (a, b) in enumerate(edges.tolist()):
        adj[a].append((b, k))
        adj[b].append((a, k))
    parent_edge = np.full(n, -1)
    parent_node = np.full(n, -1)
    seen = np.zeros(n, dtype=bool)
    order: list[int] = []
    queue = deque(roots)
    seen[roots] = True
    while queue:
        u = queue.popleft()
        order.append(u)
        for v, k in adj[u]:
            if not seen[v]:
                seen[v] = True
                parent_edge[v], parent_node[v] = k, u
                queue.append(v)
    carried = demand.astype(np.float64).copy()
    flow = np.zeros(len(edges))
    for u in reversed(order):
        if parent_edge[u] >= 0:
            flow[parent_edge[u]] = carried[u]
            carried[parent_node[u]] += carried[u]
    # Loop-closing edges carry what their smaller neighbour branch does.
    loop = flow == 0
    if loop.any():
        a, b = edges[loop, 0], edges[loop, 1]
        pe_a, pe_b = parent_edge[a], parent_edge[b]
        fa = np.where(pe_a >= 0, flow[np.maximum(pe_a, 0)], carried[a])
        fb = np.where(pe_b >= 0, flow[np.maximum(pe_b, 0)], carried[b])
        flow[loop] = np.minimum(fa, fb)
    d = np.sqrt(4.0 * flow / (np.pi * density * velocity_m_s))
    return _SIZES_M[np.minimum(np.searchsorted(_SIZES_M, d), len(_SIZES_M) - 1)]


def synthetic_city(
    n_nodes: int, *, seed: int = 0, sources: int | None = None, loop_fraction: float = 0.06,
    low_pressure_districts: int = 0, district_nodes: int = 100, spacing_m: float = 100.0,
    source_pressure_pa_gauge: float = 300_000.0, district_setpoint_pa_gauge: float = 3_000.0,
    gas: GasProperties | None = None,
) -> NetworkDescription:
    """A medium-pressure street network of `n_nodes` (plus `low_pressure_districts` × `district_nodes`).

    Arguments: `sources` infeeds (default one per 2,500 nodes, at least 3 — fewer cannot feed
    100,000 nodes through a random spanning tree's long paths at 3 bar), spread over the
    grid at slightly different pressures around `source_pressure_pa_gauge`; `loop_fraction`
    extra edges per node; low-pressure districts each fed by one regulator at
    `district_setpoint_pa_gauge`. Demands 1–5 g/s per medium-pressure node (a block of flats
    each), 0.2–1 g/s per low-pressure node. Roughness 0.1 mm steel / 0.01 mm PE.
    """
    gas = gas or GasProperties()
    rng = np.random.default_rng(seed)
    n_src = sources if sources is not None else max(3, n_nodes // 2_500)
    xy, edges = _grid(n_nodes, rng, spacing_m, loop_fraction)
    demand = rng.uniform(0.001, 0.005, n_nodes)
    roots = np.unique(np.linspace(0, n_nodes - 1, n_src + 2)[1:-1].round().astype(int)).tolist()
    demand[roots] = 0.0
    rho_mp = gas.density_std_kg_m3 * (source_pressure_pa_gauge + 101_325.0) / 101_325.0

    nodes = [Node(f"N{i}") for i in range(n_nodes)]
    consumers = [Consumer(f"C{i}", f"N{i}", float(demand[i])) for i in range(n_nodes) if demand[i] > 0]
    pipes: list[Pipe] = []
    regulators: list[Regulator] = []

    hubs = rng.choice(np.setdiff1d(np.arange(n_nodes), roots), size=low_pressure_districts, replace=False) \
        if low_pressure_districts else np.array([], dtype=int)
    district_load = np.zeros(n_nodes)
    for k, hub in enumerate(hubs.tolist()):
        lxy, ledges = _grid(district_nodes, rng, spacing_m * 0.6, loop_fraction)
        ld = rng.uniform(0.0002, 0.001, district_nodes)
        ld[0] = 0.0
        dsz = _sizes(district_nodes, ledges, [0], ld, gas.density_std_kg_m3, 2.0)
        pre = f"D{k}."
        nodes += [Node(f"{pre}N{i}") for i in range(district_nodes)]
        consumers += [Consumer(f"{pre}C{i}", f"{pre}N{i}", float(ld[i])) for i in range(1, district_nodes)]
        for j, (a, b) in enumerate(ledges.tolist()):
            length = float(np.hypot(*(lxy[a] - lxy[b])))
            pipes.append(Pipe(f"{pre}P{j}", f"{pre}N{a}", f"{pre}N{b}", max(length, 5.0),
                              float(dsz[j]), 1e-5))
        regulators.append(Regulator(f"R{k}", f"N{hub}", f"{pre}N0", district_setpoint_pa_gauge))
        district_load[hub] += ld.sum()

    sizes = _sizes(n_nodes, edges, roots, demand + district_load, rho_mp, 4.0)
    for j, (a, b) in enumerate(edges.tolist()):
        length = float(np.hypot(*(xy[a] - xy[b])))
        pipes.append(Pipe(f"P{j}", f"N{a}", f"N{b}", max(length, 5.0), float(sizes[j]), 1e-4))
    offsets = np.linspace(-2_000.0, 2_000.0, len(roots)) if len(roots) > 1 else np.zeros(1)
    srcs = [Source(f"S{k}", f"N{r}", source_pressure_pa_gauge + float(offsets[k]))
            for k, r in enumerate(roots)]
    return NetworkDescription(nodes=nodes, pipes=pipes, sources=srcs, regulators=regulators,
                              consumers=consumers, gas=gas)
