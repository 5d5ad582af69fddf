"""Alarm journal events (`realtime.alarms.model.AlarmEvent`) as OPC UA AlarmConditionType events.

Each gasops alarm is one condition, ``ConditionId = nsu=urn:gasops:server;s=alarm/<alarm id>``
(conditions are not browsable nodes: clients see them through events and ConditionRefresh).
Fields set, beyond BaseEventType's:

- Severity (and LastSeverity) from the priority: low 250, medium 500, high 750, critical 1000;
- SourceName = the tag path, SourceNode = InputNode = the tag's variable (when it is exposed);
- Message = the alarm's message (else its id and what happened);
- ActiveState/Id: status unack or acked; AckedState/Id: status acked or normal (ISA-18.2 →
  OPC UA Part 9); Retain while active or unacknowledged;
- EnabledState/Id false out of service; SuppressedState/Id while suppressed, SuppressedOrShelved
  while suppressed or shelved; Comment and ClientUserId from operator actions.

Acknowledge/Confirm methods are not offered: alarms are acted on in gasops (GraphQL, audited).
"""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Final

from asyncua import ua
from asyncua.common.event_objects import AlarmCondition

from realtime.alarms.model import AlarmEvent, AlarmMode, AlarmStatus, Priority

__all__ = ["SEVERITY", "alarm_condition_event", "condition_id"]

SEVERITY: Final = {Priority.low: 250, Priority.medium: 500, Priority.high: 750, Priority.critical: 1000}
_ACTIVE: Final = frozenset({AlarmStatus.unack, AlarmStatus.acked})
_ACKED: Final = frozenset({AlarmStatus.acked, AlarmStatus.normal})
_DATE: Final = ua.VariantType.DateTime


def condition_id(alarm_id: str, ns: int) -> ua.NodeId:
    """The ConditionId of a gasops alarm."""
    return ua.NodeId(f"alarm/{alarm_id}", ns)


def alarm_condition_event(event: AlarmEvent, *, ns: int, source: ua.NodeId | None,
                          now: dt.datetime) -> AlarmCondition:
    """An AlarmConditionType event for one journal event; `emitting_node` is still to be set."""
    severity = SEVERITY.get(event.priority, 500)
    message = event.message or f"{event.alarm_id}: {event.kind.value}"
    ev = AlarmCondition(sourcenode=source or ua.NodeId(ua.ObjectIds.Server), message=message,
                        severity=severity)
    ev.EventId = uuid.uuid4().bytes
    ev.SourceName = event.tag or event.alarm_id
    ev.Time = event.ts
    ev.ReceiveTime = now
    ev.LocalTime = ua.TimeZoneDataType(Offset=0, DaylightSavingInOffset=False)
    ev.add_property("NodeId", condition_id(event.alarm_id, ns), ua.VariantType.NodeId)  # the ConditionId
    ev.ConditionClassId = ua.NodeId(ua.ObjectIds.ProcessConditionClassType)
    ev.ConditionClassName = ua.LocalizedText("Process")
    ev.ConditionName = event.alarm_id
    ev.BranchId = ua.NodeId()
    active = event.status in _ACTIVE
    acked = event.status in _ACKED
    enabled = event.mode is not AlarmMode.out_of_service
    ev.Retain = active or not acked
    ev.EnabledState = ua.LocalizedText("Enabled" if enabled else "Disabled")
    setattr(ev, "EnabledState/Id", enabled)
    ev.ActiveState = ua.LocalizedText("Active" if active else "Inactive")
    setattr(ev, "ActiveState/Id", active)
    if event.activated_at is not None:
        ev.add_property("ActiveState/TransitionTime", event.activated_at, _DATE)
    ev.AckedState = ua.LocalizedText("Acknowledged" if acked else "Unacknowledged")
    setattr(ev, "AckedState/Id", acked)
    suppressed = event.mode is AlarmMode.suppressed
    ev.SuppressedState = ua.LocalizedText("Suppressed" if suppressed else "Unsuppressed")
    setattr(ev, "SuppressedState/Id", suppressed)
    ev.SuppressedOrShelved = suppressed or event.mode is AlarmMode.shelved
    out_of_service = event.mode is AlarmMode.out_of_service
    ev.OutOfServiceState = ua.LocalizedText("Out of service" if out_of_service else "In service")
    setattr(ev, "OutOfServiceState/Id", out_of_service)
    ev.Quality = ua.StatusCode(ua.StatusCodes.Good)
    ev.LastSeverity = severity
    ev.Comment = ua.LocalizedText(event.comment)
    ev.ClientUserId = event.user or ""
    ev.FirstInGroupFlag = event.first_out
    if source is not None:
        ev.InputNode = source
    return ev
