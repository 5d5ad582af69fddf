"""Seeding the demo town: the network (from `erp.demo_town`), one user per role, and crews."""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import insert, select
from sqlalchemy.ext.asyncio import AsyncSession

from erp.adapters import orm
from erp.demo_town import generate_demo_town
from erp.domain.access import Role
from erp.services import accounts, audit, registry, tags
from erp.services import alarms as alarm_service
from server.field import assign_demo_sources

__all__ = ["SeedResult", "read_credentials", "seed_demo", "write_credentials"]

SEED_ACTOR = audit.Actor("seed-demo", "admin", None)


@dataclass(frozen=True, slots=True)
class SeedResult:
    """What seeding did: whether the town was new, its asset counts, and demo credentials."""

    created: bool
    counts: dict[str, int]
    credentials: dict[str, str]


def _credentials_file(var_dir: Path) -> Path:
    return var_dir / "demo-credentials.txt"


def read_credentials(var_dir: Path) -> dict[str, str]:
    """Demo user → password, as written at seeding time (empty if none)."""
    path = _credentials_file(var_dir)
    if not path.exists():
        return {}
    pairs = (line.split(" ", 1) for line in path.read_text().splitlines() if " " in line)
    return {u: p for u, p in pairs}


async def seed_demo(session: AsyncSession, var_dir: Path, seed: int = 42) -> SeedResult:
    """Seed once: a second call finds the town and changes nothing."""
    if (await session.execute(select(orm.Area.id).limit(1))).first() is not None:
        return SeedResult(False, {}, read_credentials(var_dir))
    town = generate_demo_town(seed)
    summary = await registry.bulk_import(session, town.records, SEED_ACTOR,
                                         operation="demo.seed")
    tag_count = await tags.ensure_tags(session)
    await assign_demo_sources(session)
    await alarm_service.ensure_alarm_definitions(session)
    district_ids = sorted({r.id for r in town.records if r.kind == "area"})
    creds: dict[str, str] = {}

    async def add(username: str, role: str, areas: list[str], all_areas: bool) -> orm.User:
        password = secrets.token_urlsafe(9)
        creds[username] = password
        return await accounts.create_user(session, username, password, role, SEED_ACTOR,
                                          full_name=f"Demo {role}", area_ids=areas,
                                          all_areas=all_areas)

    for role in Role:
        wide = role in {Role.admin, Role.dispatcher, Role.operator, Role.engineer,
                        Role.integrator}
        await add(role.value, role.value, [] if wide else district_ids[:1], wide)
    users: dict[str, orm.User] = {}
    for crew in town.crews:
        for name in (crew.foreman, *crew.members):
            if name not in users:
                role = Role.foreman if name == crew.foreman else Role.crew
                users[name] = await add(name, role.value, [crew.area_id], False)
    for crew in town.crews:
        session.add(orm.Crew(id=crew.id, name=crew.name, area_id=crew.area_id,
                             vehicle=crew.vehicle, foreman_user_id=users[crew.foreman].id))
    await session.flush()
    rows = [{"crew_id": c.id, "user_id": users[m].id} for c in town.crews for m in c.members]
    if rows:
        await session.execute(insert(orm.crew_members), rows)
    return SeedResult(True, {**summary.counts, "tag": tag_count}, creds)


def write_credentials(var_dir: Path, creds: dict[str, str]) -> Path:
    """Keep the demo passwords in `var/` (mode 0600) so `seed-demo` can show them again."""
    path = _credentials_file(var_dir)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.touch(mode=0o600)
    path.write_text("".join(f"{u} {p}\n" for u, p in creds.items()))
    return path
