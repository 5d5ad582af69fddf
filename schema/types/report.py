"""Summary, topology and audit types."""

from __future__ import annotations

import datetime as dt
from typing import Any

import strawberry
from strawberry.scalars import JSON

__all__ = ["AuditRecord", "AuditRecordFilter", "GroupSummary", "NetworkSummary",
           "TopologyComponent", "TopologyReport"]


@strawberry.type(description="Pipes of one pressure level or material.")
class GroupSummary:
    key: str
    pipes: int
    length_km: float


@strawberry.type(description="In-service asset counts and pipe length.")
class NetworkSummary:
    nodes: int
    pipes: int
    stations: int
    valves: int
    skz_stations: int
    service_points: int
    meters: int
    total_pipe_length_km: float
    by_pressure_level: list[GroupSummary]
    by_material: list[GroupSummary]


@strawberry.type(description="A connected part of the network.")
class TopologyComponent:
    node_count: int
    sample_node_ids: list[str]
    has_source: bool


@strawberry.type(description="Connected parts; those without a source are disconnected.")
class TopologyReport:
    component_count: int
    disconnected_parts: list[TopologyComponent]
    components: list[TopologyComponent] = strawberry.field(
        description="The largest 50 parts.")


@strawberry.type(description="One audited action or refusal; hash-chained.")
class AuditRecord:
    seq: int
    ts: dt.datetime
    actor: str | None
    role: str | None
    operation: str
    outcome: str
    target_ids: list[str]
    diff: JSON
    client_addr: str | None
    hash: str
    prev_hash: str

    @classmethod
    def from_row(cls, r: Any) -> AuditRecord:
        """From the ORM row."""
        return cls(seq=r.seq, ts=r.ts, actor=r.actor, role=r.role, operation=r.operation,
                   outcome=r.outcome, target_ids=list(r.target_ids), diff=r.diff,
                   client_addr=r.client_addr, hash=r.hash, prev_hash=r.prev_hash)


@strawberry.input
class AuditRecordFilter:
    actor: str | None = None
    operation_prefix: str | None = None
    outcome: str | None = None
    target_id: str | None = None
    since: dt.datetime | None = None
    until: dt.datetime | None = None
