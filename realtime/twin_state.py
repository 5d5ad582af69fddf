"""The live twin's state as plain data: what GraphQL, the wall display and control read.

The twin runner (`server/twin_runner.py`) produces a `NetworkSnapshot` every cycle and announces
it on the bus topic `twin`; readers hold a `TwinReader` (the runner) and never touch JAX.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Protocol

__all__ = ["TWIN_TOPIC", "ConsumerShortfall", "DistrictLeakState", "EstimatedFactor", "EstimationState",
           "NetworkSnapshot", "NodeState", "PipeState", "Residual", "SuspectSensor", "TwinReader"]

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
class EstimatedFactor:
    """One group factor of the live state estimation (`server/estimation_watch.py`)."""

    name: str
    """`demand:<area>` or `roughness:<area>`."""
    factor: float
    """Multiplier on the model's demand or roughness of that group."""
    std_log: float
    """Posterior σ of log(factor): its relative uncertainty."""
    observable: bool
    """The sensors fix it to ±10 % at 3σ."""


@dataclass(frozen=True)
class SuspectSensor:
    """A sensor the bad-data test left out of the estimation."""

    path: str
    normalized_residual: float
    residual: float
    """Measured − modelled (Pa, or kg/s for a flow meter)."""


@dataclass(frozen=True)
class EstimationState:
    """The last live state estimation over a window of the twin's cycles."""

    at: dt.datetime
    cycles: int
    converged: bool
    message: str
    chi2_per_dof: float | None
    factors: list[EstimatedFactor] = field(default_factory=list)
    bad_sensors: list[SuspectSensor] = field(default_factory=list)
    untestable_sensors: list[str] = field(default_factory=list)
    """Critical sensors: the estimate follows them, so their errors cannot be seen."""
    missing_sensors: list[str] = field(default_factory=list)


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
    estimation: EstimationState | None = None
    """The last live state estimation (refreshed every few minutes, not every solve)."""


class TwinReader(Protocol):
    """What readers of the live twin see."""

    latest: NetworkSnapshot | None
    """The last snapshot, None before the first solve."""
    error: str | None
    """Why the last cycle failed, if it did."""
    period_s: float
