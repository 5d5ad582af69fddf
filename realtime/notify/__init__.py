"""Alarm notifications (NOTIF-1): routing rules as data, channels, escalation, delivery status.

The pure parts and the ports are exported here. Adapters are imported from their modules (only
the composition root and tests do), so that importing the notifier loads no network client:
`realtime.notify.channels` (SMTP, SMS, webhook, PBX; `build_channel`), `realtime.notify.sms`
(SMS gateways: HTTP, SMPP), `realtime.notify.jobs` (`JobRunner`, `InProcessJobs`, `RqJobs`,
`deliver_job`), `realtime.notify.signing` (`verify_signature` for webhook receivers).
"""

from realtime.notify.model import AttemptResult as AttemptResult
from realtime.notify.model import Channel as Channel
from realtime.notify.model import ConfigError as ConfigError
from realtime.notify.model import DeliveryFailed as DeliveryFailed
from realtime.notify.model import DeliveryJob as DeliveryJob
from realtime.notify.model import DeliveryStatus as DeliveryStatus
from realtime.notify.model import NotifyError as NotifyError
from realtime.notify.model import OutgoingMessage as OutgoingMessage
from realtime.notify.model import StatusChange as StatusChange
from realtime.notify.model import message_key as message_key
from realtime.notify.notifier import Notifier as Notifier
from realtime.notify.rules import Contact as Contact
from realtime.notify.rules import EscalationLevel as EscalationLevel
from realtime.notify.rules import NotificationConfig as NotificationConfig
from realtime.notify.rules import OnCallRoster as OnCallRoster
from realtime.notify.rules import PlannedMessage as PlannedMessage
from realtime.notify.rules import RetryPolicy as RetryPolicy
from realtime.notify.rules import RoutingRule as RoutingRule
from realtime.notify.rules import Shift as Shift
from realtime.notify.rules import Target as Target
from realtime.notify.rules import TimeWindow as TimeWindow
from realtime.notify.rules import parse_config as parse_config
from realtime.notify.rules import route as route
from realtime.notify.store import InMemoryMessageStore as InMemoryMessageStore
from realtime.notify.store import MessageRecord as MessageRecord
from realtime.notify.store import MessageStore as MessageStore
from realtime.notify.store import UnknownMessage as UnknownMessage
from realtime.notify.templates import Rendered as Rendered
from realtime.notify.templates import render as render

__all__ = [
    "AttemptResult",
    "Channel",
    "ConfigError",
    "Contact",
    "DeliveryFailed",
    "DeliveryJob",
    "DeliveryStatus",
    "EscalationLevel",
    "InMemoryMessageStore",
    "MessageRecord",
    "MessageStore",
    "NotificationConfig",
    "Notifier",
    "NotifyError",
    "OnCallRoster",
    "OutgoingMessage",
    "PlannedMessage",
    "Rendered",
    "RetryPolicy",
    "RoutingRule",
    "Shift",
    "StatusChange",
    "Target",
    "TimeWindow",
    "UnknownMessage",
    "message_key",
    "parse_config",
    "render",
    "route",
]
