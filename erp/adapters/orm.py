"""Relational model of the network asset registry, users, tokens and the audit trail.

Physical quantities are SI and say so in their names (`length_m`, `inner_diameter_m`,
`outlet_setpoint_pa_gauge`); volumes are at Russian standard conditions (20 °C, 101.325 kPa),
marked `_std`. Asset ids are stable strings chosen by the utility or the importer (`P-000123`),
so they survive export/import round trips.
"""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Column,
    Date,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    TypeDecorator,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

__all__ = [
    "AlarmDefinitionRow",
    "AlarmEventRow",
    "ApiToken",
    "Area",
    "AuditHead",
    "AuditRecord",
    "Base",
    "Crew",
    "DeviceToken",
    "Equipment",
    "JSONValue",
    "Meter",
    "MeterReading",
    "NetworkLink",
    "NetworkNode",
    "Pipe",
    "PressureLevel",
    "RegistryVersion",
    "ServicePoint",
    "SkzStation",
    "Station",
    "TagDefinition",
    "User",
    "UTCDateTime",
    "Valve",
]

NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class UTCDateTime(TypeDecorator[dt.datetime]):
    """A timestamp stored as UTC and always returned tz-aware (SQLite drops the zone)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: dt.datetime | None, dialect: Dialect) -> Any:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime refused: timestamps are UTC and tz-aware")
        return value.astimezone(dt.UTC)

    def process_result_value(self, value: Any, dialect: Dialect) -> dt.datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=dt.UTC)
        return value.astimezone(dt.UTC)


def utcnow() -> dt.datetime:
    """Current time, UTC, tz-aware."""
    return dt.datetime.now(dt.UTC)


class Base(DeclarativeBase):
    """Declarative base with a constraint naming convention (stable Alembic diffs)."""

    metadata = MetaData(naming_convention=NAMING)


class Timestamped:
    """Creation and last-change times."""

    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)


# --- reference data -------------------------------------------------------------------------


class Area(Timestamped, Base):
    """A network district: the unit that scopes what a user sees and may change."""

    __tablename__ = "areas"
    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    name: Mapped[str] = mapped_column(String(200))


class PressureLevel(Base):
    """A pressure class of the network, gauge pressure bounds in Pa (min exclusive, max inclusive)."""

    __tablename__ = "pressure_levels"
    code: Mapped[str] = mapped_column(String(32), primary_key=True)
    name: Mapped[str] = mapped_column(String(100))
    min_pa_gauge: Mapped[float] = mapped_column(Float)
    max_pa_gauge: Mapped[float] = mapped_column(Float)
    rank: Mapped[int] = mapped_column(Integer, default=0)


# --- network --------------------------------------------------------------------------------


class NetworkNode(Timestamped, Base):
    """A junction, source or end point of the network (WGS84, elevation above sea level)."""

    __tablename__ = "nodes"
    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    name: Mapped[str | None] = mapped_column(String(200))
    kind: Mapped[str] = mapped_column(String(32), default="junction")
    area_id: Mapped[str | None] = mapped_column(ForeignKey("areas.id"), index=True)
    pressure_level: Mapped[str] = mapped_column(ForeignKey("pressure_levels.code"), index=True)
    lat: Mapped[float] = mapped_column(Float)
    lon: Mapped[float] = mapped_column(Float)
    elevation_m: Mapped[float] = mapped_column(Float, default=0.0)
    status: Mapped[str] = mapped_column(String(16), default="in_service", index=True)
    props: Mapped[dict[str, Any] | None] = mapped_column(JSON)


class Pipe(Timestamped, Base):
    """A pipe section between two nodes of the same pressure level."""

    __tablename__ = "pipes"
    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    name: Mapped[str | None] = mapped_column(String(200))
    from_node_id: Mapped[str] = mapped_column(ForeignKey("nodes.id"), index=True)
    to_node_id: Mapped[str] = mapped_column(ForeignKey("nodes.id"), index=True)
    length_m: Mapped[float] = mapped_column(Float)
    inner_diameter_m: Mapped[float] = mapped_column(Float)
    material: Mapped[str] = mapped_column(String(16), index=True)
    roughness_m: Mapped[float] = mapped_column(Float)
    pressure_level: Mapped[str] = mapped_column(ForeignKey("pressure_levels.code"), index=True)
    year_laid: Mapped[int | None] = mapped_column(Integer)
    status: Mapped[str] = mapped_column(String(16), default="in_service", index=True)
    area_id: Mapped[str | None] = mapped_column(ForeignKey("areas.id"), index=True)
    # Intermediate vertices [[lon, lat], ...] between the end nodes, as drawn on the map.
    vertices: Mapped[list[list[float]] | None] = mapped_column(JSON)


class Station(Timestamped, Base):
    """A pressure-reducing station joining two pressure levels: GRS, GRP or ShRP."""

    __tablename__ = "stations"
    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    kind: Mapped[str] = mapped_column(String(8), index=True)
    area_id: Mapped[str | None] = mapped_column(ForeignKey("areas.id"), index=True)
    inlet_node_id: Mapped[str] = mapped_column(ForeignKey("nodes.id"))
    outlet_node_id: Mapped[str] = mapped_column(ForeignKey("nodes.id"))
    inlet_level: Mapped[str] = mapped_column(ForeignKey("pressure_levels.code"))
    outlet_level: Mapped[str] = mapped_column(ForeignKey("pressure_levels.code"))
    outlet_setpoint_pa_gauge: Mapped[float] = mapped_column(Float)
    capacity_m3h_std: Mapped[float | None] = mapped_column(Float)
    lat: Mapped[float] = mapped_column(Float)
    lon: Mapped[float] = mapped_column(Float)
    status: Mapped[str] = mapped_column(String(16), default="in_service", index=True)


class Valve(Timestamped, Base):
    """A shut-off valve between two nodes of one pressure level."""

    __tablename__ = "valves"
    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    name: Mapped[str | None] = mapped_column(String(200))
    from_node_id: Mapped[str] = mapped_column(ForeignKey("nodes.id"), index=True)
    to_node_id: Mapped[str] = mapped_column(ForeignKey("nodes.id"), index=True)
    pressure_level: Mapped[str] = mapped_column(ForeignKey("pressure_levels.code"), index=True)
    diameter_m: Mapped[float | None] = mapped_column(Float)
    normal_state: Mapped[str] = mapped_column(String(16), default="open")
    current_state: Mapped[str] = mapped_column(String(16), default="open")
    remotely_operable: Mapped[bool] = mapped_column(Boolean, default=False)
    area_id: Mapped[str | None] = mapped_column(ForeignKey("areas.id"), index=True)
    lat: Mapped[float] = mapped_column(Float)
    lon: Mapped[float] = mapped_column(Float)
    status: Mapped[str] = mapped_column(String(16), default="in_service", index=True)


skz_protected_pipes = Table(
    "skz_protected_pipes",
    Base.metadata,
    Column("skz_id", ForeignKey("skz_stations.id", ondelete="CASCADE"), primary_key=True),
    Column("pipe_id", ForeignKey("pipes.id", ondelete="CASCADE"), primary_key=True),
)


class SkzStation(Timestamped, Base):
    """A cathodic-protection station (rectifier) protecting steel pipes."""

    __tablename__ = "skz_stations"
    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    area_id: Mapped[str | None] = mapped_column(ForeignKey("areas.id"), index=True)
    lat: Mapped[float] = mapped_column(Float)
    lon: Mapped[float] = mapped_column(Float)
    rated_voltage_v: Mapped[float] = mapped_column(Float, default=48.0)
    rated_current_a: Mapped[float] = mapped_column(Float, default=25.0)
    status: Mapped[str] = mapped_column(String(16), default="in_service", index=True)
    protected_pipes: Mapped[list[Pipe]] = relationship(secondary=skz_protected_pipes, lazy="raise")


class NetworkLink(Timestamped, Base):
    """A link kind of transmission networks with no own table (GasLib import).

    Kinds: `short_pipe`, `compressor`, `resistor`, `control_valve`; their parameters
    (SI units) are kept in `params`.
    """

    __tablename__ = "network_links"
    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    kind: Mapped[str] = mapped_column(String(32), index=True)
    from_node_id: Mapped[str] = mapped_column(ForeignKey("nodes.id"), index=True)
    to_node_id: Mapped[str] = mapped_column(ForeignKey("nodes.id"), index=True)
    pressure_level: Mapped[str] = mapped_column(ForeignKey("pressure_levels.code"))
    area_id: Mapped[str | None] = mapped_column(ForeignKey("areas.id"), index=True)
    params: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    status: Mapped[str] = mapped_column(String(16), default="in_service", index=True)


class ServicePoint(Timestamped, Base):
    """A consumer's delivery point attached to a network node."""

    __tablename__ = "service_points"
    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    name: Mapped[str | None] = mapped_column(String(200))
    node_id: Mapped[str] = mapped_column(ForeignKey("nodes.id"), index=True)
    area_id: Mapped[str | None] = mapped_column(ForeignKey("areas.id"), index=True)
    category: Mapped[str] = mapped_column(String(16), index=True)
    critical_kind: Mapped[str | None] = mapped_column(String(32))
    address: Mapped[str | None] = mapped_column(String(300))
    lat: Mapped[float] = mapped_column(Float)
    lon: Mapped[float] = mapped_column(Float)
    peak_load_m3h_std: Mapped[float] = mapped_column(Float, default=0.0)
    annual_volume_m3_std: Mapped[float] = mapped_column(Float, default=0.0)
    min_pressure_pa_gauge: Mapped[float | None] = mapped_column(Float)
    status: Mapped[str] = mapped_column(String(16), default="in_service", index=True)


