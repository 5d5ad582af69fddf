"""Writes to the network asset registry: bulk import (all-or-nothing) and single-asset
create / update / retire, each validated by `erp.domain.rules` and audited in the same
transaction.

An *asset record* is `(kind, id, values)`: `values` are ORM field names in SI units, plus
`protected_pipe_ids` for SKZ stations. Importers and the demo seeder produce such records;
GraphQL mutations produce one at a time.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

from sqlalchemy import delete, func, insert, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from erp.adapters import orm
from erp.domain import rules
from erp.errors import Conflict, Forbidden, NotFound, ValidationFailed
from erp.services import audit

__all__ = [
    "ASSET_MODELS",
    "AssetRecord",
    "ImportSummary",
    "Scope",
    "area_names",
    "bulk_import",
    "create_asset",
    "load_levels",
    "corrector_service_points",
    "network_records",
    "retire_asset",
    "update_asset",
]

ASSET_MODELS: dict[str, type[orm.Base]] = {
    "area": orm.Area,
    "node": orm.NetworkNode,
    "pipe": orm.Pipe,
    "station": orm.Station,
    "valve": orm.Valve,
    "link": orm.NetworkLink,
    "skz": orm.SkzStation,
    "service_point": orm.ServicePoint,
    "meter": orm.Meter,
    "equipment": orm.Equipment,
}
# Insert order honours foreign keys.
_ORDER = ["area", "node", "pipe", "station", "valve", "link", "skz", "service_point", "meter",
          "equipment"]
_NODE_REFS = {"pipe": ("from_node_id", "to_node_id"), "valve": ("from_node_id", "to_node_id"),
              "link": ("from_node_id", "to_node_id"),
              "station": ("inlet_node_id", "outlet_node_id"), "service_point": ("node_id",)}
_OTHER_REFS = {"meter": {"service_point_id": "service_point", "station_id": "station"},
               "equipment": {"station_id": "station", "parent_id": "equipment"}}
_SKIP = {"created_at", "updated_at"}


class AssetRecord(NamedTuple):
    """One asset to write: its kind, stable id and field values (SI units)."""

    kind: str
    id: str
    values: Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class Scope:
    """Which areas a caller may change; `None` means every area."""

    areas: frozenset[str] | None = None

    def allows(self, area_id: str | None) -> bool:
        """Whether an asset in `area_id` is inside the scope (area-less assets need all areas)."""
        return self.areas is None or (area_id is not None and area_id in self.areas)


@dataclass(frozen=True, slots=True)
class ImportSummary:
    """How many assets of each kind were written."""

    counts: Mapping[str, int]


def _columns(kind: str) -> list[str]:
    model = ASSET_MODELS[kind]
    return [c.key for c in model.__table__.columns if c.key not in _SKIP]  # type: ignore[attr-defined]


def row_values(kind: str, obj: orm.Base) -> dict[str, Any]:
    """The record values of a loaded ORM object (without timestamps)."""
    return {k: getattr(obj, k) for k in _columns(kind) if k != _pk(kind)}


def _pk(kind: str) -> str:
    return "id"


async def load_levels(session: AsyncSession) -> dict[str, rules.LevelBounds]:
    """Pressure levels as configured in the database."""
    rows = (await session.execute(select(orm.PressureLevel))).scalars().all()
    return {r.code: rules.LevelBounds(r.code, r.min_pa_gauge, r.max_pa_gauge, r.rank) for r in rows}


async def _existing_ids(session: AsyncSession, kind: str, ids: Iterable[str]) -> set[str]:
    model = ASSET_MODELS[kind]
    wanted = list(set(ids))
    found: set[str] = set()
    for i in range(0, len(wanted), 500):
        chunk = wanted[i : i + 500]
        found.update((await session.execute(
            select(model.id).where(model.id.in_(chunk))  # type: ignore[attr-defined]
        )).scalars())
    return found


async def _node_levels(session: AsyncSession, ids: Iterable[str]) -> dict[str, str]:
    wanted = list(set(ids))
    out: dict[str, str] = {}
    for i in range(0, len(wanted), 500):
        chunk = wanted[i : i + 500]
        rows = await session.execute(
            select(orm.NetworkNode.id, orm.NetworkNode.pressure_level).where(
                orm.NetworkNode.id.in_(chunk), orm.NetworkNode.status != "retired"
            )
        )
        out.update({r[0]: r[1] for r in rows})
    return out


async def _serial_conflicts(session: AsyncSession,
                            meters: Sequence[AssetRecord]) -> list[rules.FieldError]:
    """Meter serials are unique: within the input and against the database."""
    errors: list[rules.FieldError] = []
    first_seen: dict[str, str] = {}
    for m in meters:
        serial = m.values.get("serial")
        if serial is None:
            continue
        if serial in first_seen:
            errors.append(rules.FieldError(m.id, "serial",
                                           f"serial {serial!r} also on meter {first_seen[serial]!r}"))
        first_seen.setdefault(serial, m.id)
    serials = list(first_seen)
    for i in range(0, len(serials), 500):
        rows = await session.execute(select(orm.Meter.id, orm.Meter.serial).where(
            orm.Meter.serial.in_(serials[i : i + 500])))
        for meter_id, serial in rows:
            errors.append(rules.FieldError(first_seen[serial], "serial",
                                           f"serial {serial!r} belongs to meter {meter_id!r}"))
    return errors


def _clean(kind: str, rec_id: str, values: Mapping[str, Any]) -> tuple[dict[str, Any],
                                                                       list[rules.FieldError]]:
    cols = set(_columns(kind)) | ({"protected_pipe_ids"} if kind == "skz" else set())
    unknown = sorted(set(values) - cols)
    errs = [rules.FieldError(rec_id, f, "unknown field") for f in unknown]
    return {k: v for k, v in values.items() if k in cols}, errs


async def _check(session: AsyncSession, records: Sequence[AssetRecord],
                 levels: Mapping[str, rules.LevelBounds], *, new: bool) -> list[rules.FieldError]:
    """Every rule over a batch, resolving references against the batch and the database."""
    errors: list[rules.FieldError] = []
    seen: dict[str, set[str]] = {}
    for r in records:
        ids = seen.setdefault(r.kind, set())
        if new and r.id in ids:
            errors.append(rules.FieldError(r.id, "id", f"duplicate {r.kind} id in the input"))
        ids.add(r.id)
        errors.extend(rules.validate(r.kind, r.id, r.values, levels))
    if new:
        for kind, ids in seen.items():
            for dup in sorted(await _existing_ids(session, kind, ids)):
                errors.append(rules.FieldError(dup, "id", f"{kind} {dup!r} already exists"))
        errors.extend(await _serial_conflicts(session, [r for r in records if r.kind == "meter"]))
    # Resolve references: nodes with their levels, other kinds by id.
    batch_nodes = {r.id: r.values.get("pressure_level") for r in records if r.kind == "node"}
    node_refs = {r.values[f] for r in records for f in _NODE_REFS.get(r.kind, ())
                 if r.values.get(f) is not None}
    node_levels = await _node_levels(session, node_refs - batch_nodes.keys())
    node_levels.update({k: v for k, v in batch_nodes.items() if v is not None})
    exists: dict[str, set[str]] = {}
    wanted: dict[str, set[str]] = {}
    for r in records:
        for f, target in _OTHER_REFS.get(r.kind, {}).items():
            if r.values.get(f) is not None:
                wanted.setdefault(target, set()).add(r.values[f])
        if r.kind == "skz":
            wanted.setdefault("pipe", set()).update(r.values.get("protected_pipe_ids") or ())
        if r.values.get("area_id") is not None:
            wanted.setdefault("area", set()).add(r.values["area_id"])
    for target, ids in wanted.items():
        exists[target] = seen.get(target, set()) | await _existing_ids(session, target, ids)
    for r in records:
        errors.extend(rules.check_references(r.kind, r.id, r.values, node_levels, exists))
    return errors


async def bulk_import(session: AsyncSession, records: Sequence[AssetRecord], actor: audit.Actor,
                      operation: str = "network.import") -> ImportSummary:
    """Validate every record, then write them all in the session's transaction, or none.

    Raises `ValidationFailed` naming each asset and field at fault; the caller's transaction
    is then to be rolled back (nothing has been flushed).
    """
    cleaned: list[AssetRecord] = []
    errors: list[rules.FieldError] = []
    for r in records:
        if r.kind not in ASSET_MODELS:
            errors.append(rules.FieldError(r.id, "kind", f"unknown asset kind {r.kind!r}"))
            continue
        vals, errs = _clean(r.kind, r.id, r.values)
        errors.extend(errs)
        cleaned.append(AssetRecord(r.kind, r.id, vals))
    levels = await load_levels(session)
    errors.extend(await _check(session, cleaned, levels, new=True))
    if errors:
        raise ValidationFailed(errors)
    counts: dict[str, int] = {}
    for kind in _ORDER:
        rows = [dict(r.values, id=r.id) for r in cleaned if r.kind == kind]
        if not rows:
            continue
        links = [(row["id"], pid) for row in rows for pid in row.pop("protected_pipe_ids", None) or ()]
        model = ASSET_MODELS[kind]
        for i in range(0, len(rows), 2000):
            await session.execute(insert(model), rows[i : i + 2000])
        if links:
            await session.execute(insert(orm.skz_protected_pipes),
                                  [{"skz_id": s, "pipe_id": p} for s, p in links])
        counts[kind] = len(rows)
    await _bump_version(session)
    await audit.record(session, actor, audit.AuditEntry(
        operation, target_ids=[f"{k}:{n}" for k, n in counts.items()], diff={"counts": counts}))
    return ImportSummary(counts)


async def _bump_version(session: AsyncSession) -> None:
    """Mark the registry changed (same transaction as the change)."""
    await session.execute(update(orm.RegistryVersion).where(orm.RegistryVersion.id == 1)
                          .values(version=orm.RegistryVersion.version + 1))


def _diff(before: Mapping[str, Any] | None, after: Mapping[str, Any] | None) -> dict[str, Any]:
    keys = set(before or {}) | set(after or {})
    out = {}
    for k in sorted(keys):
        b = (before or {}).get(k)
        a = (after or {}).get(k)
        if b != a:
            out[k] = {"before": audit.jsonable(b), "after": audit.jsonable(a)}
    return out


async def _get(session: AsyncSession, kind: str, asset_id: str) -> orm.Base:
    obj = await session.get(ASSET_MODELS[kind], asset_id)
    if obj is None:
        raise NotFound(kind, asset_id)
    return obj


async def _skz_pipes(session: AsyncSession, skz_id: str) -> list[str]:
    rows = await session.execute(select(orm.skz_protected_pipes.c.pipe_id).where(
        orm.skz_protected_pipes.c.skz_id == skz_id).order_by(orm.skz_protected_pipes.c.pipe_id))
    return list(rows.scalars())


async def _set_skz_pipes(session: AsyncSession, skz_id: str, pipe_ids: Sequence[str]) -> None:
    await session.execute(delete(orm.skz_protected_pipes).where(
        orm.skz_protected_pipes.c.skz_id == skz_id))
    if pipe_ids:
        await session.execute(insert(orm.skz_protected_pipes),
                              [{"skz_id": skz_id, "pipe_id": p} for p in sorted(set(pipe_ids))])


async def create_asset(session: AsyncSession, kind: str, asset_id: str,
                       values: Mapping[str, Any], actor: audit.Actor, scope: Scope) -> orm.Base:
    """Validate and insert one asset, audited; raises `ValidationFailed`, `Forbidden`."""
    vals, errs = _clean(kind, asset_id, values)
    if not scope.allows(vals.get("area_id")):
        raise Forbidden(f"{kind} in area {vals.get('area_id')!r} is outside your areas")
    errs.extend(await _check(session, [AssetRecord(kind, asset_id, vals)],
                             await load_levels(session), new=True))
    if errs:
        raise ValidationFailed(errs)
    pipes = vals.pop("protected_pipe_ids", None)
    obj = ASSET_MODELS[kind](id=asset_id, **vals)
    session.add(obj)
    await session.flush()
    after = row_values(kind, obj)
    if kind == "skz":
        await _set_skz_pipes(session, asset_id, pipes or [])
        after["protected_pipe_ids"] = sorted(set(pipes or []))
    await _bump_version(session)
    await audit.record(session, actor, audit.AuditEntry(f"{kind}.create", [asset_id],
                                                        _diff(None, after)))
    return obj


async def update_asset(session: AsyncSession, kind: str, asset_id: str,
                       patch: Mapping[str, Any], actor: audit.Actor, scope: Scope) -> orm.Base:
    """Apply a partial change, validating the merged result; audited with before/after."""
    obj = await _get(session, kind, asset_id)
    before = row_values(kind, obj)
    if kind == "skz":
        before["protected_pipe_ids"] = await _skz_pipes(session, asset_id)
    if not scope.allows(before.get("area_id")):
        raise NotFound(kind, asset_id)
    vals, errs = _clean(kind, asset_id, patch)
    if "status" in vals and vals["status"] == "retired":
        errs.append(rules.FieldError(asset_id, "status", "use retire to retire an asset"))
    merged = {**before, **vals}
    if not scope.allows(merged.get("area_id")):
        raise Forbidden(f"cannot move {kind} {asset_id!r} outside your areas")
    errs.extend(await _check(session, [AssetRecord(kind, asset_id, merged)],
                             await load_levels(session), new=False))
    if kind == "meter" and merged.get("serial") != before.get("serial"):
        errs.extend(await _serial_conflicts(session, [AssetRecord(kind, asset_id, merged)]))
    if kind == "node" and merged.get("pressure_level") != before.get("pressure_level"):
        errs.extend(await _node_level_change_conflicts(session, asset_id))
    if errs:
        raise ValidationFailed(errs)
    pipes = vals.pop("protected_pipe_ids", None)
    for k, v in vals.items():
        setattr(obj, k, v)
    await session.flush()
    after = row_values(kind, obj)
    if kind == "skz":
        if pipes is not None:
            await _set_skz_pipes(session, asset_id, pipes)
        after["protected_pipe_ids"] = await _skz_pipes(session, asset_id)
    await _bump_version(session)
    await audit.record(session, actor, audit.AuditEntry(f"{kind}.update", [asset_id],
                                                        _diff(before, after)))
    return obj


async def _node_level_change_conflicts(session: AsyncSession,
                                       node_id: str) -> list[rules.FieldError]:
    n = (await _attached(session, node_id))
    if n:
        return [rules.FieldError(node_id, "pressure_level",
                                 f"{n} connected asset(s) keep the old level; change them first")]
    return []


async def _attached(session: AsyncSession, node_id: str) -> int:
    total = 0
    for kind, fields in _NODE_REFS.items():
        model = ASSET_MODELS[kind]
        cond = or_(*(getattr(model, f) == node_id for f in fields))
        total += (await session.execute(
            select(func.count()).select_from(model).where(cond, model.status != "retired")  # type: ignore[attr-defined]
        )).scalar_one()
    return total


async def retire_asset(session: AsyncSession, kind: str, asset_id: str, actor: audit.Actor,
                       scope: Scope, reason: str | None = None) -> orm.Base:
    """Mark an asset retired (never deleted: history refers to it); audited."""
    obj = await _get(session, kind, asset_id)
    if not hasattr(obj, "status"):
        raise Conflict(f"{kind} cannot be retired")
    if not scope.allows(getattr(obj, "area_id", None)):
        raise NotFound(kind, asset_id)
    if obj.status == "retired":  # type: ignore[attr-defined]
        raise Conflict(f"{kind} {asset_id!r} is already retired")
    if kind == "node":
        n = await _attached(session, asset_id)
        if n:
            raise ValidationFailed([rules.FieldError(
                asset_id, "status", f"{n} asset(s) in service are connected to this node; "
                                    "retire them first (no dangling pipe ends)")])
    before = obj.status  # type: ignore[attr-defined]
    obj.status = "retired"  # type: ignore[attr-defined]
    await session.flush()
    await _bump_version(session)
    await audit.record(session, actor, audit.AuditEntry(
        f"{kind}.retire", [asset_id],
        {"status": {"before": before, "after": "retired"}, "reason": reason}))
    return obj


NETWORK_KINDS = ("area", "node", "pipe", "station", "valve", "service_point", "link")


async def network_records(session: AsyncSession) -> list[AssetRecord]:
    """Every asset of the gas network that is not retired, as records (for the hydraulic twin)."""
    records: list[AssetRecord] = []
    for kind in NETWORK_KINDS:
        model = ASSET_MODELS[kind]
        stmt = select(model)
        if hasattr(model, "status"):
            stmt = stmt.where(model.status != "retired")
        for obj in (await session.execute(stmt)).scalars():
            records.append(AssetRecord(kind, obj.id, row_values(kind, obj)))
    return records


async def area_names(session: AsyncSession) -> dict[str, str]:
    """Area id → its name (a district's display name)."""
    return {area_id: name for area_id, name in await session.execute(select(orm.Area.id, orm.Area.name))}


async def corrector_service_points(session: AsyncSession) -> dict[str, str]:
    """Meter id → service point id of every in-service industrial volume corrector."""
    rows = await session.execute(select(orm.Meter.id, orm.Meter.service_point_id).where(
        orm.Meter.kind == "industrial_corrector", orm.Meter.status != "retired",
        orm.Meter.service_point_id.is_not(None)))
    return {m: sp for m, sp in rows.all()}
