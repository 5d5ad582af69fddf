"""Message texts in Russian and English: an e-mail subject and body, and one SMS part.

Two situations: the alarm has just activated, and the escalation "still not acknowledged after
N min". Times are shown in the contact's time zone, because a dispatcher reading "02:10 UTC" at
05:10 Moscow time has to do arithmetic in the middle of an incident.

The SMS form must fit **one** SMS part, or the gateway splits it and phones show half a message
or none: 160 characters of the GSM 7-bit alphabet (characters of its extension table count two),
or, as soon as any character is outside it (any Cyrillic), 70 UCS-2 code units. Russian texts
are therefore terse; when the text is still too long the alarm message is shortened first, then
the area dropped, then the tag shortened from the left (its end names the point). `sms_fits`
states the rule the tests check.
"""

from __future__ import annotations

import datetime as dt
import zoneinfo
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

from realtime.alarms.model import AlarmEvent, Priority

__all__ = ["Rendered", "render", "sms_fits", "sms_units"]

GSM_BASIC: Final = frozenset(
    "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?"
    "¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà")
GSM_EXTENSION: Final = frozenset("\f^{}\\[~]|€")  # sent as ESC + char: two septets each
GSM_LIMIT: Final = 160  # septets in one part
UCS2_LIMIT: Final = 70  # UTF-16 code units in one part

PRIORITY_NAMES: Final = {
    "ru": {Priority.low: "низкий", Priority.medium: "средний", Priority.high: "высокий",
           Priority.critical: "критический"},
    "en": {Priority.low: "low", Priority.medium: "medium", Priority.high: "high",
           Priority.critical: "critical"},
}
_SMS_PRIORITY: Final = {
    "ru": {Priority.low: "НИЗК", Priority.medium: "СРЕД", Priority.high: "ВЫС",
           Priority.critical: "КРИТ"},
    "en": {Priority.low: "LOW", Priority.medium: "MEDIUM", Priority.high: "HIGH",
           Priority.critical: "CRITICAL"},
}
_TEXT: Final = {
    "ru": {"alarm": "Авария", "activated": "Сработала авария.",
           "escalation": "Авария не квитирована в течение {n} мин.",
           "esc_subject": "не квитирована {n} мин", "esc_sms": "НЕ КВИТ {n}мин",
           "priority": "Приоритет", "message": "Сообщение", "tag": "Тег", "value": "Значение",
           "area": "Район", "time": "Время", "id": "Авария (id)", "first_out": "Первопричина",
           "yes": "да", "none": "—", "time_fmt": "%d.%m.%Y %H:%M:%S %Z"},
    "en": {"alarm": "Alarm", "activated": "An alarm has activated.",
           "escalation": "The alarm has not been acknowledged after {n} min.",
           "esc_subject": "not acknowledged after {n} min", "esc_sms": "NOT ACKED {n}min",
           "priority": "Priority", "message": "Message", "tag": "Tag", "value": "Value",
           "area": "Area", "time": "Time", "id": "Alarm id", "first_out": "First out",
           "yes": "yes", "none": "n/a", "time_fmt": "%Y-%m-%d %H:%M:%S %Z"},
}


@dataclass(frozen=True, slots=True)
class Rendered:
    """The texts of one message: e-mail subject and body, and the one-part SMS / voice text."""

    subject: str
    body: str
    short: str


def sms_units(text: str) -> tuple[str, int]:
    """The encoding one part of `text` needs ('gsm' or 'ucs2') and its length in that encoding."""
    if all(ch in GSM_BASIC or ch in GSM_EXTENSION for ch in text):
        return "gsm", sum(2 if ch in GSM_EXTENSION else 1 for ch in text)
    return "ucs2", len(text.encode("utf-16-be", "surrogatepass")) // 2


