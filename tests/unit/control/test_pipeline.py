"""The command pipeline's steps and each of its refusals."""

from __future__ import annotations

import pytest

from control.model import Action, CommandEvent, CommandState, Operator, TargetKind
from control.pipeline import CommandRefused
from tests.unit.control._fakes import Clock, make_field, make_pipeline

OP = Operator("ivanov", "operator", frozenset({"NORTH"}))
OP2 = Operator("sidorov", "operator", frozenset({"NORTH"}))
DISP = Operator("petrova", "dispatcher", None)
ENG = Operator("kuznetsov", "engineer", None)
CREW = Operator("crew1", "crew", frozenset({"NORTH"}))
V = TargetKind.valve


@pytest.fixture
def env() -> tuple:  # type: ignore[type-arg]
    f, clock, events = make_field(), Clock(), []
    return f, clock, events, make_pipeline(f, clock, events)


async def test_select_then_operate_writes_and_reads_back(env: tuple) -> None:  # type: ignore[type-arg]
    f, clock, events, p = env
    cmd = await p.select(OP, V, "V1", Action.close, None, "leak reported at Lenina 5")
    assert cmd.state is CommandState.selected and cmd.impact.consumers_cut_off == 0
    assert cmd.checks == ["role", "area", "action", "remote", "communication", "actuator", "lockout",
                          "rate", "limits", "ratings", "critical_consumers"]
    clock.advance(10)
    done = await p.operate(OP, cmd.id)
    assert done.state is CommandState.succeeded and f.writes == [("valve/V1/position", 0.0)]
    assert [e.step for e in events] == ["selected", "operate", "written", "succeeded"]
    assert all(e.user == "ivanov" and e.command_id == cmd.id for e in events)


async def test_operate_without_select_is_refused(env: tuple) -> None:  # type: ignore[type-arg]
    _, _, _, p = env
    with pytest.raises(CommandRefused, match="no command"):
        await p.operate(OP, "CMD-nope")


async def test_operate_after_the_select_expired_is_refused(env: tuple) -> None:  # type: ignore[type-arg]
    f, clock, events, p = env
    cmd = await p.select(OP, V, "V1", Action.close, None, "test")
    clock.advance(30)
    with pytest.raises(CommandRefused, match="expired"):
        await p.operate(OP, cmd.id)
    assert f.writes == [] and "expired" in [e.step for e in events]
    again = await p.select(OP2, V, "V1", Action.open, None, "the reservation is free again")
    assert again.state is CommandState.selected


async def test_operate_by_another_user_is_refused(env: tuple) -> None:  # type: ignore[type-arg]
    f, _, events, p = env
    cmd = await p.select(OP, V, "V1", Action.close, None, "test")
    with pytest.raises(CommandRefused, match="selected by ivanov") as exc:
        await p.operate(OP2, cmd.id)
    assert exc.value.rule == "owner" and f.writes == []
    assert events[-1].step == "refused" and events[-1].user == "sidorov"


async def test_a_reserved_target_refuses_a_second_selection(env: tuple) -> None:  # type: ignore[type-arg]
    _, _, _, p = env
    await p.select(OP, V, "V1", Action.close, None, "test")
    with pytest.raises(CommandRefused, match="reserved by ivanov"):
        await p.select(OP2, V, "V1", Action.open, None, "test")


@pytest.mark.parametrize(("who", "asset", "rule"), [
    (CREW, "V1", "role"),  # a role without the right
    (OP, "V9", "area"),  # another area
    (OP, "MANUAL", "remote"),
])
async def test_select_refusals(env: tuple, who: Operator, asset: str, rule: str) -> None:  # type: ignore[type-arg]
    f, _, events, p = env
    with pytest.raises(CommandRefused) as exc:
        await p.select(who, V, asset, Action.close, None, "test")
    assert exc.value.rule == rule and f.writes == []
    assert events[-1].step == "refused" and events[-1].detail["rule"] == rule


async def test_bad_quality_target_is_refused_at_select_and_at_operate(env: tuple) -> None:  # type: ignore[type-arg]
    f, _, _, p = env
    f.bad.add("V1")
    with pytest.raises(CommandRefused, match="bad or uncertain quality"):
        await p.select(OP, V, "V1", Action.close, None, "test")
    f.bad.clear()
    cmd = await p.select(OP, V, "V1", Action.close, None, "test")
    f.bad.add("V1")  # communication degrades between select and operate
    with pytest.raises(CommandRefused, match="quality"):
        await p.operate(OP, cmd.id)
    assert f.writes == []


