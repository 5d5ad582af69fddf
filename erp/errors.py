"""Exceptions of the business domain; `schema/` maps them to GraphQL result types in one place."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from erp.domain.rules import FieldError

__all__ = ["AuditWriteFailed", "Conflict", "ErpError", "Forbidden", "NotFound", "ValidationFailed"]


class ErpError(Exception):
    """Base of every expected failure in `erp`."""


class ValidationFailed(ErpError):
    """Input breaks registry rules; `errors` names every asset and field at fault."""

    def __init__(self, errors: Sequence[FieldError]) -> None:
        self.errors = list(errors)
        shown = "; ".join(str(e) for e in self.errors[:20])
        more = f" (and {len(self.errors) - 20} more)" if len(self.errors) > 20 else ""
        super().__init__(f"{len(self.errors)} validation error(s): {shown}{more}")


class NotFound(ErpError):
    """The asset does not exist (or is outside the caller's areas)."""

    def __init__(self, kind: str, asset_id: str) -> None:
        self.kind, self.asset_id = kind, asset_id
        super().__init__(f"{kind} {asset_id!r} not found")


class Conflict(ErpError):
    """The change collides with existing data (duplicate id, …)."""


class Forbidden(ErpError):
    """The caller may not do this (role or area)."""


class AuditWriteFailed(ErpError):
    """The audit record could not be written, so the action must not happen."""
