"""The live twin's state as plain data: what GraphQL, the wall display and control read.

The twin runner (`server/twin_runner.py`) produces a `NetworkSnapshot` every cycle and announces
it on the bus topic `twin`; readers hold a `TwinReader` (the runner) and never touch JAX.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Protocol

__all__ = ["TWIN_TOPIC", "ConsumerShortfall", "DistrictLeakState", "NetworkSnapshot", "NodeState",
           "PipeState", "Residual", "TwinReader"]

TWIN_TOPIC = "twin"


@dataclass(frozen=True, slots=True)
class NodeState:
    """Modelled pressure at a node."""

    id: str
    area_id: str | None
    pressure_pa_gauge: float
    supplied: bool


@dataclass(frozen=True, slots=True)
class PipeState:
    """Modelled flow in a pipe (positive from its from-node to its to-node)."""

    id: str
    area_id: str | None
    mass_flow_kg_s: float
    velocity_m_s: float
    """At the pipe's mean pressure; signed like the flow."""


@dataclass(frozen=True, slots=True)
class ConsumerShortfall:
    """A service point whose modelled pressure is below its minimum (or that gets no gas)."""

    id: str
    node_id: str
    area_id: str | None
    pressure_pa_gauge: float
    min_pressure_pa_gauge: float
    critical: bool
    supplied: bool


@dataclass(frozen=True, slots=True)
class Residual:
    """A sensor against the model: measured − modelled, in the tag's unit."""

    path: str
    measured: float
    modelled: float

    @property
    def residual(self) -> float:
        """measured − modelled."""
        return self.measured - self.modelled


@dataclass(frozen=True, slots=True)
class DistrictLeakState:
    """The live leak detector's view of one district after a cycle (`server/leak_watch.py`)."""

    area_id: str
    level: float
    """The district's CUSUM over its alarm threshold: 1 raises "leak suspected"."""
    z: float
    """This cycle's statistic, standard errors (> 0: the residuals sag like a leak here)."""
    alarm: bool
    leak_m3h_std: float
    """The estimated leak while in alarm, m³/h at standard conditions (20 °C), else 0."""
    observable: bool
    """Whether the sensors see a leak in this district at all."""
    warming_up: bool
    """The detector is still learning its baselines (no alarm can be raised yet)."""


@dataclass(frozen=True)
class NetworkSnapshot:
    """One solve of the live twin, mapped back to asset ids."""

    at: dt.datetime
    status: str
    message: str
    iterations: int
    solve_ms: float
    air_temperature_c: float
    gas_temperature_c: float
    total_demand_kg_s: float
    nodes: list[NodeState] = field(default_factory=list)
    pipes: list[PipeState] = field(default_factory=list)
    below_minimum: list[ConsumerShortfall] = field(default_factory=list)
    residuals: list[Residual] = field(default_factory=list)
    leaks: list[DistrictLeakState] = field(default_factory=list)


class TwinReader(Protocol):
    """What readers of the live twin see."""

    latest: NetworkSnapshot | None
    """The last snapshot, None before the first solve."""
    error: str | None
    """Why the last cycle failed, if it did."""
    period_s: float