class Meter(Timestamped, Base):
    """A meter: residential, industrial volume corrector, or an internal utility meter."""

    __tablename__ = "meters"
    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    serial: Mapped[str] = mapped_column(String(64), unique=True)
    model: Mapped[str] = mapped_column(String(100))
    kind: Mapped[str] = mapped_column(String(32), index=True)
    service_point_id: Mapped[str | None] = mapped_column(
        ForeignKey("service_points.id"), index=True
    )
    station_id: Mapped[str | None] = mapped_column(ForeignKey("stations.id"), index=True)
    area_id: Mapped[str | None] = mapped_column(ForeignKey("areas.id"), index=True)
    verification_due: Mapped[dt.date | None] = mapped_column(Date)
    status: Mapped[str] = mapped_column(String(16), default="in_service", index=True)


class Equipment(Timestamped, Base):
    """An item of a station's equipment hierarchy (regulator, filter, shut-off valve, meter…)."""

    __tablename__ = "equipment"
    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    kind: Mapped[str] = mapped_column(String(32), index=True)
    station_id: Mapped[str] = mapped_column(ForeignKey("stations.id"), index=True)
    parent_id: Mapped[str | None] = mapped_column(ForeignKey("equipment.id"), index=True)
    area_id: Mapped[str | None] = mapped_column(ForeignKey("areas.id"), index=True)
    model: Mapped[str | None] = mapped_column(String(100))
    serial: Mapped[str | None] = mapped_column(String(64))
    status: Mapped[str] = mapped_column(String(16), default="in_service", index=True)


