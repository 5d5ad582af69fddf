"""Permission checks for GraphQL fields and mutations, with audited refusals.

Every root field carries `Can("perm")`; mutations call `refusal(info, perm, op)` first and
return `Forbidden` when it says no. The policy itself (who holds what) is `erp.domain.access`.
"""

from __future__ import annotations

from typing import Any

from strawberry.permission import BasePermission
from strawberry.types import Info

from erp.domain.access import allowed
from erp.services import audit
from schema.context import Context
from schema.errors import Forbidden

__all__ = ["Can", "actor_of", "audit_refusal", "refusal"]


def actor_of(ctx: Context) -> audit.Actor:
    """The audit actor of the caller."""
    p = ctx.principal
    return audit.Actor(p.username if p else None, p.role if p else None, ctx.client_addr)


async def audit_refusal(ctx: Context, operation: str, permission: str) -> None:
    """Record a refused authorization in its own transaction."""
    async with ctx.services.db.begin() as s:
        await audit.record(s, actor_of(ctx), audit.AuditEntry(
            operation, [], {"permission": permission}, outcome="forbidden"))


def _message(ctx: Context, permission: str) -> str:
    if ctx.principal is None:
        return f"Forbidden: sign in first ({permission} needed)"
    return f"Forbidden: role {ctx.principal.role!r} lacks {permission!r}"


async def refusal(info: Info[Context, Any], permission: str, operation: str) -> Forbidden | None:
    """None when the caller holds `permission`; otherwise an audited `Forbidden`."""
    ctx = info.context
    role = ctx.principal.role if ctx.principal else None
    if allowed(permission, role):
        return None
    await audit_refusal(ctx, operation, permission)
    return Forbidden(message=_message(ctx, permission))


class _Can(BasePermission):
    """Field permission; subclasses are made by `Can` with a fixed `permission`."""

    permission = ""
    error_extensions = {"code": "FORBIDDEN"}  # noqa: RUF012

    async def has_permission(self, source: Any, info: Info[Context, Any], **kwargs: Any) -> bool:
        ctx = info.context
        role = ctx.principal.role if ctx.principal else None
        if allowed(self.permission, role):
            return True
        self.message = _message(ctx, self.permission)
        await audit_refusal(ctx, f"query.{info.field_name}", self.permission)
        return False


_cache: dict[str, type[_Can]] = {}


def Can(permission: str) -> type[BasePermission]:  # noqa: N802 - reads as a type in field decls
    """The permission class requiring `permission` (one class per permission)."""
    cls = _cache.get(permission)
    if cls is None:
        cls = _cache[permission] = type(f"Can[{permission}]", (_Can,), {"permission": permission})
    return cls


