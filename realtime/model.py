"""Value types of the live side: quality, a timestamped tag value, tag definitions.

No dependencies beyond the standard library, so every package may use them. Quality follows
OPC UA StatusCode semantics: the top two bits give Good / Uncertain / Bad, the rest a sub-code;
drivers of other protocols map their own failures onto the same codes.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from enum import IntEnum, StrEnum
from typing import Any

__all__ = [
    "Deadband",
    "DeadbandKind",
    "Quality",
    "QualityClass",
    "TagDef",
    "TagPath",
    "TagValue",
    "Value",
]

TagPath = str  # a stable id such as "station/GRP-12/p_out"
Value = float | int | bool | str | None


class QualityClass(IntEnum):
    """The severity of a status code (its top two bits)."""

    good = 0
    uncertain = 1
    bad = 2


class Quality(IntEnum):
    """OPC UA status codes used by gasops (values as in the OPC UA specification, Part 4/6)."""

    GOOD = 0x00000000
    GOOD_LOCAL_OVERRIDE = 0x00960000
    UNCERTAIN = 0x40000000
    UNCERTAIN_LAST_USABLE_VALUE = 0x40900000
    UNCERTAIN_SENSOR_NOT_ACCURATE = 0x40930000
    UNCERTAIN_ENGINEERING_UNITS_EXCEEDED = 0x40940000
    BAD = 0x80000000
    BAD_CONFIG_ERROR = 0x80890000
    BAD_NOT_CONNECTED = 0x808A0000
    BAD_DEVICE_FAILURE = 0x808B0000
    BAD_SENSOR_FAILURE = 0x808C0000
    BAD_COMMUNICATION_ERROR = 0x80050000
    BAD_TIMEOUT = 0x800A0000
    BAD_OUT_OF_SERVICE = 0x808D0000
    BAD_WAITING_FOR_INITIAL_DATA = 0x80320000
    BAD_NO_COMMUNICATION = 0x80310000

    @property
    def severity(self) -> QualityClass:
        """Good, Uncertain or Bad."""
        top = int(self) >> 30  # 0b00 good, 0b01 uncertain, 0b10/0b11 bad
        return QualityClass.bad if top >= 2 else QualityClass(top)

    @property
    def is_good(self) -> bool:
        """Whether the value may be used without reservation."""
        return self.severity is QualityClass.good

    @classmethod
    def from_status_code(cls, code: int) -> Quality:
        """The nearest known code for any OPC UA status code (unknown sub-codes keep severity)."""
        code &= 0xFFFF0000
        try:
            return cls(code)
        except ValueError:
            top = code & 0xC0000000
            return cls.GOOD if top == 0 else cls.UNCERTAIN if top == 0x40000000 else cls.BAD


@dataclass(frozen=True, slots=True)
class TagValue:
    """One observation of a tag: value, quality, when the device measured it (`source_ts`)
    and when gasops received it (`server_ts`); both UTC, tz-aware."""

    value: Value
    quality: Quality
    source_ts: dt.datetime
    server_ts: dt.datetime

    def __post_init__(self) -> None:
        if self.source_ts.tzinfo is None or self.server_ts.tzinfo is None:
            raise ValueError("TagValue timestamps must be tz-aware (UTC)")


class DeadbandKind(StrEnum):
    """How a deadband is measured."""

    none = "none"
    absolute = "absolute"  # in the tag's engineering unit
    percent = "percent"  # of the tag's span (range_high - range_low)


@dataclass(frozen=True, slots=True)
class Deadband:
    """A change smaller than this is not a change (quality changes always are)."""

    kind: DeadbandKind = DeadbandKind.none
    value: float = 0.0

    def exceeded(self, old: Value, new: Value, span: float | None) -> bool:
        """Whether moving from `old` to `new` is a reportable change."""
        if type(old) is float and type(new) is float:  # the common case, first and fast
            if self.kind is DeadbandKind.none:
                return old != new
            limit = self.value if self.kind is DeadbandKind.absolute else (
                self.value / 100.0 * (span or 0.0))
            return abs(new - old) > limit
        if old is None or new is None or not isinstance(old, int | float) or not isinstance(
                new, int | float) or isinstance(old, bool) or isinstance(new, bool):
            return old != new
        if self.kind is DeadbandKind.none:
            return old != new
        limit = self.value if self.kind is DeadbandKind.absolute else (
            self.value / 100.0 * (span or 0.0))
        return abs(float(new) - float(old)) > limit


@dataclass(frozen=True, slots=True)
class TagDef:
    """A tag's definition: path, what it measures, unit, scaling, deadband, expected period.

    `raw → engineering value = raw * scale + offset`. `unit` is the engineering unit as shown
    (SI inside: Pa, K or °C said explicitly, m³/h at standard conditions…).
    """

    path: TagPath
    unit: str = ""
    description: str = ""
    asset_id: str | None = None
    area_id: str | None = None
    data_type: str = "float"  # float | int | bool | str
    scale: float = 1.0
    offset: float = 0.0
    deadband: Deadband = field(default_factory=Deadband)
    range_low: float | None = None
    range_high: float | None = None
    expected_period_s: float | None = None  # stale when nothing arrives for 2-3x this
    writable: bool = False

    @property
    def span(self) -> float | None:
        """range_high - range_low, when both are known."""
        if self.range_low is None or self.range_high is None:
            return None
        return self.range_high - self.range_low

    def engineering(self, raw: Any) -> Value:
        """Scale a raw device value to engineering units (numbers only)."""
        if isinstance(raw, bool) or not isinstance(raw, int | float):
            return raw  # type: ignore[no-any-return]
        value = raw * self.scale + self.offset
        return int(value) if self.data_type == "int" and float(value).is_integer() else value