# --- people ---------------------------------------------------------------------------------

user_areas = Table(
    "user_areas",
    Base.metadata,
    Column("user_id", ForeignKey("users.id", ondelete="CASCADE"), primary_key=True),
    Column("area_id", ForeignKey("areas.id", ondelete="CASCADE"), primary_key=True),
)

crew_members = Table(
    "crew_members",
    Base.metadata,
    Column("crew_id", ForeignKey("crews.id", ondelete="CASCADE"), primary_key=True),
    Column("user_id", ForeignKey("users.id", ondelete="CASCADE"), primary_key=True),
)


class User(Timestamped, Base):
    """A person or system account with one role, scoped to areas (or to all areas)."""

    __tablename__ = "users"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    username: Mapped[str] = mapped_column(String(100), unique=True)
    full_name: Mapped[str | None] = mapped_column(String(200))
    password_hash: Mapped[str | None] = mapped_column(String(200))
    role: Mapped[str] = mapped_column(String(32), index=True)
    all_areas: Mapped[bool] = mapped_column(Boolean, default=False)
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    areas: Mapped[list[Area]] = relationship(secondary=user_areas, lazy="selectin")


class ApiToken(Base):
    """A long-lived API token for an integrator; only its SHA-256 is stored."""

    __tablename__ = "api_tokens"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(100))
    token_sha256: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    expires_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    revoked_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)


