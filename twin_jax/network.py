"""Network description (named, SI) → `CompiledNetwork` (struct of arrays with static topology).

The description is plain data that knows nothing of the registry or of file formats: the
server builds it from registry assets, `gasops twin solve` from a GeoJSON or GasLib file, tests
from generators. `compile_network` checks it, numbers everything once, and precomputes all the
topology a solve needs (incidence, the sparsity pattern of the Newton matrix and its symbolic
LU factorization, pressure zones, valve segments). What may change between solves —
demands, set-points, valve openings, roughness, temperature — lives in `Parameters`, a pytree
of arrays, so one compilation serves every scenario, every `vmap` batch and every gradient.

Branches are numbered pipes first, then valves, then regulators; each kind is one contiguous
slice (`pipes`, `valves`, `regulators` on `CompiledNetwork`).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import NamedTuple

import jax.numpy as jnp
import klujax
import numpy as np

from twin_jax.physics.friction import FrictionLaw
from twin_jax.physics.gas import GasProperties, ambient_pressure_pa

__all__ = [
    "CompiledNetwork", "Consumer", "NetworkDescription", "NetworkError", "Node", "Parameters",
    "Physics", "Pipe", "Regulator", "Source", "Valve", "compile_network",
]


class NetworkError(ValueError):
    """The description cannot be compiled; `problems` lists every fault found (id: message)."""

    def __init__(self, problems: Sequence[str]) -> None:
        self.problems = list(problems)
        shown = "; ".join(self.problems[:20])
        more = f" (and {len(self.problems) - 20} more)" if len(self.problems) > 20 else ""
        super().__init__(f"network has {len(self.problems)} problem(s): {shown}{more}")


@dataclass(frozen=True)
class Node:
    """A junction of the network; `elevation_m` above sea level."""

    id: str
    elevation_m: float = 0.0


@dataclass(frozen=True)
class Source:
    """A fixed-pressure infeed (GRS outlet, transmission offtake, GasLib entry) at `node`."""

    id: str
    node: str
    pressure_pa_gauge: float


@dataclass(frozen=True)
class Pipe:
    """A pipe section; `loss_coefficient` (ζ) adds fittings' losses to λ·L/D."""

    id: str
    from_node: str
    to_node: str
    length_m: float
    diameter_m: float
    roughness_m: float
    loss_coefficient: float = 0.0


@dataclass(frozen=True)
class Valve:
    """A line valve: loss ζ/opening² when open, no flow when `opening` is 0."""

    id: str
    from_node: str
    to_node: str
    diameter_m: float
    loss_coefficient: float = 0.0
    opening: float = 1.0
    """0 closed … 1 fully open (throttling valves take values between)."""
    operable: bool = True
    """Can be shut by the crew or remotely; isolation only uses operable valves."""


@dataclass(frozen=True)
class Regulator:
    """A pressure regulator (GRS/GRP/ShRP line) or, with `boost`, a compressor.

    It holds its outlet at `setpoint_pa_gauge` while the inlet is higher and passes the inlet
    pressure through (fully open) when it is not; it never lets gas flow backwards. A `boost`
    link holds its outlet set-point whatever the inlet (a compressor station in GasLib).
    """

    id: str
    inlet_node: str
    outlet_node: str
    setpoint_pa_gauge: float
    boost: bool = False
    in_service: bool = True


@dataclass(frozen=True)
class Consumer:
    """A service point or exit taking `demand_kg_s` at `node`."""

    id: str
    node: str
    demand_kg_s: float
    min_pressure_pa_gauge: float = 0.0
    critical: bool = False


@dataclass(frozen=True)
class NetworkDescription:
    """Everything a steady solve needs, by name, in SI units."""

    nodes: Sequence[Node]
    pipes: Sequence[Pipe]
    sources: Sequence[Source]
    valves: Sequence[Valve] = ()
    regulators: Sequence[Regulator] = ()
    consumers: Sequence[Consumer] = ()
    gas: GasProperties = field(default_factory=GasProperties)


@dataclass(frozen=True)
class Physics:
    """Modelling choices fixed at compile time."""

    friction: FrictionLaw = FrictionLaw.COLEBROOK
    low_pressure_incompressible: bool = True
    """Solve pipes of zones at or below `low_pressure_limit_pa_gauge` in the incompressible
    form (constant density, elevation head), as low-pressure design practice does; False uses
    the squared-pressure (compressible) form everywhere, as pandapipes does."""
    low_pressure_limit_pa_gauge: float = 10_000.0


