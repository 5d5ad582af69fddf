"""Who may use the integrator server: sessions, their gasops roles, and the caller of a request.

asyncua keeps one `User` per session and offers two hooks: a user manager (session activation)
and a permission ruleset (every later request). `Users` refuses sessions over an unsecured
channel, checks UserName tokens against gasops accounts and keeps the gasops role on the
session's user (`Account`); `Rules` applies asyncua's role rules (users may read, browse,
subscribe, read history and call methods; never edit the address space) and notes the sender
of each request in `current_caller`, which the method handlers read (asyncua does not pass
the session to a method callback). A connection's requests are processed one at a time in its
own task, so the value set for a request is the one its method call sees.
"""

from __future__ import annotations

import contextvars
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from asyncua.crypto.permission_rules import PermissionRuleset, SimpleRoleRuleset, User, UserRole
from asyncua.server.user_managers import UserManager

__all__ = ["Account", "Rules", "Users", "current_caller"]

log = logging.getLogger("opcua.server")


@dataclass
class Account(User):
    """A session's user with its gasops role (None: anonymous). asyncua keeps a `User` per
    session, so carrying the role means extending its dataclass."""

    gasops_role: str | None = None


current_caller: contextvars.ContextVar[Account | None] = contextvars.ContextVar("opcua_caller",
                                                                            default=None)


class Users(UserManager):
    """UserName tokens checked by `users`; a secure channel is required for every session, and
    its client certificate must be `trusted` (checked at CreateSession already; checked again
    here on the channel's own certificate, which a client cannot leave out)."""

    def __init__(self, users: Callable[[str, str], str | None], can_read: Callable[[str], bool],
                 allow_anonymous: bool, trusted: Callable[[bytes], bool] = lambda _der: True,
                 ) -> None:
        self._users = users
        self._can_read = can_read
        self._allow_anonymous = allow_anonymous
        self._trusted = trusted

    def get_user(self, iserver: Any, username: str | None = None, password: str | None = None,
                 certificate: Any = None) -> User | None:
        """The session's user, or None to refuse it (BadUserAccessDenied)."""
        if not certificate:
            # No peer certificate (None or b""): the session came over an unsecured (None) channel,
            # which asyncua keeps open for GetEndpoints even when no None endpoint is offered.
            log.warning("OPC UA session over an unsecured channel refused (user %r)", username)
            return None
        if not self._trusted(bytes(certificate)):
            log.warning("OPC UA session refused (user %r): the channel's client certificate is "
                        "not trusted", username)
            return None
        if username is None:
            return Account(role=UserRole.User, name="anonymous") if self._allow_anonymous else None
        if isinstance(password, bytes | bytearray):
            try:
                password = bytes(password).decode()
            except UnicodeDecodeError:
                return None
        try:
            role = self._users(username, password or "")
        except Exception:
            log.exception("OPC UA login of %r: the user lookup failed", username)
            return None
        if role is None or not self._can_read(role):
            log.info("OPC UA login refused for %r", username)
            return None
        return Account(role=UserRole.User, name=username, gasops_role=role)


class Rules(PermissionRuleset):
    """asyncua's role rules (users read, browse, subscribe, call; never edit the address space),
    remembering who sent the request being processed, for the method handlers."""

    def __init__(self) -> None:
        self._inner = SimpleRoleRuleset()

    def check_validity(self, user: Any, action_type_id: Any, body: Any) -> bool:
        """Whether `user` may send this request; notes them as the current caller."""
        current_caller.set(user if isinstance(user, Account) else None)
        return bool(self._inner.check_validity(user, action_type_id, body))