class Crew(Timestamped, Base):
    """A field crew: a foreman, members and a vehicle, working in one area."""

    __tablename__ = "crews"
    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    area_id: Mapped[str | None] = mapped_column(ForeignKey("areas.id"), index=True)
    foreman_user_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"), index=True)
    vehicle: Mapped[str | None] = mapped_column(String(100))
    members: Mapped[list[User]] = relationship(secondary=crew_members, lazy="raise")


__all__ += ["CrewPosition"]


class CrewPosition(Base):
    """A crew's position as reported by one of its people (WGS84 degrees; `accuracy_m` is the
    device's horizontal accuracy radius in metres). `ts` is when the device took the fix,
    `received_at` when the server stored it. Kept for the current and the previous UTC day
    only (`erp.services.crews.purge_positions`)."""

    __tablename__ = "crew_positions"
    __table_args__ = (
        Index("ix_crew_positions_crew_id_ts", "crew_id", "ts"),
        {"sqlite_autoincrement": True},
    )
    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True,
                                    autoincrement=True)
    crew_id: Mapped[str] = mapped_column(ForeignKey("crews.id", ondelete="CASCADE"))
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    ts: Mapped[dt.datetime] = mapped_column(UTCDateTime)
    lat: Mapped[float] = mapped_column(Float)
    lon: Mapped[float] = mapped_column(Float)
    accuracy_m: Mapped[float] = mapped_column(Float)
    received_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)


# --- audit ----------------------------------------------------------------------------------


class AuditRecord(Base):
    """One audited action (or refusal); `hash` chains it to the record before it."""

    __tablename__ = "audit_records"
    seq: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    ts: Mapped[dt.datetime] = mapped_column(UTCDateTime, index=True)
    actor: Mapped[str | None] = mapped_column(String(100), index=True)
    role: Mapped[str | None] = mapped_column(String(32))
    operation: Mapped[str] = mapped_column(String(100), index=True)
    outcome: Mapped[str] = mapped_column(String(16), index=True)
    target_ids: Mapped[list[str]] = mapped_column(JSON)
    diff: Mapped[dict[str, Any]] = mapped_column(JSON)
    client_addr: Mapped[str | None] = mapped_column(String(64))
    prev_hash: Mapped[str] = mapped_column(String(64))
    hash: Mapped[str] = mapped_column(String(64))


class AuditHead(Base):
    """The single row naming the chain's last record; locked by writers to keep the chain linear."""

    __tablename__ = "audit_head"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    last_seq: Mapped[int] = mapped_column(Integer, default=0)
    last_hash: Mapped[str] = mapped_column(String(64))


class TagDefinition(Timestamped, Base):
    """A telemetry tag tied to a registry asset, and where its values come from.

    `path` is the stable id (`station/GRP-12/p_out`). Raw device values become engineering
    values as `raw * scale + offset` in `unit`. `source` names the driver and address, e.g.
    `{"driver": "opcua", "endpoint": "stations", "address": "ns=2;s=station/GRP-12/p_out"}`.
    """

    __tablename__ = "tags"
    path: Mapped[str] = mapped_column(String(200), primary_key=True)
    asset_kind: Mapped[str] = mapped_column(String(32), index=True)
    asset_id: Mapped[str] = mapped_column(String(64), index=True)
    area_id: Mapped[str | None] = mapped_column(ForeignKey("areas.id"), index=True)
    name: Mapped[str] = mapped_column(String(64))
    description: Mapped[str] = mapped_column(String(300), default="")
    unit: Mapped[str] = mapped_column(String(32), default="")
    data_type: Mapped[str] = mapped_column(String(16), default="float")
    scale: Mapped[float] = mapped_column(Float, default=1.0)
    offset: Mapped[float] = mapped_column(Float, default=0.0)
    deadband_kind: Mapped[str] = mapped_column(String(16), default="none")
    deadband_value: Mapped[float] = mapped_column(Float, default=0.0)
    range_low: Mapped[float | None] = mapped_column(Float)
    range_high: Mapped[float | None] = mapped_column(Float)
    expected_period_s: Mapped[float | None] = mapped_column(Float)
    writable: Mapped[bool] = mapped_column(Boolean, default=False)
    source: Mapped[dict[str, Any] | None] = mapped_column(JSON(none_as_null=True))