async def test_a_high_impact_close_needs_a_second_persons_approval(env: tuple) -> None:  # type: ignore[type-arg]
    f, clock, _, p = env
    cmd = await p.select(OP, V, "V2", Action.close, None, "replace the valve body")
    assert cmd.state is CommandState.awaiting_approval and cmd.impact.consumers_cut_off == 60
    with pytest.raises(CommandRefused, match="approval") as exc:
        await p.operate(OP, cmd.id)
    assert exc.value.rule == "four_eyes"
    with pytest.raises(CommandRefused, match="second person"):
        p.approve(OP, cmd.id, "self")
    with pytest.raises(CommandRefused, match="may not approve"):
        p.approve(OP2, cmd.id, "operators do not approve")
    p.approve(ENG, cmd.id, "planned, consumers notified")
    clock.advance(5)
    done = await p.operate(OP, cmd.id)
    assert done.state is CommandState.succeeded and done.approved_by == "kuznetsov"


async def test_cutting_off_a_critical_consumer_needs_the_override_role(env: tuple) -> None:  # type: ignore[type-arg]
    f, _, _, p = env
    with pytest.raises(CommandRefused, match="critical consumers \\(HOSPITAL-1\\)") as exc:
        await p.select(OP, V, "V4", Action.close, None, "test")
    assert exc.value.rule == "critical_consumers"
    cmd = await p.select(DISP, V, "V4", Action.close, None, "gas in the boiler room")
    assert cmd.needs_override and cmd.state is CommandState.awaiting_approval


async def test_a_refused_write_and_a_missing_read_back_fail_with_the_reason(env: tuple) -> None:  # type: ignore[type-arg]
    f, _, events, p = env
    f.refuse_writes.add("valve/V1/position")
    cmd = await p.operate(OP, (await p.select(OP, V, "V1", Action.close, None, "t")).id)
    assert cmd.state is CommandState.failed and "slave device failure" in cmd.outcome
    f.stuck.add("skz/SKZ-1/mode")
    cmd = await p.operate(OP, (await p.select(OP, TargetKind.skz, "SKZ-1", Action.set_skz_mode, 1,
                                              "t")).id)
    assert cmd.state is CommandState.failed and "no read-back of 1" in cmd.outcome
    assert [e.step for e in events if e.command_id == cmd.id][-1] == "failed"


async def test_limits_lockout_rate_and_cancel(env: tuple) -> None:  # type: ignore[type-arg]
    f, clock, events, p = env
    with pytest.raises(CommandRefused, match="outside -3.0…0.0 V"):
        await p.select(OP, TargetKind.skz, "SKZ-1", Action.set_skz_setpoint, -4.0, "t")
    with pytest.raises(CommandRefused, match="cannot set skz mode"):
        await p.select(OP, V, "V1", Action.set_skz_mode, 1, "t")
    p.lock_out(V, "V3", "WO-88: valve body replacement")
    with pytest.raises(CommandRefused, match="locked out: WO-88"):
        await p.select(OP, V, "V3", Action.close, None, "t")
    for _ in range(3):
        cmd = await p.select(OP, V, "V1", Action.open, None, "t")
        assert p.cancel(OP, cmd.id, "changed my mind").state is CommandState.cancelled
    with pytest.raises(CommandRefused, match="3 commands in the last 10 min"):
        await p.select(OP, V, "V1", Action.open, None, "t")
    clock.advance(601)
    assert (await p.select(OP, V, "V1", Action.open, None, "t")).state is CommandState.selected


def _steps(events: list[CommandEvent]) -> list[str]:
    return [e.step for e in events]


async def test_skz_at_its_rating_gets_no_command_asking_for_more_output(env: tuple) -> None:  # type: ignore[type-arg]
    f, clock, events, p = env
    skz = TargetKind.skz
    f.values.update({"skz/SKZ-1/i_out": 24.2, "skz/SKZ-1/u_out": 30.0, "skz/SKZ-1/setpoint": -1.2})
    # 24.2 A of 25 A (97 %): a more negative potential would need more current
    with pytest.raises(CommandRefused, match=r"delivers 24.2 A of its rated 25 A") as refused:
        await p.select(OP, skz, "SKZ-1", Action.set_skz_setpoint, -1.5, "t")
    assert refused.value.rule == "ratings"
    # a less negative set-point lowers the output: allowed
    cmd = await p.select(OP, skz, "SKZ-1", Action.set_skz_setpoint, -1.0, "t")
    p.cancel(OP, cmd.id, "t")
    # over its rating (a fault, a shorted anode): only switching off is accepted
    f.values.update({"skz/SKZ-1/i_out": 26.0, "skz/SKZ-1/u_out": 49.5})
    with pytest.raises(CommandRefused, match=r"26.0 A of its rated 25 A and 49.5 V of its rated 48 V"):
        await p.select(OP, skz, "SKZ-1", Action.set_skz_mode, 0, "t")
    off = await p.select(OP, skz, "SKZ-1", Action.set_skz_mode, 3, "t")
    assert off.state is CommandState.selected
    p.cancel(OP, off.id, "t")
    # with headroom, the same set-point change passes
    f.values.update({"skz/SKZ-1/i_out": 12.0, "skz/SKZ-1/u_out": 20.0})
    ok = await p.select(OP, skz, "SKZ-1", Action.set_skz_setpoint, -1.5, "t")
    assert ok.state is CommandState.selected
