"""Root mutation: login, create/update/retire of every registry asset, users and API tokens.

Each mutation checks its permission first (a refusal is audited and returned as `Forbidden`),
then makes one service call inside one transaction — the service writes the audit record in
that same transaction — and publishes the change on the bus after commit.
"""

import dataclasses
import datetime as dt
from collections.abc import Callable
from typing import Annotated, Any, Generic, TypeVar

import strawberry
from strawberry import UNSET
from strawberry.tools import create_type
from strawberry.types import Info

from erp import errors as erp_errors
from erp.services import accounts, registry
from schema.alarms import ALARM_MUTATIONS
from schema.context import Context
from schema.control import COMMAND_MUTATIONS
from schema.errors import AuthError, Forbidden, NotFound, ValidationError, from_erp_error
from schema.leaks import LEAK_MUTATIONS
from schema.permissions import actor_of, refusal
from schema.twin import TWIN_MUTATIONS
from schema.types import assets as t
from schema.types import inputs as i

__all__ = ["ASSET_MUTATIONS", "Mutation", "REGISTRY_TOPIC"]

REGISTRY_TOPIC = "registry"
T = TypeVar("T")
_INPUT_RENAMES = {"node_kind": "kind", "station_kind": "kind", "meter_kind": "kind",
                  "equipment_kind": "kind"}


@strawberry.type(description="The change was made.")
class Success(Generic[T]):
    asset: T


@strawberry.type
class AssetChange:
    operation: str
    kind: str
    id: str
    actor: str | None
    ts: dt.datetime
    area_id: strawberry.Private[str | None] = None


def _values(inp: Any) -> tuple[str | None, dict[str, Any]]:
    out: dict[str, Any] = {}
    asset_id = None
    for f in dataclasses.fields(inp):
        v = getattr(inp, f.name)
        if v is UNSET:
            continue
        if f.name == "id":
            asset_id = v
            continue
        out[_INPUT_RENAMES.get(f.name, f.name)] = v
    return asset_id, out


def _scope(ctx: Context) -> registry.Scope:
    return registry.Scope(ctx.areas())


async def _run(info: Info[Context, Any], permission: str, operation: str, kind: str,
               cls: type[Any], call: Callable[..., Any]) -> Any:
    ctx = info.context
    denied = await refusal(info, permission, operation)
    if denied is not None:
        return denied
    try:
        async with ctx.services.db.begin() as s:
            row = await call(s)
    except erp_errors.ErpError as exc:
        return from_erp_error(exc)
    if ctx.services.response_cache is not None:
        ctx.services.response_cache.invalidate()
    ctx.services.bus.publish(REGISTRY_TOPIC, {
        "operation": operation, "kind": kind, "id": row.id, "actor": actor_of(ctx).username,
        "ts": dt.datetime.now(dt.UTC).isoformat(), "area_id": getattr(row, "area_id", None)})
    return Success(asset=t.from_row(cls, row))


def _rename(fn: Callable[..., Any], name: str) -> None:
    # create_type keys fields by the resolver's Python name: make each one unique.
    fn.__name__ = fn.__qualname__ = name


