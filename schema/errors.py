"""Expected failures as GraphQL types (mutation result unions), and the refusal error."""

from __future__ import annotations

import strawberry
from strawberry.exceptions import StrawberryGraphQLError

from erp import errors as erp_errors

__all__ = ["AuthError", "FieldProblem", "Forbidden", "ForbiddenError", "NotFound",
           "ValidationError", "from_erp_error"]


@strawberry.type(description="One invalid field of one asset.")
class FieldProblem:
    asset_id: str
    field: str
    message: str


@strawberry.type(description="The input broke a rule; nothing was changed.")
class ValidationError:
    message: str
    field_errors: list[FieldProblem]


@strawberry.type(description="The target does not exist or is outside your areas.")
class NotFound:
    message: str
    id: str


@strawberry.type(description="Your role or areas do not allow this; the refusal is audited.")
class Forbidden:
    message: str


@strawberry.type(description="Wrong user name or password, or the account is disabled.")
class AuthError:
    message: str


class ForbiddenError(StrawberryGraphQLError):
    """Raised by query-field permissions; reported in `errors` with code FORBIDDEN."""

    def __init__(self, message: str) -> None:
        super().__init__(message, extensions={"code": "FORBIDDEN"})


def from_erp_error(exc: erp_errors.ErpError) -> ValidationError | NotFound | Forbidden:
    """The one mapping from domain exceptions to result types."""
    if isinstance(exc, erp_errors.ValidationFailed):
        return ValidationError(message=str(exc), field_errors=[
            FieldProblem(asset_id=e.asset_id, field=e.field, message=e.message)
            for e in exc.errors])
    if isinstance(exc, erp_errors.NotFound):
        return NotFound(message=str(exc), id=exc.asset_id)
    if isinstance(exc, erp_errors.Forbidden):
        return Forbidden(message=str(exc))
    if isinstance(exc, erp_errors.Conflict):
        return ValidationError(message=str(exc), field_errors=[])
    raise exc
