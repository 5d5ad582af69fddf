"""The `ImpactPredictor` port, and the graph-based predictor that serves until the twin lands.

The port answers "what happens to consumers if this command is carried out": how many service
points are cut off, which critical ones (hospitals, boiler houses, schools…) among them, and,
when a hydraulic model is behind it, the lowest pressure left at critical consumers. The
hydraulic twin's predictor will implement the same port.

`GraphImpactPredictor` knows connectivity only: closing a valve removes its edge, and every
service point whose node no longer has a path to a source (a node of kind "source", i.e. a
tie-in to the transmission network) is cut off. It cannot tell pressures, so it never claims a
minimum pressure. Opening or throttling never cuts anybody off in this model.
"""

from __future__ import annotations

from collections import defaultdict, deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Protocol

from control.model import Action, Impact, Target, TargetKind

__all__ = ["Edge", "GraphImpactPredictor", "ImpactPredictor", "ServicePointRef"]


class ImpactPredictor(Protocol):
    """Predicts the consumer impact of an action on a target."""

    async def predict(self, target: Target, action: Action, value: float | None) -> Impact:
        """The predicted impact (never raises for an unknown target: no impact known)."""


@dataclass(frozen=True, slots=True)
class Edge:
    """A pipe, valve or regulating link between two nodes; `id` is the asset id."""

    id: str
    a: str
    b: str
    open: bool = True


@dataclass(frozen=True, slots=True)
class ServicePointRef:
    """A consumer connection: its node and whether it is critical (and of what kind)."""

    id: str
    node: str
    critical_kind: str | None = None


class GraphImpactPredictor:
    """Connectivity to the sources, with one edge removed (see the module docstring)."""

    def __init__(self, edges: Iterable[Edge], sources: Iterable[str],
                 service_points: Iterable[ServicePointRef]) -> None:
        self._edges = {e.id: e for e in edges}
        self._sources = set(sources)
        self._by_node: dict[str, list[ServicePointRef]] = defaultdict(list)
        for sp in service_points:
            self._by_node[sp.node].append(sp)
        self._adjacent: dict[str, list[tuple[str, str]]] = defaultdict(list)  # node → (edge, node)
        for e in self._edges.values():
            if e.open:
                self._adjacent[e.a].append((e.id, e.b))
                self._adjacent[e.b].append((e.id, e.a))
        self._baseline = self._reached(None)

    def _reached(self, without: str | None) -> set[str]:
        seen = set(self._sources)
        queue = deque(self._sources)
        while queue:
            node = queue.popleft()
            for edge, other in self._adjacent.get(node, ()):
                if edge != without and other not in seen:
                    seen.add(other)
                    queue.append(other)
        return seen

    def cut_off_by(self, edge_id: str) -> list[ServicePointRef]:
        """Service points supplied now that lose every path to a source without `edge_id`."""
        lost = self._baseline - self._reached(edge_id)
        return [sp for node in sorted(lost) for sp in self._by_node.get(node, ())]

    async def predict(self, target: Target, action: Action, value: float | None) -> Impact:
        """Closing a valve or a station's outlet valve (or a position of 0 %) cuts off what
        depends on it alone."""
        closing = action is Action.close or (action is Action.set_position and value is not None
                                             and value <= 0.0)
        shuts = target.kind is TargetKind.valve or (
            target.kind is TargetKind.station and action is not Action.set_outlet_setpoint)
        if not shuts or not closing or target.asset_id not in self._edges:
            return Impact(method="graph")
        lost = self.cut_off_by(target.asset_id)
        critical = tuple(sp.id for sp in lost if sp.critical_kind)
        return Impact(consumers_cut_off=len(lost), critical_cut_off=critical, method="graph",
                      detail=f"{len(lost)} service points lose every path to a source")

    @classmethod
    def from_rows(cls, edges: Iterable[Edge], node_kinds: Mapping[str, str],
                  service_points: Iterable[ServicePointRef]) -> GraphImpactPredictor:
        """Built from the registry: sources are the nodes of kind "source"."""
        return cls(edges, [n for n, kind in node_kinds.items() if kind == "source"],
                   service_points)