def sms_fits(text: str) -> bool:
    """Whether `text` fits one SMS part (160 GSM septets, or 70 UCS-2 units)."""
    encoding, n = sms_units(text)
    return n <= (GSM_LIMIT if encoding == "gsm" else UCS2_LIMIT)


def _value(value: object, lang: str) -> str:
    if value is None:
        return _TEXT[lang]["none"]
    if isinstance(value, float):
        return f"{value:.6g}"
    return str(value)


def render(event: AlarmEvent, *, language: str, timezone: str, after_s: float = 0.0) -> Rendered:
    """The texts for `event` in `language` ('ru'/'en'), times in `timezone`.

    `after_s` > 0 makes it an escalation ("not acknowledged after N min"); 0 is the activation.
    """
    lang = language if language in _TEXT else "en"
    t = _TEXT[lang]
    minutes = max(1, round(after_s / 60)) if after_s > 0 else 0
    local = event.ts.astimezone(zoneinfo.ZoneInfo(timezone))
    prio = PRIORITY_NAMES[lang][event.priority]
    what = event.message or event.alarm_id
    value = _value(event.value, lang)
    if minutes:
        subject = f"{t['alarm']} ({prio}) {t['esc_subject'].format(n=minutes)}: {what}"
        head = t["escalation"].format(n=minutes)
    else:
        subject = f"{t['alarm']} ({prio}): {what}"
        head = t["activated"]
    lines = [head, "",
             f"{t['priority']}: {prio}",
             f"{t['message']}: {what}",
             f"{t['tag']}: {event.tag or t['none']}",
             f"{t['value']}: {value}",
             f"{t['area']}: {event.area_id or t['none']}",
             f"{t['time']}: {local.strftime(t['time_fmt'])}",
             f"{t['id']}: {event.alarm_id}"]
    if event.first_out:
        lines.append(f"{t['first_out']}: {t['yes']}")
    sms_head = _SMS_PRIORITY[lang][event.priority]
    if minutes:
        sms_head += " " + t["esc_sms"].format(n=minutes)
    short = _fit_sms(lambda m, tag, area: _sms(sms_head, m, tag, value, area, local),
                     what, event.tag, event.area_id or "")
    return Rendered(subject, "\n".join(lines) + "\n", short)


def _sms(head: str, message: str, tag: str, value: str, area: str, local: dt.datetime) -> str:
    parts = [f"{head}: {message}".rstrip(), f"{tag}={value}" if tag else value]
    if area:
        parts.append(area)
    parts.append(local.strftime("%H:%M"))
    return "; ".join(parts)


def _shorten(text: str, n: int, *, keep_end: bool = False) -> str:
    """`text` cut to at most `n` characters, the cut marked with '..'."""
    if len(text) <= n:
        return text
    if n <= 2:
        return ""
    return ".." + text[-(n - 2):] if keep_end else text[:n - 2] + ".."


def _fit_sms(build: Callable[[str, str, str], str], message: str, tag: str, area: str) -> str:
    """The first of ever terser texts that fits one SMS part, keeping as much message as fits."""

    def longest(tag: str, area: str, min_len: int) -> str | None:
        for n in range(len(message), min_len - 1, -1):
            text = build(_shorten(message, n), tag, area)
            if sms_fits(text):
                return text
        return None

    keep = min(len(message), 12)
    for candidate in (lambda: longest(tag, area, keep),  # 1. shorten the message (to 12)
                      lambda: longest(tag, "", keep)):  # 2. drop the area
        text = candidate()
        if text is not None:
            return text
    for n in range(len(tag) - 1, 7, -1):  # 3. shorten the tag from the left (its end names it)
        text = longest(_shorten(tag, n, keep_end=True), "", keep)
        if text is not None:
            return text
    tag = _shorten(tag, 8, keep_end=True)
    text = longest(tag, "", 0) or build("", tag, "")  # 4. the message goes
    while not sms_fits(text):  # 5. an absurdly long value: cut the text itself
        text = text[:-1]
    return text