class DeviceToken(Base):
    """A secret a field device (NB-IoT smart meter, data concentrator) pushes readings with;
    only its SHA-256 is stored."""

    __tablename__ = "device_tokens"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    meter_id: Mapped[str] = mapped_column(ForeignKey("meters.id"), index=True)
    token_sha256: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    revoked_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)


class MeterReading(Base):
    """A smart meter's reading at a device timestamp; (meter, ts) is unique, so a device that
    re-sends a batch after a lost acknowledgement creates no duplicate."""

    __tablename__ = "meter_readings"
    meter_id: Mapped[str] = mapped_column(ForeignKey("meters.id"), primary_key=True)
    ts: Mapped[dt.datetime] = mapped_column(UTCDateTime, primary_key=True)
    index_m3: Mapped[float] = mapped_column(Float)  # register at working conditions, m³
    valve_open: Mapped[bool | None] = mapped_column(Boolean)
    battery_pct: Mapped[float | None] = mapped_column(Float)
    tamper: Mapped[bool | None] = mapped_column(Boolean)
    received_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    source: Mapped[str] = mapped_column(String(32), default="push")


class RegistryVersion(Base):
    """One row counting registry changes; bumped in every writing transaction, so any process
    can tell whether what it cached about the registry is still current."""

    __tablename__ = "registry_version"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    version: Mapped[int] = mapped_column(Integer, default=0)


Index("ix_service_points_area_category", ServicePoint.area_id, ServicePoint.category)


# --- alarms ---------------------------------------------------------------------------------


class JSONValue(TypeDecorator[Any]):
    """A JSON value (number, bool, string) or SQL NULL for None, that keeps its type.

    JSON on PostgreSQL. TEXT holding the JSON on SQLite: there a column declared JSON has
    NUMERIC affinity, which stores the text ``1.0`` as the integer 1 (a float came back an int).
    """

    impl = JSON(none_as_null=True)
    cache_ok = True

    def load_dialect_impl(self, dialect: Dialect) -> Any:
        if dialect.name == "sqlite":
            return dialect.type_descriptor(Text())
        return dialect.type_descriptor(JSON(none_as_null=True))

    def process_bind_param(self, value: Any, dialect: Dialect) -> Any:
        if dialect.name == "sqlite" and value is not None:
            return json.dumps(value)
        return value

    def process_result_value(self, value: Any, dialect: Dialect) -> Any:
        if dialect.name == "sqlite" and value is not None:
            return json.loads(value)
        return value


class AlarmDefinitionRow(Timestamped, Base):
    """One alarm definition of the realtime alarm engine (its `AlarmDefinition`, as a row).

    `id` is stable (`station/GRP-12/p_out:hi`). Limits are in the tag's engineering unit;
    `limit_value` is the engine's `limit` (a reserved word in SQL). `source` is `default` for
    rows generated from the default rules and `user` once a person edited the row:
    regeneration never overwrites a `user` row.
    """

    __tablename__ = "alarm_definitions"
    id: Mapped[str] = mapped_column(String(200), primary_key=True)
    tag: Mapped[str] = mapped_column(String(200), index=True)
    kind: Mapped[str] = mapped_column(String(16))
    priority: Mapped[int] = mapped_column(Integer)  # 1 low, 2 medium, 3 high, 4 critical
    area_id: Mapped[str | None] = mapped_column(ForeignKey("areas.id"), index=True)
    asset_id: Mapped[str | None] = mapped_column(String(64), index=True)
    limit_value: Mapped[float | None] = mapped_column(Float)
    limit_tag: Mapped[str | None] = mapped_column(String(200))
    low: Mapped[float | None] = mapped_column(Float)
    high: Mapped[float | None] = mapped_column(Float)
    states: Mapped[list[Any]] = mapped_column(JSON, default=list)
    ref_tag: Mapped[str | None] = mapped_column(String(200))
    stale_after_s: Mapped[float | None] = mapped_column(Float)
    deadband: Mapped[float] = mapped_column(Float, default=0.0)
    on_delay_s: Mapped[float] = mapped_column(Float, default=0.0)
    off_delay_s: Mapped[float] = mapped_column(Float, default=0.0)
    latching: Mapped[bool] = mapped_column(Boolean, default=False)
    message: Mapped[str] = mapped_column(String(300), default="")
    consequence: Mapped[str] = mapped_column(Text, default="")
    guidance: Mapped[str] = mapped_column(Text, default="")
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    source: Mapped[str] = mapped_column(String(16), default="default")


