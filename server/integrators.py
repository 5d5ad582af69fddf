"""Composition of the OPC UA server for SCADA integrators (`opcua.server.IntegratorServer`):
its users and district names from the database, its Select/Operate/Cancel methods onto the
same command pipeline as GraphQL, its values from the tag store, history from the historian,
alarms from the bus.

Switched on by `GASOPS_OPCUA_SERVER_PORT`. asyncua's user manager is synchronous, so the login
facts (name, password hash, role, areas) are read from the database at start and every minute,
and a login verifies the password hash on the event loop (argon2: tens of milliseconds, once
per session).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from pathlib import Path
from typing import Any

from control.model import Action, Command, Operator
from control.pipeline import CommandPipeline
from control.pipeline import CommandRefused as PipelineRefused
from erp.services import accounts, registry
from opcua.server import CommandDenied, CommandRefused, IntegratorServer
from realtime.bus import AbstractBus
from realtime.historian.base import AbstractHistorian
from realtime.model import TagDef
from realtime.store import TagStore
from server.control import Control

__all__ = ["Integrators"]

log = logging.getLogger("gasops.integrators")

_DENIALS = {"role", "area", "owner", "four_eyes", "critical_consumers"}  # who asks, not what


# The live twin's value of every node and pipe: thousands of tags (≈15 KiB of address space
# each), which integrators read through GraphQL's networkState instead. Its residuals at the
# sensors and the areas' leak and estimation tags stay in.
_MODELLED_PER_ELEMENT = ("twin/node/", "twin/pipe/")


def _for_integrators(tag: TagDef) -> bool:
    """Whether the OPC UA server exposes `tag`."""
    return not tag.path.startswith(_MODELLED_PER_ELEMENT)


class _Commands:
    """The `CommandPort` of the OPC UA methods, onto the command pipeline."""

    def __init__(self, control: Control, directory: dict[str, accounts.LoginEntry]) -> None:
        self._control = control
        self._directory = directory

    def _operator(self, user: str, role: str) -> Operator:
        entry = self._directory.get(user)
        return Operator(user, role, entry.areas if entry else frozenset())

    @property
    def _pipeline(self) -> CommandPipeline:
        return self._control.pipeline

    async def select(self, user: str, role: str, target: str, action: str, value: float,
                     reason: str) -> dict[str, Any]:
        found = self._control.find(target)
        if found is None:
            raise CommandRefused(f"no commandable asset {target!r}")
        try:
            act = Action(action)
        except ValueError:
            raise CommandRefused(f"unknown action {action!r}") from None
        needs_value = act not in (Action.open, Action.close)
        return await self._run(self._pipeline.select(
            self._operator(user, role), found.kind, target, act,
            value if needs_value else None, reason))

    async def operate(self, user: str, role: str, command_id: str) -> dict[str, Any]:
        return await self._run(self._pipeline.operate(self._operator(user, role), command_id))

    async def refused(self, user: str | None, role: str | None, target: str, method: str,
                      message: str) -> None:
        """The server refused a call before the port: audited like the pipeline's refusals."""
        self._control.refused_before_the_pipeline(user, role, target, "role", message,
                                                  via="opcua", method=method)

    async def cancel(self, user: str, role: str, command_id: str) -> dict[str, Any]:
        async def cancel() -> Command:
            return self._pipeline.cancel(self._operator(user, role), command_id, "cancelled over OPC UA")
        return await self._run(cancel())

    @staticmethod
    async def _run(step: Any) -> dict[str, Any]:
        try:
            cmd: Command = await step
        except PipelineRefused as exc:
            raise (CommandDenied if exc.rule in _DENIALS else CommandRefused)(str(exc)) from None
        return {"command_id": cmd.id, **cmd.summary()}


class Integrators:
    """Owns the integrator-facing OPC UA server of this process."""

    def __init__(self, db: Any, store: TagStore, control: Control, *, host: str, port: int,
                 cert_dir: Path, historian: AbstractHistorian | None, bus: AbstractBus,
                 allow_anonymous: bool = False, trust_any_client: bool = False,
                 refresh_s: float = 60.0) -> None:
        self._db = db
        self._directory: dict[str, accounts.LoginEntry] = {}
        self._refresh_s = refresh_s
        self._task: asyncio.Task[None] | None = None
        self.server = IntegratorServer(
            store, cert_dir=cert_dir, users=self._login, host=host, port=port,
            historian=historian, bus=bus, allow_anonymous=allow_anonymous,
            commands=_Commands(control, self._directory), include=_for_integrators,
            trust_any_client=trust_any_client)

    def _login(self, username: str, password: str) -> str | None:
        entry = self._directory.get(username)
        return entry.role if accounts.password_matches(entry, password) and entry else None

    async def _load(self) -> None:
        async with self._db() as s:
            directory = await accounts.login_directory(s)
            districts = await registry.area_names(s)
        self._directory.clear()
        self._directory.update(directory)
        self.server.set_area_names(districts)

    async def start(self) -> None:
        """Read the users, start the server, refresh the users every minute."""
        await self._load()
        await self.server.start()
        self._task = asyncio.create_task(self._refresh(), name="opcua-users")
        log.info("OPC UA integrator server at %s", self.server.endpoint)

    async def stop(self) -> None:
        """Stop refreshing and stop the server; idempotent."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        await self.server.stop()

    async def _refresh(self) -> None:
        while True:
            await asyncio.sleep(self._refresh_s)
            try:
                await self._load()
            except Exception:  # keep the last directory; the database may be back next time
                log.exception("OPC UA user directory refresh failed")
