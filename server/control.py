"""Composition of control: the command pipeline with its ports implemented on this server.

- targets and the graph impact predictor from the registry (`erp.services.network_graph`);
- live status from the tag store (the read-back tag: present, not Bad, not stale);
- writes through the field's drivers (`Field.write`), read-back by watching the tag store;
- every command event published on the bus (topic `commands`) and written to the audit log by
  one task, in order (kept and retried while the database is away); the command as it stands
  after the step goes to the command history (`erp.services.commands`) in the same transaction,
  so the audit log and the history never disagree; at start, the commands that stopped
  processes left open are closed in both.

Commands run here, in the server's event loop, with bounded latency: never through a job queue.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from control.impact import Edge, GraphImpactPredictor, ServicePointRef
from control.model import (
    COMMANDS_TOPIC,
    Action,
    CommandEvent,
    Impact,
    Target,
    TargetKind,
    WritePlan,
)
from control.pipeline import CommandPipeline
from control.rules import TargetStatus
from erp.services import audit, commands, network_graph
from realtime.bus import AbstractBus
from realtime.model import QualityClass
from realtime.store import Change, TagStore
from server.outbox import Outbox

__all__ = ["Control"]

log = logging.getLogger("gasops.control")

WriteFn = Callable[[str, Any], Awaitable[None]]

# An open command this long past its time (plus the read-back timeout) was left by a stopped
# server process: the next one to start closes it.
ABANDONED_AFTER_S = 60.0


def _utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


class Control:
    """Owns the command pipeline of one server process."""

    def __init__(self, db: Any, bus: AbstractBus, store: TagStore,
                 write: Callable[[], WriteFn | None], *,
                 clock: Callable[[], dt.datetime] = _utcnow, select_ttl_s: float = 30.0,
                 readback_timeout_s: float = 30.0, stale_factor: float = 3.0) -> None:
        self._db = db
        self._bus = bus
        self._store = store
        self._write = write  # late-bound: the field starts after this object is built
        self._clock = clock
        self._stale_factor = stale_factor
        self._readback_timeout_s = readback_timeout_s
        self._targets: dict[tuple[TargetKind, str], Target] = {}
        # each event with the command's snapshot after it (None for refusals: nothing changed)
        self._audit: Outbox[tuple[CommandEvent, dict[str, Any] | None]] = Outbox(
            self._record, name="command-audit", batch_size=200, log=log)
        self._tasks: list[asyncio.Task[None]] = []
        self._predictor: GraphImpactPredictor | None = None
        self._twin: Any = None  # the live twin, when it runs: `attach_twin`
        # built now (the GraphQL services hold it); targets and the graph load at start
        self.pipeline = CommandPipeline(
            targets=self, status=self, impact=self, writer=self, readback=self,
            sink=self._sink, clock=clock, select_ttl_s=select_ttl_s,
            readback_timeout_s=readback_timeout_s)

    async def start(self) -> None:
        """Load targets and the network graph; close the commands stopped processes left open;
        start the audit writer and the expiry tick."""
        async with self._db() as s:
            assets = await network_graph.commandable_assets(s)
            graph = await network_graph.connectivity(s)
        for a in assets:
            kind = TargetKind(a["kind"])
            band = a.get("setpoint_range_pa")
            self._targets[(kind, a["asset_id"])] = Target(
                kind, a["asset_id"], a["area_id"], a.get("remotely_operable", True),
                a.get("rated_current_a"), a.get("rated_voltage_v"),
                tuple(band) if band else None)  # type: ignore[arg-type]
        self._predictor = GraphImpactPredictor.from_rows(
            [Edge(i, a, b, o) for i, a, b, o in graph["edges"]], graph["node_kinds"],
            [ServicePointRef(i, n, c) for i, n, c in graph["service_points"]])
        try:
            await self._close_abandoned()
        except Exception:  # the history's trouble must not keep control from starting
            log.exception("control: could not close the commands of stopped processes")
        self._audit.start()
        self._tasks = [asyncio.create_task(self._tick(), name="command-tick")]
        log.info("control: %d commandable targets", len(self._targets))

    async def stop(self) -> None:
        """Stop the tasks; write what is still queued for the audit log."""
        for task in self._tasks:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks = []
        await self._audit.close()

    # ------------------------------------------------------------------ ports

    async def predict(self, target: Target, action: Action, value: float | None) -> Impact:
        """`ImpactPredictor`: the live twin's hydraulic what-if when it has a solved state of the
        network, else the registry's connectivity."""
        if self._twin is not None:
            try:
                impact = await self._twin.predict(target, action, value)
            except Exception:  # a failed prediction must not block a command: fall back
                log.exception("twin impact prediction failed; using the network graph")
                impact = None
            if impact is not None:
                return impact
        if self._predictor is None:
            return Impact(method="none", detail="the network graph is not loaded yet")
        return await self._predictor.predict(target, action, value)

    def attach_twin(self, twin: Any) -> None:
        """Use the live twin (`server.twin_runner.TwinRunner`) for impact predictions."""
        self._twin = twin

    def find(self, asset_id: str) -> Target | None:
        """The commandable asset with this id, whatever its kind."""
        return next((t for (_, a), t in self._targets.items() if a == asset_id), None)

    def target(self, kind: TargetKind, asset_id: str) -> Target | None:
        """`TargetDirectory`: a commandable asset."""
        return self._targets.get((kind, asset_id))

    def status(self, target: Target, plan: WritePlan) -> TargetStatus:
        """`TargetStatusPort`: the read-back tag present, fresh and not Bad."""
        state = self._store.get(plan.readback_tag)
        if state is None:
            return TargetStatus(False, False, f"no value of {plan.readback_tag} yet")
        d = self._store.known.get(plan.readback_tag)
        period = d.expected_period_s if d is not None else None
        age = (self._clock() - state.last_reported).total_seconds()
        if period and age > self._stale_factor * period:
            return TargetStatus(False, False, f"{plan.readback_tag} silent for {age:.0f} s")
        severity = state.value.quality.severity
        return TargetStatus(severity is not QualityClass.bad, severity is QualityClass.good,
                            state.value.quality.name, readings=self._readings(target))

    def _readings(self, target: Target) -> dict[str, float]:
        """The live values the rules need: an SKZ's output current and voltage and its set-point;
        a valve actuator's REMOTE selector and fault bits (1.0 true, 0.0 false) where it has
        those tags."""
        names = {TargetKind.skz: ("skz", ("i_out", "u_out", "setpoint")),
                 TargetKind.valve: ("valve", ("remote", "fault"))}.get(target.kind)
        if names is None:
            return {}
        prefix, tags = names
        out: dict[str, float] = {}
        for name in tags:
            state = self._store.get(f"{prefix}/{target.asset_id}/{name}")
            if (state is not None and state.value.quality.severity is QualityClass.good
                    and isinstance(state.value.value, int | float)):
                out[name] = float(state.value.value)
        return out

    async def write(self, tag: str, value: float | int | bool) -> None:
        """`Writer`: through the driver that owns the tag."""
        write = self._write()
        if write is None:
            raise RuntimeError("no field drivers are running in this process")
        await write(tag, value)

    async def wait_for(self, tag: str, value: float, tolerance: float,
                       timeout_s: float) -> tuple[bool, object]:
        """`Readback`: watch the store until `tag` is within `tolerance` of `value`."""
        reached = asyncio.Event()
        last: list[object] = [None]

        def check(v: object) -> None:
            last[0] = v
            if isinstance(v, int | float) and not isinstance(v, bool) and abs(
                    float(v) - value) <= tolerance:
                reached.set()
            elif isinstance(v, bool) and float(v) == value:
                reached.set()

        def on_changes(changes: list[Change]) -> None:
            for c in changes:
                if c.path == tag and c.new.quality.is_good:
                    check(c.new.value)

        unlisten = self._store.listen(on_changes)  # type: ignore[arg-type]
        try:
            state = self._store.get(tag)
            if state is not None and state.value.quality.is_good:
                check(state.value.value)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(timeout_s):
                    await reached.wait()
        finally:
            unlisten()
        return reached.is_set(), last[0]

    # ------------------------------------------------------------------ events

    def _sink(self, event: CommandEvent) -> None:
        self._bus.publish(COMMANDS_TOPIC, event.to_message())
        # The pipeline calls this right after the step changed the command: snapshot it now.
        cmd = self.pipeline.get(event.command_id) if event.step != "refused" else None
        snapshot = ({**cmd.snapshot(), "updated_at": event.ts, "last_step": event.step}
                    if cmd is not None else None)
        self._audit.extend([(event, snapshot)])

    def refused_before_the_pipeline(self, user: str | None, role: str | None, asset_id: str,
                                    rule: str, message: str, **detail: Any) -> None:
        """Audit (and publish) a command refused before it reached the pipeline — an OPC UA
        caller whose role may not command at all — like the pipeline's own refusals."""
        target = self.find(asset_id)
        self._sink(CommandEvent(
            "", "refused", self._clock(), user, role, None,
            target.kind.value if target is not None else "", asset_id,
            target.area_id if target is not None else None,
            {"rule": rule, "message": message, **detail}))

    async def flush(self) -> None:
        """Write the queued command events to the audit log and the history, in order."""
        await self._audit.flush()

    async def _record(self, batch: list[tuple[CommandEvent, dict[str, Any] | None]]) -> None:
        async with self._db.begin() as s:
            for e, snapshot in batch:
                targets = [f"{e.target_kind}:{e.asset_id}"] if e.asset_id else []
                if e.command_id:
                    targets.append(f"command:{e.command_id}")
                await audit.record(s, audit.Actor(e.user, e.role), audit.AuditEntry(
                    f"command.{e.step}", targets,
                    {"state": e.state.value if e.state else None, **e.detail},
                    outcome=e.step if e.step in ("refused", "failed", "expired") else "ok"),
                    now=e.ts)
                if snapshot is not None:
                    await commands.record(s, snapshot)

    async def _close_abandoned(self) -> None:
        """Close, in the history and the audit log, the commands left open by server processes
        that stopped (a restart): long past their time, nobody holds them any more."""
        now = self._clock()
        grace = dt.timedelta(seconds=self._readback_timeout_s + ABANDONED_AFTER_S)
        async with self._db.begin() as s:
            closed = await commands.close_abandoned(s, now, older_than=grace)
            for c in closed:
                await audit.record(s, audit.Actor(None, None), audit.AuditEntry(
                    f"command.{c.state}", [f"{c.target_kind}:{c.asset_id}", f"command:{c.id}"],
                    {"state": c.state, "outcome": c.outcome, "abandoned": True},
                    outcome=c.state), now=now)
        if closed:
            log.warning("control: %d commands of stopped server processes closed: %s",
                        len(closed), ", ".join(c.id for c in closed))

    async def _tick(self) -> None:
        while True:
            await asyncio.sleep(1.0)
            try:
                self.pipeline.tick()
            except Exception:
                log.exception("command tick failed")