class AlarmEventRow(Base):
    """One entry of the alarm journal (the engine's `AlarmEvent`); append-only.

    `seq` orders the journal and never repeats (SQLite AUTOINCREMENT, PostgreSQL BIGSERIAL).
    `actor` is the engine's `user` (a reserved word in PostgreSQL). `area_id` has no foreign
    key: flood events name an area too, and the journal must outlive registry changes.
    """

    __tablename__ = "alarm_events"
    __table_args__ = (
        Index("ix_alarm_events_alarm_id_seq", "alarm_id", "seq"),
        Index("ix_alarm_events_area_id_ts", "area_id", "ts"),
        {"sqlite_autoincrement": True},
    )
    seq: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True,
                                     autoincrement=True)
    alarm_id: Mapped[str] = mapped_column(String(200))
    kind: Mapped[str] = mapped_column(String(24))
    ts: Mapped[dt.datetime] = mapped_column(UTCDateTime, index=True)
    status: Mapped[str] = mapped_column(String(16))
    mode: Mapped[str] = mapped_column(String(16))
    active: Mapped[bool] = mapped_column(Boolean)
    priority: Mapped[int] = mapped_column(Integer)
    tag: Mapped[str] = mapped_column(String(200), default="")
    area_id: Mapped[str | None] = mapped_column(String(64))
    value: Mapped[Any] = mapped_column(JSONValue, nullable=True)
    actor: Mapped[str | None] = mapped_column(String(64))
    comment: Mapped[str] = mapped_column(Text, default="")
    message: Mapped[str] = mapped_column(String(300), default="")
    first_out: Mapped[bool] = mapped_column(Boolean, default=False)
    shelved_until: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    activated_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)


# --- notifications --------------------------------------------------------------------------

__all__ += ["NotificationMessageRow", "NotificationStatusRow"]


class NotificationMessageRow(Base):
    """One alarm notification message, claimed under its de-duplication `key`.

    The primary key is the claim: whoever inserts the row first sends the message (an
    ``INSERT ... ON CONFLICT DO NOTHING`` that affected no row lost). `message` is the whole
    rendered message as JSON (`OutgoingMessage.to_json`); `status` and `attempts` repeat the
    latest entry of its history (`NotificationStatusRow`), so lists need no join.
    """

    __tablename__ = "notification_messages"
    key: Mapped[str] = mapped_column(String(300), primary_key=True)
    alarm_id: Mapped[str] = mapped_column(String(200), index=True)
    level: Mapped[int] = mapped_column(Integer)
    channel: Mapped[str] = mapped_column(String(32))
    recipient: Mapped[str] = mapped_column(String(200))
    message: Mapped[dict[str, Any]] = mapped_column(JSON)
    status: Mapped[str] = mapped_column(String(16))
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime)
    updated_at: Mapped[dt.datetime] = mapped_column(UTCDateTime)


class NotificationStatusRow(Base):
    """One status change of a notification message (queued, retrying, sent, failed, cancelled);
    append-only, `seq` orders them (and, through each message's first one, the claims)."""

    __tablename__ = "notification_status_changes"
    __table_args__ = ({"sqlite_autoincrement": True},)
    seq: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True,
                                     autoincrement=True)
    key: Mapped[str] = mapped_column(ForeignKey("notification_messages.key"), index=True)
    status: Mapped[str] = mapped_column(String(16))
    at: Mapped[dt.datetime] = mapped_column(UTCDateTime)
    attempt: Mapped[int] = mapped_column(Integer, default=0)
    reason: Mapped[str] = mapped_column(Text, default="")
    next_attempt_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime, nullable=True)


# --- hydraulic twin -------------------------------------------------------------------------

__all__ += ["TwinScenarioRow"]


