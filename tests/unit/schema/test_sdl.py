"""The committed SDL matches the code, and every root field names a permission."""

from __future__ import annotations

from schema.permissions import _Can
from schema.query import Query
from schema.schema import SDL_PATH, sdl
from schema.subscription import Subscription


def test_committed_sdl_is_current() -> None:
    assert SDL_PATH.read_text() == sdl(), "run `gasops export-schema` and commit schema.graphql"


def test_every_query_and_subscription_field_has_a_permission() -> None:
    missing = []
    for root in (Query, Subscription):
        for field in root.__strawberry_definition__.fields:  # type: ignore[attr-defined]
            if not any(issubclass(p, _Can) for p in field.permission_classes):
                missing.append(f"{root.__name__}.{field.name}")
    assert missing == []
