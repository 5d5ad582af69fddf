"""Test implementations of the control pipeline's own ports (targets, status, writer,
read-back): the pipeline is tested on its decisions here; the real ports are tested against
real drivers in the e2e suite."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field

from control.impact import Edge, GraphImpactPredictor, ServicePointRef
from control.model import CommandEvent, Target, TargetKind, WritePlan
from control.pipeline import CommandPipeline
from control.rules import TargetStatus

T0 = dt.datetime(2026, 12, 1, 8, 0, tzinfo=dt.UTC)

# A source S feeding a line S - V1 - n1 - V2 - n2; n1 also fed through V3 from S (a loop), so
# closing V1 cuts off nobody, closing V2 cuts off n2's 60 consumers, and V4 alone feeds a
# hospital at n3.
EDGES = [Edge("V1", "S", "n1"), Edge("P1", "S", "m"), Edge("V3", "m", "n1"), Edge("V2", "n1", "n2"),
         Edge("V4", "n1", "n3")]
POINTS = ([ServicePointRef(f"SP-{i}", "n2") for i in range(60)]
          + [ServicePointRef("HOSPITAL-1", "n3", "hospital"), ServicePointRef("SP-n1", "n1")])


@dataclass
class Clock:
    now: dt.datetime = T0

    def __call__(self) -> dt.datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += dt.timedelta(seconds=seconds)


@dataclass
class Field:
    """Targets, their live status, a writer and a read-back over one dict of tag values."""

    targets: dict[tuple[TargetKind, str], Target] = field(default_factory=dict)
    bad: set[str] = field(default_factory=set)  # asset ids with bad quality
    refuse_writes: set[str] = field(default_factory=set)  # tags whose device refuses
    stuck: set[str] = field(default_factory=set)  # tags that never reach the written value
    values: dict[str, float] = field(default_factory=dict)
    writes: list[tuple[str, float]] = field(default_factory=list)

    def target(self, kind: TargetKind, asset_id: str) -> Target | None:
        return self.targets.get((kind, asset_id))

    def status(self, target: Target, plan: WritePlan) -> TargetStatus:
        ok = target.asset_id not in self.bad
        prefix = f"skz/{target.asset_id}/"
        readings = {k[len(prefix):]: v for k, v in self.values.items() if k.startswith(prefix)}
        return TargetStatus(communicating=True, quality_good=ok, readings=readings)

    async def write(self, tag: str, value: float | int | bool) -> None:
        if tag in self.refuse_writes:
            raise RuntimeError("Modbus exception 4 (slave device failure)")
        self.writes.append((tag, float(value)))
        if tag not in self.stuck:
            self.values[tag] = float(value)

    async def wait_for(self, tag: str, value: float, tolerance: float,
                       timeout_s: float) -> tuple[bool, object]:
        seen = self.values.get(tag)
        return (seen is not None and abs(seen - value) <= tolerance), seen


def make_field() -> Field:
    f = Field()
    for v in ("V1", "V2", "V3", "V4"):
        f.targets[(TargetKind.valve, v)] = Target(TargetKind.valve, v, "NORTH")
    f.targets[(TargetKind.valve, "V9")] = Target(TargetKind.valve, "V9", "SOUTH")
    f.targets[(TargetKind.valve, "MANUAL")] = Target(TargetKind.valve, "MANUAL", "NORTH",
                                                     remotely_operable=False)
    f.targets[(TargetKind.skz, "SKZ-1")] = Target(TargetKind.skz, "SKZ-1", "NORTH",
                                                  rated_current_a=25, rated_voltage_v=48)
    return f


def make_pipeline(f: Field, clock: Clock, events: list[CommandEvent]) -> CommandPipeline:
    return CommandPipeline(targets=f, status=f, writer=f, readback=f,
                           impact=GraphImpactPredictor(EDGES, ["S"], POINTS), sink=events.append,
                           clock=clock, readback_timeout_s=0.1)
