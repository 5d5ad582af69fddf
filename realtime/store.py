"""The tag store: the latest value of every tag, change detection and listeners.

`update()` applies the tag's deadband: a value within it is *reported* (the device said it)
but not *changed*; a quality change is always a change. Listeners get only changes, in
batches, so a subscriber is never flooded with repeats. The three times are kept apart, as
the historian and stale detection need them:
- `last_reported` — anything arrived (even an identical value),
- `last_updated` — a value was accepted into the store (passed the deadband or quality changed),
- `last_changed` — value or quality actually differs from before.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import NamedTuple

from realtime.model import Quality, TagDef, TagPath, TagValue

__all__ = ["Change", "TagState", "TagStore", "UnknownTag"]

log = logging.getLogger(__name__)


class UnknownTag(KeyError):
    """A value arrived for a path that has no definition."""


class TagState(NamedTuple):
    """What the store knows of one tag. (NamedTuples, not frozen dataclasses, for this and
    `Change`: one of each is built per value on the hot path, and a tuple builds ~4x faster.)"""

    value: TagValue
    last_changed: dt.datetime
    last_updated: dt.datetime
    last_reported: dt.datetime


class Change(NamedTuple):
    """A tag moved from `old` (None at first) to `new`."""

    path: TagPath
    old: TagValue | None
    new: TagValue


ChangeListener = Callable[[Sequence[Change]], None]


class TagStore:
    """Latest values by path; synchronous and loop-free, so drivers' callbacks can feed it."""

    def __init__(self, defs: Iterable[TagDef] = (),
                 clock: Callable[[], dt.datetime] = lambda: dt.datetime.now(dt.UTC)) -> None:
        self._defs: dict[TagPath, TagDef] = {d.path: d for d in defs}
        self._states: dict[TagPath, TagState] = {}
        self._listeners: list[ChangeListener] = []
        self._clock = clock

    # definitions -------------------------------------------------------------------------

    def define(self, tag: TagDef) -> None:
        """Add or replace a tag definition (its current value, if any, is kept)."""
        self._defs[tag.path] = tag

    def definition(self, path: TagPath) -> TagDef:
        """The definition of `path`; `UnknownTag` if none."""
        try:
            return self._defs[path]
        except KeyError:
            raise UnknownTag(path) from None

    @property
    def known(self) -> Mapping[TagPath, TagDef]:
        """Definitions by path (read-only view)."""
        return self._defs

    @property
    def paths(self) -> list[TagPath]:
        """Every defined path, sorted."""
        return sorted(self._defs)

    # values ------------------------------------------------------------------------------

    def get(self, path: TagPath) -> TagState | None:
        """The tag's state, or None before its first value."""
        return self._states.get(path)

    def snapshot(self, paths: Iterable[TagPath] | None = None) -> dict[TagPath, TagState]:
        """Current states of `paths` (all by default) that have a value."""
        wanted = self._states.keys() if paths is None else paths
        return {p: s for p in wanted if (s := self._states.get(p)) is not None}

    def update_many(self, values: Mapping[TagPath, TagValue]) -> list[Change]:
        """Apply a batch; notify listeners once with the changes; return them."""
        now = self._clock()  # one reading per batch: a batch arrives at one moment
        changes = [c for p, v in values.items() if (c := self._apply(p, v, now)) is not None]
        if changes:
            for listener in list(self._listeners):
                try:
                    listener(changes)
                except Exception:  # a faulty listener must not stop the others
                    log.exception("tag listener %r failed", listener)
        return changes

    def update(self, path: TagPath, value: TagValue) -> Change | None:
        """Apply one value; the change, or None when within the deadband / identical."""
        changes = self.update_many({path: value})
        return changes[0] if changes else None

    def _apply(self, path: TagPath, new: TagValue, now: dt.datetime) -> Change | None:
        tag = self.definition(path)
        state = self._states.get(path)
        if state is None:
            self._states[path] = TagState(new, now, now, now)
            return Change(path, None, new)
        old = state.value
        quality_changed = old.quality != new.quality
        if not quality_changed and not tag.deadband.exceeded(old.value, new.value, tag.span):
            self._states[path] = TagState(old, state.last_changed, state.last_updated, now)
            return None
        changed = quality_changed or old.value != new.value
        self._states[path] = TagState(new, now if changed else state.last_changed, now, now)
        return Change(path, old, new) if changed else None

    def mark_quality(self, paths: Iterable[TagPath], quality: Quality) -> list[Change]:
        """Set the quality of tags (keeping their last value), e.g. Bad on link loss."""
        now = self._clock()
        batch = {}
        for p in paths:
            state = self._states.get(p)
            value = state.value.value if state else None
            source = state.value.source_ts if state else now
            batch[p] = TagValue(value, quality, source, now)
        return self.update_many(batch)

    def stale(self, now: dt.datetime | None = None, factor: float = 3.0) -> list[TagPath]:
        """Tags with an expected period that reported nothing for `factor` × that period."""
        now = now or self._clock()
        out = []
        for path, tag in self._defs.items():
            if tag.expected_period_s is None:
                continue
            state = self._states.get(path)
            limit = dt.timedelta(seconds=factor * tag.expected_period_s)
            if state is None or now - state.last_reported > limit:
                out.append(path)
        return sorted(out)

    # listeners ---------------------------------------------------------------------------

    def listen(self, listener: ChangeListener) -> Callable[[], None]:
        """Call `listener(changes)` after every batch with changes; returns unsubscribe."""
        self._listeners.append(listener)

        def unsubscribe() -> None:
            if listener in self._listeners:
                self._listeners.remove(listener)

        return unsubscribe
