"""Users, passwords, access tokens and API tokens.

Passwords are argon2id hashes. Access tokens are short-lived signed JWTs (HS256) carrying the
user id; each request reloads the user, so a deactivated user loses access at once. API tokens
for integrators are random strings shown once; only their SHA-256 is stored.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import secrets
from collections.abc import Iterable
from dataclasses import dataclass

import jwt
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from erp.adapters.orm import ApiToken, Area, User
from erp.domain.access import Principal, Role
from erp.domain.rules import FieldError
from erp.errors import Conflict, NotFound, ValidationFailed
from erp.services import audit

__all__ = [
    "IssuedToken",
    "LoginEntry",
    "login_directory",
    "password_matches",
    "authenticate_bearer",
    "check_password",
    "create_api_token",
    "create_user",
    "issue_access_token",
    "principal_of",
    "token_expired",
]

_HASHER = PasswordHasher()
API_TOKEN_PREFIX = "gso_"
MIN_PASSWORD_LEN = 8


@dataclass(frozen=True, slots=True)
class IssuedToken:
    """A token as shown to its owner once, with its expiry (None = no expiry)."""

    token: str
    expires_at: dt.datetime | None


def principal_of(user: User, via: str = "password") -> Principal:
    """The caller identity of a loaded user."""
    areas = None if user.all_areas else frozenset(a.id for a in user.areas)
    return Principal(user.id, user.username, user.role, areas, via)


async def create_user(session: AsyncSession, username: str, password: str, role: str,
                      actor: audit.Actor, *, full_name: str | None = None,
                      area_ids: Iterable[str] = (), all_areas: bool = False) -> User:
    """Add a user with an argon2 password hash; audited. Raises ValidationFailed, Conflict."""
    errors = []
    if not username or len(username) > 100 or not username.replace(".", "").replace(
        "_", "").replace("-", "").isalnum():
        errors.append(FieldError(username or "?", "username",
                                 "1–100 letters, digits, '.', '_' or '-'"))
    if role not in Role.__members__:
        errors.append(FieldError(username, "role", f"{role!r} is not one of {sorted(Role)}"))
    if len(password) < MIN_PASSWORD_LEN:
        errors.append(FieldError(username, "password",
                                 f"must be at least {MIN_PASSWORD_LEN} characters"))
    areas = list((await session.execute(select(Area).where(Area.id.in_(list(area_ids)))))
                 .scalars())
    missing = set(area_ids) - {a.id for a in areas}
    if missing:
        errors.append(FieldError(username, "area_ids", f"unknown areas {sorted(missing)}"))
    if errors:
        raise ValidationFailed(errors)
    if (await session.execute(select(User.id).where(User.username == username))).first():
        raise Conflict(f"user {username!r} already exists")
    user = User(username=username, full_name=full_name, role=role, all_areas=all_areas,
                password_hash=_HASHER.hash(password), areas=areas)
    session.add(user)
    await session.flush()
    await audit.record(session, actor, audit.AuditEntry(
        "user.create", [f"user:{user.id}"],
        {"username": {"before": None, "after": username}, "role": {"before": None, "after": role},
         "areas": {"before": None, "after": sorted(area_ids)},
         "all_areas": {"before": None, "after": all_areas}}))
    return user


async def check_password(session: AsyncSession, username: str, password: str) -> User | None:
    """The active user with this name and password, or None (same cost either way)."""
    user = (await session.execute(select(User).where(User.username == username))).scalar_one_or_none()
    stored = user.password_hash if user is not None and user.password_hash else None
    try:
        # Verify against a dummy hash when the user is unknown, so timing does not tell.
        _HASHER.verify(stored or _DUMMY_HASH, password)
    except (VerificationError, InvalidHashError):
        return None
    if user is None or stored is None or not user.active:
        return None
    return user


_DUMMY_HASH = _HASHER.hash("not-a-real-password-for-timing")


@dataclass(frozen=True, slots=True)
class LoginEntry:
    """What a synchronous login check needs (OPC UA's user manager cannot await the database)."""

    password_hash: str | None
    role: str
    areas: frozenset[str] | None  # None = all areas
    active: bool


async def login_directory(session: AsyncSession) -> dict[str, LoginEntry]:
    """Every user's login facts, by user name (refreshed by the caller now and then)."""
    users = (await session.execute(select(User))).scalars().all()
    return {u.username: LoginEntry(u.password_hash, u.role,
                                   None if u.all_areas else frozenset(a.id for a in u.areas),
                                   u.active) for u in users}


def password_matches(entry: LoginEntry | None, password: str) -> bool:
    """Whether `password` opens this active account (same cost when there is none)."""
    try:
        _HASHER.verify((entry.password_hash if entry else None) or _DUMMY_HASH, password)
    except (VerificationError, InvalidHashError):
        return False
    return entry is not None and entry.active and entry.password_hash is not None


def issue_access_token(user: User, key: str, ttl_s: int,
                       now: dt.datetime | None = None) -> IssuedToken:
    """A signed short-lived access token for `user`."""
    now = now or dt.datetime.now(dt.UTC)
    exp = now + dt.timedelta(seconds=ttl_s)
    token = jwt.encode({"sub": str(user.id), "iat": int(now.timestamp()),
                        "exp": int(exp.timestamp()), "typ": "access"}, key, algorithm="HS256")
    return IssuedToken(token, exp)


async def create_api_token(session: AsyncSession, user_id: int, name: str, actor: audit.Actor,
                           ttl_days: int | None = None) -> IssuedToken:
    """A new long-lived API token for a user; only its hash is stored; audited."""
    user = await session.get(User, user_id)
    if user is None:
        raise NotFound("user", str(user_id))
    raw = API_TOKEN_PREFIX + secrets.token_urlsafe(32)
    now = dt.datetime.now(dt.UTC)
    exp = now + dt.timedelta(days=ttl_days) if ttl_days else None
    tok = ApiToken(user_id=user_id, name=name, created_at=now, expires_at=exp,
                   token_sha256=hashlib.sha256(raw.encode()).hexdigest())
    session.add(tok)
    await session.flush()
    await audit.record(session, actor, audit.AuditEntry(
        "api_token.create", [f"user:{user_id}", f"api_token:{tok.id}"],
        {"name": {"before": None, "after": name},
         "expires_at": {"before": None, "after": audit.jsonable(exp)}}))
    return IssuedToken(raw, exp)


def token_expired(token: str, now: dt.datetime | None = None) -> bool:
    """For an access token: whether its `exp` has passed (signature not checked here).

    API tokens carry no expiry of their own and return False; their expiry is in the database.
    """
    if token.startswith(API_TOKEN_PREFIX):
        return False
    try:
        exp = jwt.decode(token, options={"verify_signature": False}).get("exp", 0)
    except jwt.PyJWTError:
        return True
    return float(exp) <= (now or dt.datetime.now(dt.UTC)).timestamp()


async def authenticate_bearer(session: AsyncSession, token: str, key: str,
                              now: dt.datetime | None = None) -> Principal | None:
    """The principal behind an access token or an API token, or None if invalid/expired."""
    now = now or dt.datetime.now(dt.UTC)
    if token.startswith(API_TOKEN_PREFIX):
        digest = hashlib.sha256(token.encode()).hexdigest()
        row = (await session.execute(select(ApiToken).where(ApiToken.token_sha256 == digest))
               ).scalar_one_or_none()
        if row is None or row.revoked_at is not None or (
            row.expires_at is not None and row.expires_at <= now
        ):
            return None
        user = await session.get(User, row.user_id)
        via = "api_token"
    else:
        try:
            claims = jwt.decode(token, key, algorithms=["HS256"],
                                options={"require": ["exp", "sub"]})
        except jwt.PyJWTError:
            return None
        if claims.get("typ") != "access":
            return None
        user = await session.get(User, int(claims["sub"]))
        via = "password"
    if user is None or not user.active:
        return None
    return principal_of(user, via)