def _asset_mutations(kind: str, gql_name: str, cls: type[Any], create_in: type[Any],
                     update_in: type[Any] | None, permission: str = "registry.write",
                     retire: bool = True) -> list[Any]:
    """The create/update/retire mutations of one asset kind."""
    result = Annotated[Success[cls] | ValidationError | NotFound | Forbidden,  # type: ignore[valid-type]
                       strawberry.union(f"{gql_name}Result")]
    fields = []

    async def create(info: Info[Context, Any], input: create_in) -> result:  # type: ignore[valid-type]
        asset_id, values = _values(input)
        return await _run(info, permission, f"{kind}.create", kind, cls,
                          lambda s: registry.create_asset(s, kind, asset_id or "", values,
                                                          actor_of(info.context),
                                                          _scope(info.context)))

    _rename(create, f"create_{kind}")
    fields.append(strawberry.mutation(resolver=create, name=f"create{gql_name}",
                                      description=f"Add a {kind.replace('_', ' ')}."))
    if update_in is not None:
        async def update(info: Info[Context, Any], id: str, input: update_in) -> result:  # type: ignore[valid-type]
            _, values = _values(input)
            return await _run(info, permission, f"{kind}.update", kind, cls,
                              lambda s: registry.update_asset(s, kind, id, values,
                                                              actor_of(info.context),
                                                              _scope(info.context)))

        _rename(update, f"update_{kind}")
        fields.append(strawberry.mutation(resolver=update, name=f"update{gql_name}",
                                          description="Change some fields; the rest stay."))
    if retire:
        async def retire_(info: Info[Context, Any], id: str,
                          reason: str | None = None) -> result:  # type: ignore[valid-type]
            return await _run(info, permission, f"{kind}.retire", kind, cls,
                              lambda s: registry.retire_asset(s, kind, id,
                                                              actor_of(info.context),
                                                              _scope(info.context), reason))

        _rename(retire_, f"retire_{kind}")
        fields.append(strawberry.mutation(resolver=retire_, name=f"retire{gql_name}",
                                          description="Take out of service for good (kept "
                                                      "for history)."))
    return fields


ASSET_MUTATIONS: list[Any] = [
    *_asset_mutations("area", "Area", t.Area, i.AreaCreateInput, i.AreaUpdateInput,
                      permission="areas.write", retire=False),
    *_asset_mutations("node", "Node", t.NetworkNode, i.NodeCreateInput, i.NodeUpdateInput),
    *_asset_mutations("pipe", "Pipe", t.Pipe, i.PipeCreateInput, i.PipeUpdateInput),
    *_asset_mutations("station", "Station", t.Station, i.StationCreateInput,
                      i.StationUpdateInput),
    *_asset_mutations("valve", "Valve", t.Valve, i.ValveCreateInput, i.ValveUpdateInput),
    *_asset_mutations("skz", "SkzStation", t.SkzStation, i.SkzCreateInput, i.SkzUpdateInput),
    *_asset_mutations("service_point", "ServicePoint", t.ServicePoint,
                      i.ServicePointCreateInput, i.ServicePointUpdateInput),
    *_asset_mutations("meter", "Meter", t.Meter, i.MeterCreateInput, i.MeterUpdateInput),
    *_asset_mutations("equipment", "Equipment", t.Equipment, i.EquipmentCreateInput,
                      i.EquipmentUpdateInput),
]


# --- accounts -------------------------------------------------------------------------------


@strawberry.type(description="Signed in: use the token as `Authorization: Bearer …`.")
class LoginSuccess:
    access_token: str
    expires_at: dt.datetime
    user: t.User


@strawberry.type
class UserSuccess:
    user: t.User


@strawberry.type(description="The token is shown only now; store it safely.")
class ApiTokenSuccess:
    token: str
    expires_at: dt.datetime | None


@strawberry.input
class UserCreateInput:
    username: str
    password: str
    role: str
    full_name: str | None = None
    area_ids: list[str] = strawberry.field(default_factory=list)
    all_areas: bool = False


def _user(u: Any) -> t.User:
    return t.User(id=u.id, username=u.username, full_name=u.full_name, role=u.role,
                  all_areas=u.all_areas, active=u.active,
                  area_ids=sorted(a.id for a in u.areas))


async def login(info: Info[Context, Any], username: str,
                password: str) -> Annotated[LoginSuccess | AuthError,
                                            strawberry.union("LoginResult")]:
    ctx = info.context
    svc = ctx.services
    from erp.services import audit  # local: only login audits outside a service call

    async with svc.db.begin() as s:
        user = await accounts.check_password(s, username, password)
        who = audit.Actor(username, user.role if user else None, ctx.client_addr)
        await audit.record(s, who, audit.AuditEntry(
            "auth.login", [f"user:{user.id}"] if user else [],
            outcome="ok" if user else "refused"))
    if user is None:
        return AuthError(message="wrong user name or password, or account disabled")
    issued = accounts.issue_access_token(user, svc.signing_key, svc.access_token_ttl_s)
    assert issued.expires_at is not None
    return LoginSuccess(access_token=issued.token, expires_at=issued.expires_at, user=_user(user))