class Parameters(NamedTuple):
    """The leaves a scenario, an estimate or a gradient may change. Shapes in brackets."""

    consumer_demand_kg_s: jnp.ndarray
    """[n_consumers] mass flow taken by each consumer."""
    extra_demand_kg_s: jnp.ndarray
    """[n_nodes] extra withdrawal at nodes: leaks, bursts, new consumers (negative = infeed)."""
    source_pressure_pa_gauge: jnp.ndarray
    """[n_sources]"""
    setpoint_pa_gauge: jnp.ndarray
    """[n_regulators] outlet set-points."""
    regulator_in_service: jnp.ndarray
    """[n_regulators] 1 in service, 0 shut."""
    valve_opening: jnp.ndarray
    """[n_valves] 0 closed … 1 open."""
    roughness_m: jnp.ndarray
    """[n_pipes] absolute roughness."""
    temperature_k: jnp.ndarray
    """[] flowing gas temperature."""


def _components(n: int, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Connected-component label per vertex of an undirected graph (union–find)."""
    parent = np.arange(n)

    def find(x: int) -> int:
        root = x
        while parent[root] != root:
            root = parent[root]
        while parent[x] != root:
            parent[x], x = root, parent[x]
        return root

    for u, v in zip(a.tolist(), b.tolist(), strict=True):
        ru, rv = find(u), find(v)
        if ru != rv:
            parent[max(ru, rv)] = min(ru, rv)
    roots = np.array([find(i) for i in range(n)], dtype=np.int64)
    _, labels = np.unique(roots, return_inverse=True)
    return labels.astype(np.int32)


class CompiledNetwork:
    """Static topology and index maps of one network; hashed by identity (a jit static)."""

    def __init__(self, desc: NetworkDescription, physics: Physics) -> None:
        self.description = desc
        self.physics = physics
        self.gas = desc.gas
        problems = _check(desc)
        if problems:
            raise NetworkError(problems)

        self.node_ids = [n.id for n in desc.nodes]
        self.node_index = {nid: i for i, nid in enumerate(self.node_ids)}
        ix = self.node_index
        self.pipe_ids = [p.id for p in desc.pipes]
        self.valve_ids = [v.id for v in desc.valves]
        self.regulator_ids = [r.id for r in desc.regulators]
        self.source_ids = [s.id for s in desc.sources]
        self.consumer_ids = [c.id for c in desc.consumers]
        self.branch_ids = self.pipe_ids + self.valve_ids + self.regulator_ids

        n_nodes, n_p, n_v, n_r = len(desc.nodes), len(desc.pipes), len(desc.valves), len(desc.regulators)
        self.n_nodes, self.n_pipes, self.n_valves, self.n_regulators = n_nodes, n_p, n_v, n_r
        self.n_branches = n_p + n_v + n_r
        self.pipes = slice(0, n_p)
        self.valves = slice(n_p, n_p + n_v)
        self.regulators = slice(n_p + n_v, n_p + n_v + n_r)

        ends = ([(p.from_node, p.to_node) for p in desc.pipes]
                + [(v.from_node, v.to_node) for v in desc.valves]
                + [(r.inlet_node, r.outlet_node) for r in desc.regulators])
        self.from_node = np.array([ix[a] for a, _ in ends], dtype=np.int32)
        self.to_node = np.array([ix[b] for _, b in ends], dtype=np.int32)

        self.elevation_m = np.array([n.elevation_m for n in desc.nodes], dtype=np.float64)
        self.ambient_pa = np.asarray(ambient_pressure_pa(jnp.asarray(self.elevation_m)))
        self.pipe_length_m = np.array([p.length_m for p in desc.pipes], dtype=np.float64)
        self.branch_diameter_m = np.array(
            [p.diameter_m for p in desc.pipes] + [v.diameter_m for v in desc.valves], dtype=np.float64)
        self.branch_zeta = np.array(
            [p.loss_coefficient for p in desc.pipes] + [v.loss_coefficient for v in desc.valves],
            dtype=np.float64)
        self.regulator_boost = np.array([r.boost for r in desc.regulators], dtype=bool)
        self.valve_operable = np.array([v.operable for v in desc.valves], dtype=bool)

        self.source_node = np.array([ix[s.node] for s in desc.sources], dtype=np.int32)
        self.consumer_node = np.array([ix[c.node] for c in desc.consumers], dtype=np.int32)
        self.consumer_min_pa_gauge = np.array([c.min_pressure_pa_gauge for c in desc.consumers])
        self.consumer_critical = np.array([c.critical for c in desc.consumers], dtype=bool)

        fixed = np.zeros(n_nodes, dtype=bool)
        fixed[self.source_node] = True
        self.free_nodes = np.flatnonzero(~fixed).astype(np.int32)
        self.node_to_free = np.full(n_nodes, -1, dtype=np.int32)
        self.node_to_free[self.free_nodes] = np.arange(len(self.free_nodes), dtype=np.int32)
        self.n_free = len(self.free_nodes)

        self._zones(desc)
        self._segments()
        self._pattern()
        self._tree()

    # -- topology ---------------------------------------------------------------------------

    def _zones(self, desc: NetworkDescription) -> None:
        """Pressure zones: nodes joined by pipes and valves (regulators separate zones)."""
        nb = self.n_pipes + self.n_valves
        self.zone_of_node = _components(self.n_nodes, self.from_node[:nb], self.to_node[:nb])
        self.n_zones = int(self.zone_of_node.max()) + 1 if self.n_nodes else 0
        # Nominal zone pressure (gauge) from the compile-time values: it picks the pipe form
        # (low-pressure zones incompressible) and the reference density there.
        nominal = np.full(self.n_zones, -np.inf)
        for s in desc.sources:
            z = self.zone_of_node[self.node_index[s.node]]
            nominal[z] = max(nominal[z], s.pressure_pa_gauge)
        for r in desc.regulators:
            z = self.zone_of_node[self.node_index[r.outlet_node]]
            nominal[z] = max(nominal[z], r.setpoint_pa_gauge)
        nominal[~np.isfinite(nominal)] = 0.0
        self.zone_nominal_pa_gauge = nominal
        pipe_zone = self.zone_of_node[self.from_node[self.pipes]]
        if self.physics.low_pressure_incompressible:
            self.pipe_incompressible = nominal[pipe_zone] <= self.physics.low_pressure_limit_pa_gauge
        else:
            self.pipe_incompressible = np.zeros(self.n_pipes, dtype=bool)
        p_ref = nominal[pipe_zone] + self.ambient_pa[self.from_node[self.pipes]]
        self.pipe_reference_density = np.asarray(
            self.gas.density_kg_m3(jnp.asarray(p_ref), self.gas.temperature_k))

    def _segments(self) -> None:
        """Valve segments: what is left connected by pipes alone; valves and regulators join them."""
        np_ = self.n_pipes
        self.segment_of_node = _components(self.n_nodes, self.from_node[:np_], self.to_node[:np_])
        self.n_segments = int(self.segment_of_node.max()) + 1 if self.n_nodes else 0
        self.valve_segments = np.stack([self.segment_of_node[self.from_node[self.valves]],
                                        self.segment_of_node[self.to_node[self.valves]]], axis=1)
        self.regulator_segments = np.stack([self.segment_of_node[self.from_node[self.regulators]],
                                            self.segment_of_node[self.to_node[self.regulators]]], axis=1)
        self.source_segments = self.segment_of_node[self.source_node]

    def _pattern(self) -> None:
        """Sparsity pattern of the reduced Newton matrix over free nodes, and its symbolic LU."""
        fi = self.node_to_free[self.from_node]
        ti = self.node_to_free[self.to_node]
        rows = np.concatenate([fi, fi, ti, ti, np.arange(self.n_free, dtype=np.int32)])
        cols = np.concatenate([fi, ti, fi, ti, np.arange(self.n_free, dtype=np.int32)])
        keep = (rows >= 0) & (cols >= 0)
        key = rows.astype(np.int64) * max(self.n_free, 1) + cols
        uniq, inverse = np.unique(key[keep], return_inverse=True)
        self.nnz = len(uniq)
        self.matrix_rows = (uniq // max(self.n_free, 1)).astype(np.int32)
        self.matrix_cols = (uniq % max(self.n_free, 1)).astype(np.int32)
        slot = np.full(len(key), self.nnz, dtype=np.int32)  # dropped entries go to a spare slot
        slot[keep] = inverse.astype(np.int32)
        nb = self.n_branches
        self.slot_ii, self.slot_ij = slot[:nb], slot[nb:2 * nb]
        self.slot_ji, self.slot_jj = slot[2 * nb:3 * nb], slot[3 * nb:4 * nb]
        self.slot_diag = slot[4 * nb:]
        self.entry_is_diag = self.matrix_rows == self.matrix_cols
        self.entry_row_node = self.free_nodes[self.matrix_rows] if self.n_free else self.matrix_rows
        self.symbolic = (klujax.analyze(self.matrix_rows, self.matrix_cols, self.n_free)
                         if self.n_free else None)
        # The adjoint solves with Mᵀ: its pattern, sorted, and where each entry comes from.
        self.transpose_order = np.lexsort((self.matrix_rows, self.matrix_cols)).astype(np.int32)
        self.transposed_rows = self.matrix_cols[self.transpose_order]
        self.transposed_cols = self.matrix_rows[self.transpose_order]
        self.transposed_symbolic = (klujax.analyze(self.transposed_rows, self.transposed_cols, self.n_free)
                                    if self.n_free else None)

    def _tree(self) -> None:
        """A spanning forest from the sources, factorized once: it gives the Newton start.

        In a tree the flows follow from the demands alone (each branch carries what lies beyond
        it). Solving the tree's incidence system for the current demands — a triangular solve
        with a factorization computed here, once — starts Newton next to the answer instead of
        at zero flow, which halves the iterations on city networks (trees with few loops).
        Nodes no source reaches get an identity column; their value is discarded.
        """
        adj: list[list[tuple[int, int]]] = [[] for _ in range(self.n_nodes)]
        for k, (a, b) in enumerate(zip(self.from_node.tolist(), self.to_node.tolist(), strict=True)):
            adj[a].append((b, k))
            if k < self.n_pipes + self.n_valves:  # regulators pass gas downstream only
                adj[b].append((a, k))
        parent = np.full(self.n_nodes, -1, dtype=np.int64)
        seen = np.zeros(self.n_nodes, dtype=bool)
        seen[self.source_node] = True
        queue = deque(self.source_node.tolist())
        while queue:
            u = queue.popleft()
            for v, k in adj[u]:
                if not seen[v]:
                    seen[v] = True
                    parent[v] = k
                    queue.append(v)
        rows, cols, vals = [], [], []
        tree_branch = np.full(self.n_free, -1, dtype=np.int32)
        for col, node in enumerate(self.free_nodes.tolist()):
            k = int(parent[node])
            if k < 0:  # an island: identity column
                rows.append(col)
                cols.append(col)
                vals.append(1.0)
                continue
            tree_branch[col] = k
            for end, sign in ((int(self.to_node[k]), 1.0), (int(self.from_node[k]), -1.0)):
                r = int(self.node_to_free[end])
                if r >= 0:
                    rows.append(r)
                    cols.append(col)
                    vals.append(sign)
        order = np.lexsort((np.array(cols), np.array(rows)))
        self.tree_rows = np.array(rows, dtype=np.int32)[order]
        self.tree_cols = np.array(cols, dtype=np.int32)[order]
        tree_vals = jnp.asarray(np.array(vals, dtype=np.float64)[order])
        self.tree_branch = tree_branch
        if self.n_free:
            self.tree_symbolic = klujax.analyze(self.tree_rows, self.tree_cols, self.n_free)
            self.tree_numeric = klujax.factor(self.tree_rows, self.tree_cols, tree_vals, self.tree_symbolic)

    # -- parameters and results -------------------------------------------------------------

    def parameters(self) -> Parameters:
        """The description's own values as solver parameters."""
        d = self.description
        return Parameters(
            consumer_demand_kg_s=jnp.asarray([c.demand_kg_s for c in d.consumers], dtype=jnp.float64),
            extra_demand_kg_s=jnp.zeros(self.n_nodes, dtype=jnp.float64),
            source_pressure_pa_gauge=jnp.asarray([s.pressure_pa_gauge for s in d.sources], dtype=jnp.float64),
            setpoint_pa_gauge=jnp.asarray([r.setpoint_pa_gauge for r in d.regulators], dtype=jnp.float64),
            regulator_in_service=jnp.asarray([float(r.in_service) for r in d.regulators], dtype=jnp.float64),
            valve_opening=jnp.asarray([v.opening for v in d.valves], dtype=jnp.float64),
            roughness_m=jnp.asarray([p.roughness_m for p in d.pipes], dtype=jnp.float64),
            temperature_k=jnp.asarray(self.gas.temperature_k, dtype=jnp.float64),
        )

    def __repr__(self) -> str:
        return (f"CompiledNetwork({self.n_nodes} nodes, {self.n_pipes} pipes, {self.n_valves} valves, "
                f"{self.n_regulators} regulators, {len(self.source_ids)} sources)")


def _check(desc: NetworkDescription) -> list[str]:
    """Every problem of the description, as 'id: message' strings."""
    problems: list[str] = []
    node_ids: set[str] = set()
    for n in desc.nodes:
        if n.id in node_ids:
            problems.append(f"{n.id}: duplicate node id")
        node_ids.add(n.id)
        if not np.isfinite(n.elevation_m):
            problems.append(f"{n.id}: elevation_m is not finite")

    def node_ref(owner: str, role: str, nid: str) -> None:
        if nid not in node_ids:
            problems.append(f"{owner}: {role} {nid!r} is not a node of the network")

    seen: set[str] = set()
    for group in (desc.pipes, desc.valves, desc.regulators, desc.sources, desc.consumers):
        for el in group:
            if el.id in seen:
                problems.append(f"{el.id}: duplicate id")
            seen.add(el.id)
    for p in desc.pipes:
        node_ref(p.id, "from_node", p.from_node)
        node_ref(p.id, "to_node", p.to_node)
        if p.from_node == p.to_node:
            problems.append(f"{p.id}: pipe starts and ends at the same node")
        for name in ("length_m", "diameter_m", "roughness_m"):
            value = getattr(p, name)
            if not (np.isfinite(value) and value > 0):
                problems.append(f"{p.id}: {name} must be a positive number, got {value!r}")
        if not (np.isfinite(p.loss_coefficient) and p.loss_coefficient >= 0):
            problems.append(f"{p.id}: loss_coefficient must be ≥ 0")
    for v in desc.valves:
        node_ref(v.id, "from_node", v.from_node)
        node_ref(v.id, "to_node", v.to_node)
        if v.from_node == v.to_node:
            problems.append(f"{v.id}: valve starts and ends at the same node")
        if not (np.isfinite(v.diameter_m) and v.diameter_m > 0):
            problems.append(f"{v.id}: diameter_m must be a positive number")
        if not 0.0 <= v.opening <= 1.0:
            problems.append(f"{v.id}: opening must be within 0…1, got {v.opening!r}")
    for r in desc.regulators:
        node_ref(r.id, "inlet_node", r.inlet_node)
        node_ref(r.id, "outlet_node", r.outlet_node)
        if r.inlet_node == r.outlet_node:
            problems.append(f"{r.id}: regulator inlet and outlet are the same node")
        if not np.isfinite(r.setpoint_pa_gauge):
            problems.append(f"{r.id}: setpoint_pa_gauge is not finite")
    source_nodes: set[str] = set()
    for s in desc.sources:
        node_ref(s.id, "node", s.node)
        if s.node in source_nodes:
            problems.append(f"{s.id}: node {s.node!r} already has a source")
        source_nodes.add(s.node)
        if not np.isfinite(s.pressure_pa_gauge):
            problems.append(f"{s.id}: pressure_pa_gauge is not finite")
    for c in desc.consumers:
        node_ref(c.id, "node", c.node)
        if not np.isfinite(c.demand_kg_s):
            problems.append(f"{c.id}: demand_kg_s is not finite")
    if not desc.sources:
        problems.append("network: no source (a fixed-pressure infeed is needed)")
    return problems


def compile_network(desc: NetworkDescription, physics: Physics | None = None) -> CompiledNetwork:
    """Check `desc` and compile it once; raises `NetworkError` listing every problem."""
    return CompiledNetwork(desc, physics or Physics())