class TwinScenarioRow(Base):
    """One what-if scenario of the hydraulic twin (TWIN-2), run as a background job.

    `spec` is the scenario as asked (plain JSON: valve changes, set-points, bursts, …);
    `status` goes queued → running → done or failed; `summary` holds the headline figures and
    `result` the whole outcome (every node's pressure and change, every branch's flow, the
    consumers without gas or below their minimum); `error` says why a failed one failed.
    """

    __tablename__ = "twin_scenarios"
    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    kind: Mapped[str] = mapped_column(String(32), default="what_if", server_default="what_if",
                                      index=True)
    """what_if (TWIN-2) or leak_localization (ANA-1): the same queue, store and audit."""
    name: Mapped[str] = mapped_column(String(200), default="")
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow, index=True)
    created_by: Mapped[str | None] = mapped_column(String(64))
    status: Mapped[str] = mapped_column(String(16))
    spec: Mapped[dict[str, Any]] = mapped_column(JSON)
    summary: Mapped[dict[str, Any] | None] = mapped_column(JSON(none_as_null=True))
    result: Mapped[dict[str, Any] | None] = mapped_column(JSON(none_as_null=True))
    error: Mapped[str | None] = mapped_column(Text)
    started_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    finished_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)


__all__ += ["PressurePlanRow"]


class PressurePlanRow(Base):
    """One pressure plan (issue 8, DSS-1): a day's hourly outlet set-points, run as a job.

    `spec` is what was asked (air temperature and where it came from, safety margin);
    `status` goes queued → running → done or failed; `summary` holds the headline figures
    (optimiser status, mean pressure reduction) and `result` the schedule (per hour: demand,
    mean pressure before/after, lowest margin; per station: 24 set-points in Pa gauge and the
    binding node of each hour); `error` says why a failed one failed.
    """

    __tablename__ = "pressure_plans"
    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    plan_date: Mapped[dt.date] = mapped_column(Date)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow, index=True)
    created_by: Mapped[str | None] = mapped_column(String(64))
    status: Mapped[str] = mapped_column(String(16))
    spec: Mapped[dict[str, Any]] = mapped_column(JSON)
    summary: Mapped[dict[str, Any] | None] = mapped_column(JSON(none_as_null=True))
    result: Mapped[dict[str, Any] | None] = mapped_column(JSON(none_as_null=True))
    error: Mapped[str | None] = mapped_column(Text)
    started_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    finished_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)


# --- control --------------------------------------------------------------------------------

__all__ += ["ControlCommandRow"]


class ControlCommandRow(Base):
    """One control command (`control.model.Command`) as it stands after its latest step.

    Written by `erp.services.commands.record` at every step, in the same transaction as the
    step's audit record, so the history outlives the server process that ran the command.
    `created_at` is when it was selected; `updated_at` the time of the step recorded last (an
    older step never overwrites a newer one). `area_id` has no foreign key: the history must
    outlive registry changes. `impact` is the predicted effect (consumers cut off, critical
    service points, method), `checks` the rules passed, in order.
    """

    __tablename__ = "control_commands"
    __table_args__ = (
        Index("ix_control_commands_area_id_created_at", "area_id", "created_at"),
    )
    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    target_kind: Mapped[str] = mapped_column(String(16))
    asset_id: Mapped[str] = mapped_column(String(64))
    area_id: Mapped[str | None] = mapped_column(String(64))
    action: Mapped[str] = mapped_column(String(32))
    value: Mapped[float | None] = mapped_column(Float)
    reason: Mapped[str] = mapped_column(Text, default="")
    requested_by: Mapped[str] = mapped_column(String(100))
    requested_role: Mapped[str | None] = mapped_column(String(32))
    approved_by: Mapped[str | None] = mapped_column(String(100))
    approval_reason: Mapped[str] = mapped_column(Text, default="")
    state: Mapped[str] = mapped_column(String(24), index=True)
    last_step: Mapped[str] = mapped_column(String(24))
    outcome: Mapped[str] = mapped_column(Text, default="")
    needs_approval: Mapped[bool] = mapped_column(Boolean, default=False)
    needs_override: Mapped[bool] = mapped_column(Boolean, default=False)
    checks: Mapped[list[str]] = mapped_column(JSON, default=list)
    impact: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, index=True)
    expires_at: Mapped[dt.datetime] = mapped_column(UTCDateTime)
    finished_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    updated_at: Mapped[dt.datetime] = mapped_column(UTCDateTime)