async def renew_token(info: Info[Context, Any]) -> Annotated[
        LoginSuccess | AuthError, strawberry.union("RenewTokenResult")]:
    """A fresh access token for a caller whose own access token is still valid.

    A wall display runs for months: it renews its token before expiry instead of keeping a
    password. A disabled account or a changed password stops renewal at once (the user row is
    read again here); API tokens are long-lived already and are not renewed this way.
    """
    ctx = info.context
    svc = ctx.services
    p = ctx.principal
    if p is None or p.via != "password":
        return AuthError(message="sign in first: only a valid access token can be renewed")
    from erp.adapters.orm import User  # local, as audit in login
    from erp.services import audit

    async with svc.db.begin() as s:
        user = await s.get(User, p.user_id)
        user = user if user is not None and user.active else None
        await audit.record(s, actor_of(ctx), audit.AuditEntry(
            "auth.renew", [f"user:{p.user_id}"], outcome="ok" if user else "refused"))
    if user is None:
        return AuthError(message="account disabled")
    issued = accounts.issue_access_token(user, svc.signing_key, svc.access_token_ttl_s)
    assert issued.expires_at is not None
    return LoginSuccess(access_token=issued.token, expires_at=issued.expires_at, user=_user(user))


async def create_user(info: Info[Context, Any], input: UserCreateInput) -> Annotated[
        UserSuccess | ValidationError | Forbidden, strawberry.union("CreateUserResult")]:
    ctx = info.context
    denied = await refusal(info, "users.write", "user.create")
    if denied is not None:
        return denied
    try:
        async with ctx.services.db.begin() as s:
            u = await accounts.create_user(
                s, input.username, input.password, input.role, actor_of(ctx),
                full_name=input.full_name, area_ids=input.area_ids, all_areas=input.all_areas)
    except erp_errors.ErpError as exc:
        return from_erp_error(exc)  # type: ignore[return-value]
    return UserSuccess(user=_user(u))


async def create_api_token(info: Info[Context, Any], name: str, ttl_days: int | None = None,
                           username: str | None = None) -> Annotated[
        ApiTokenSuccess | ValidationError | NotFound | Forbidden,
        strawberry.union("CreateApiTokenResult")]:
    ctx = info.context
    denied = await refusal(info, "tokens.own", "api_token.create")
    if denied is not None:
        return denied
    p = ctx.principal
    assert p is not None
    if username is not None and username != p.username and p.role != "admin":
        return Forbidden(message="only an admin creates tokens for other users")
    try:
        async with ctx.services.db.begin() as s:
            user_id = p.user_id
            if username is not None and username != p.username:
                from erp import views  # local: a lookup only this branch needs

                found = [u for u in await views.users(s) if u.username == username]
                if not found:
                    return NotFound(message=f"user {username!r} not found", id=username)
                user_id = found[0].id
            issued = await accounts.create_api_token(s, user_id, name, actor_of(ctx), ttl_days)
    except erp_errors.ErpError as exc:
        return from_erp_error(exc)
    return ApiTokenSuccess(token=issued.token, expires_at=issued.expires_at)


Mutation = create_type("Mutation", [
    strawberry.mutation(resolver=login, description="Sign in; returns a short-lived token."),
    strawberry.mutation(resolver=renew_token,
                        description="Renew your still-valid access token (long-running pages)."),
    strawberry.mutation(resolver=create_user, description="Add a user (admin)."),
    strawberry.mutation(resolver=create_api_token,
                        description="A long-lived API token for an integrator."),
    *ASSET_MUTATIONS,
    *ALARM_MUTATIONS,
    *COMMAND_MUTATIONS,
    *TWIN_MUTATIONS,
    *LEAK_MUTATIONS,
])
