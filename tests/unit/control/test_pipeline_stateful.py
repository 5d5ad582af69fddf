"""A stateful property test of the command pipeline: 10,000 generated sequences of select,
approve, operate, cancel and time steps across users, roles, areas and targets.

After every step: no write ever reached a device without a valid selection by the same user,
unexpired, approved by a second person with the right role when the impact required it, by a
role allowed to operate, in the operator's area; at most one open command holds each target;
and every call left at least one audit event (a step or a refusal), every write its operate,
written and final events.
"""

from __future__ import annotations

import asyncio
import datetime as dt

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import Bundle, RuleBasedStateMachine, invariant, rule

from control.model import Action, CommandState, Operator, TargetKind
from control.pipeline import CommandRefused
from control.rules import ControlPolicy
from tests.unit.control._fakes import Clock, make_field, make_pipeline

USERS = [Operator("ivanov", "operator", frozenset({"NORTH"})),
         Operator("sidorov", "operator", frozenset({"NORTH"})),
         Operator("south", "operator", frozenset({"SOUTH"})),
         Operator("petrova", "dispatcher", None),
         Operator("kuznetsov", "engineer", None),
         Operator("crew1", "crew", frozenset({"NORTH"}))]
POLICY = ControlPolicy()


class CommandMachine(RuleBasedStateMachine):
    commands = Bundle("commands")

    def __init__(self) -> None:
        super().__init__()
        self.loop = asyncio.new_event_loop()
        self.field, self.clock, self.events = make_field(), Clock(), []
        self.pipeline = make_pipeline(self.field, self.clock, self.events)
        self.expiry: dict[str, dt.datetime] = {}  # what the selection/approval promised

    def _call(self, fn: object) -> object:
        before = len(self.events)
        try:
            result = fn() if not asyncio.iscoroutine(fn) else self.loop.run_until_complete(fn)
        except CommandRefused:
            result = None
        assert len(self.events) > before, "a call left no audit event"
        return result

    @rule(target=commands, who=st.sampled_from(USERS),
          asset=st.sampled_from(["V1", "V2", "V4", "V9", "MANUAL"]),
          action=st.sampled_from([Action.close, Action.open]))
    def select(self, who: Operator, asset: str, action: Action) -> str:
        cmd = self._call(self.pipeline.select(who, TargetKind.valve, asset, action, None, "test"))
        if cmd is None:
            return "CMD-refused"
        self.expiry[cmd.id] = cmd.expires_at  # type: ignore[attr-defined]
        return cmd.id  # type: ignore[attr-defined, no-any-return]

    @rule(cid=commands, who=st.sampled_from(USERS))
    def approve(self, cid: str, who: Operator) -> None:
        cmd = self._call(lambda: self.pipeline.approve(who, cid, "agreed"))
        if cmd is not None:
            self.expiry[cid] = cmd.expires_at  # type: ignore[attr-defined]

    @rule(cid=commands, who=st.sampled_from(USERS))
    def operate(self, cid: str, who: Operator) -> None:
        writes = len(self.field.writes)
        at = self.clock.now
        self._call(self.pipeline.operate(who, cid))
        if len(self.field.writes) == writes:
            return
        cmd = self.pipeline.get(cid)
        assert cmd is not None
        assert cmd.selected_by == who, "operated by someone else than the selector"
        assert at < self.expiry[cid], "operated after the selection expired"
        assert who.role in POLICY.operate_roles
        assert who.areas is None or cmd.target.area_id in who.areas
        if cmd.needs_approval:
            assert cmd.approved_by is not None and cmd.approved_by != who.user
            approver = next(u for u in USERS if u.user == cmd.approved_by)
            assert approver.role in POLICY.approve_roles
        if cmd.needs_override:
            assert who.role in POLICY.override_roles
        steps = [e.step for e in self.events if e.command_id == cid]
        assert steps[0] == "selected" and {"operate", "written"} <= set(steps)
        assert steps[-1] in ("succeeded", "failed")

    @rule(cid=commands, who=st.sampled_from(USERS))
    def cancel(self, cid: str, who: Operator) -> None:
        self._call(lambda: self.pipeline.cancel(who, cid, "no"))

    @rule(seconds=st.sampled_from([1, 5, 20, 29, 31, 300, 700]), tick=st.booleans())
    def wait(self, seconds: int, tick: bool) -> None:
        self.clock.advance(seconds)
        if tick:  # the server ticks every second; the steps must not rely on it
            self.pipeline.tick()

    @invariant()
    def one_open_command_per_target(self) -> None:
        open_targets = [c.target.asset_id for c in self.pipeline.commands() if c.state.open]
        assert len(open_targets) == len(set(open_targets))
        for c in self.pipeline.commands():
            if c.state is CommandState.succeeded:
                assert c.finished_at is not None

    def teardown(self) -> None:
        self.loop.close()


CommandMachine.TestCase.settings = settings(max_examples=10_000, stateful_step_count=12,
                                            deadline=None)
test_command_pipeline_properties = CommandMachine.TestCase
