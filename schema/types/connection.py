"""Relay cursor connections over keyset pages (cursor = the last row's id)."""

from __future__ import annotations

from typing import Generic, TypeVar

import strawberry
from strawberry import relay

__all__ = ["Connection", "Edge", "decode_cursor", "encode_cursor"]

T = TypeVar("T")

_PREFIX = "cursor"


def encode_cursor(key: str | int) -> str:
    """Opaque cursor of a row key."""
    return relay.to_base64(_PREFIX, str(key))


def decode_cursor(cursor: str) -> str:
    """The row key inside a cursor; ValueError when it is not one of ours."""
    try:
        prefix, key = relay.from_base64(cursor)
    except Exception as exc:  # noqa: BLE001 - any decoding problem is the same bad input
        raise ValueError(f"invalid cursor {cursor!r}") from exc
    if prefix != _PREFIX:
        raise ValueError(f"invalid cursor {cursor!r}")
    return key


@strawberry.type
class Edge(Generic[T]):
    cursor: str
    node: T


@strawberry.type(description="A page of results with Relay page info.")
class Connection(Generic[T]):
    edges: list[Edge[T]]
    page_info: relay.PageInfo
    total_count: int | None = strawberry.field(
        description="Number of matching items; computed only when selected.")
