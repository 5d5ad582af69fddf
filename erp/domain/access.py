"""Roles, permissions and who holds them: the access policy as data.

A permission is a short verb string (`registry.write`). Each GraphQL field and mutation names
one; this table says which roles hold it. Area scoping is separate: a user with `all_areas`
sees every district, others only theirs (see `Principal.areas`).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

__all__ = ["PERMISSIONS", "Principal", "Role", "allowed"]


class Role(StrEnum):
    """Every role of the platform."""

    admin = "admin"
    dispatcher = "dispatcher"
    operator = "operator"
    engineer = "engineer"
    foreman = "foreman"
    crew = "crew"
    contractor = "contractor"
    service_org = "service_org"
    consumer = "consumer"
    legal_entity = "legal_entity"
    integrator = "integrator"


_STAFF = frozenset({Role.admin, Role.dispatcher, Role.operator, Role.engineer, Role.foreman,
                    Role.crew})

# permission → roles holding it
PERMISSIONS: dict[str, frozenset[Role]] = {
    # Read the network registry (map, assets, summary).
    "registry.read": _STAFF | {Role.integrator},
    # Create, change and retire network assets.
    "registry.write": frozenset({Role.admin, Role.engineer}),
    # Areas (districts) themselves.
    "areas.write": frozenset({Role.admin}),
    # Users, roles and API tokens.
    "users.read": frozenset({Role.admin}),
    "users.write": frozenset({Role.admin}),
    # Own API tokens (integrators manage theirs; admins everybody's).
    "tokens.own": frozenset({Role.admin, Role.integrator}),
    # The audit trail.
    "audit.read": frozenset({Role.admin, Role.engineer}),
    # Crews (field service).
    "crews.read": frozenset({Role.admin, Role.dispatcher, Role.foreman, Role.engineer}),
    # Where crews are: their last positions, the day's tracks and the live feed. Who holds it
    # sees the crews of his areas, except a foreman: only the crews he leads
    # (`erp.services.crews.sees_crew`).
    "crews.positions": frozenset({Role.admin, Role.dispatcher, Role.foreman, Role.engineer}),
    # Report one's own crew's position (the crew app); the foreman rides with his crew.
    "crews.report": frozenset({Role.crew, Role.foreman}),
    # Telemetry: tags, latest values, history and live updates.
    "telemetry.read": _STAFF | {Role.integrator},
    # Alarms: the active list, the journal, performance figures, the live feed.
    "alarms.read": _STAFF | {Role.integrator},
    # Acknowledge, shelve, unshelve and comment alarms (of one's own areas).
    "alarms.act": frozenset({Role.admin, Role.dispatcher, Role.operator}),
    # Control commands: select, operate and cancel valves, SKZ and set-points (own areas).
    "control.operate": frozenset({Role.admin, Role.dispatcher, Role.operator}),
    # Approve another person's high-impact command (four-eyes).
    "control.approve": frozenset({Role.admin, Role.dispatcher, Role.engineer}),
    # Put assets in maintenance (commands locked out, alarms suppressed) and back.
    "maintenance.write": frozenset({Role.admin, Role.dispatcher, Role.engineer}),
    # See commands and their live steps.
    "commands.read": _STAFF | {Role.integrator},
    # The live hydraulic twin's state; running what-if scenarios.
    "twin.read": _STAFF | {Role.integrator},
    "twin.scenarios": frozenset({Role.admin, Role.dispatcher, Role.engineer}),
    # Live registry change feed.
    "registry.subscribe": _STAFF | {Role.integrator},
    # Gas balance and losses per district and branch (query and CSV/XLSX export): engineers
    # analyse losses, dispatchers send crews to the flagged branches.
    "balance.read": frozenset({Role.admin, Role.dispatcher, Role.engineer}),
    # Demand forecasts (days ahead, hourly, the design day): planners, dispatchers, engineers.
    "forecast.read": _STAFF | {Role.integrator},
    # Anyone signed in: who am I.
    "self.read": frozenset(Role),
}


def allowed(permission: str, role: str | None) -> bool:
    """Whether `role` holds `permission`; unknown permissions are refused to everybody."""
    roles = PERMISSIONS.get(permission)
    return role is not None and roles is not None and role in roles


@dataclass(frozen=True, slots=True)
class Principal:
    """An authenticated caller: id, name, role and the areas in scope (None = all)."""

    user_id: int
    username: str
    role: str
    areas: frozenset[str] | None
    via: str = "password"  # "password" (access token) or "api_token"
