"""The one place that reads the environment: a frozen, typed settings object.

Every other module receives the values it needs from `Settings` (or a sub-object of it) through
the composition root, so tests can build any configuration without touching `os.environ`.
"""

from __future__ import annotations

import secrets
from enum import StrEnum
from pathlib import Path
from typing import Any

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

__all__ = ["HistorianKind", "Settings", "load_or_create_secret"]


class HistorianKind(StrEnum):
    """Which telemetry history engine is used."""

    duckdb = "duckdb"
    questdb = "questdb"


def load_or_create_secret(path: Path) -> str:
    """Return the secret key stored at `path`, creating it (mode 0600) on first use."""
    if path.exists():
        return path.read_text().strip()
    path.parent.mkdir(parents=True, exist_ok=True)
    key = secrets.token_urlsafe(48)
    path.touch(mode=0o600)
    path.write_text(key + "\n")
    return key


class Settings(BaseSettings):
    """All configuration of a gasops process; environment prefix `GASOPS_`, optional `.env`."""

    model_config = SettingsConfigDict(
        env_prefix="GASOPS_", env_file=".env", extra="ignore", frozen=True
    )

    var_dir: Path = Field(default=Path("var"), description="Runtime files: SQLite, secrets, certs")
    database_url: str = Field(default="", description="SQLAlchemy async URL; default SQLite in var/")
    redis_url: str | None = Field(default=None, description="Redis for the bus and RQ jobs")
    historian: HistorianKind = HistorianKind.duckdb
    historian_url: str = Field(default="", description="DuckDB file path or QuestDB HTTP URL")
    historian_pg_url: str | None = Field(default=None,
                                         description="QuestDB PostgreSQL-wire DSN for queries")
    historian_process: bool = Field(
        default=True, description="Run the DuckDB historian in a child process (its writes "
        "then use another core instead of competing with telemetry for the GIL)")
    historian_buffer_max_points: int = Field(default=5_000_000, ge=1000,
                                             description="Store-and-forward buffer bound")
    notify_config_file: Path | None = Field(
        default=None, description="Alarm notification routing (rules, contacts, on-call rosters) "
        "as JSON; notifications are off without it")
    notify_channels: dict[str, dict[str, Any]] = Field(
        default_factory=dict, description="Channel name -> spec, e.g. {\"email\": {\"type\": "
        "\"smtp\", \"host\": ..., \"port\": 25, \"sender\": ...}} (secrets from the environment)")
    command_select_ttl_s: float = Field(default=30.0, gt=0,
                                        description="How long a selected command holds its target")
    command_readback_timeout_s: float = Field(
        default=90.0, gt=0, description="How long a command waits for the device to report the "
        "new state (a valve actuator strokes in about a minute)")
    opcua_server_port: int | None = Field(
        default=None, ge=0, le=65535, description="Serve OPC UA to SCADA integrators on this port "
        "(Basic256Sha256 only; off when unset)")
    opcua_server_host: str = Field(default="127.0.0.1", description="Where the OPC UA server listens")
    opcua_server_anonymous: bool = Field(default=False,
                                         description="Let anonymous OPC UA sessions read")
    opcua_server_trust_any_client: bool = Field(
        default=False, description="Accept any OPC UA client certificate (a laboratory only); by "
        "default only those in var/pki/integrator-server/trusted/, refused ones land in rejected/")
    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=0, le=65535)
    secret_key: SecretStr | None = Field(default=None, description="Token signing key")
    log_level: str = "INFO"

    # GraphQL surface
    graphiql: bool = True
    introspection: bool = True
    ws_allowed_origins: tuple[str, ...] = ("http://127.0.0.1:8000", "http://localhost:8000")
    ws_max_subscriptions: int = Field(default=20, ge=1)
    max_query_depth: int = Field(default=10, ge=2)
    max_query_tokens: int = Field(default=2000, ge=10)
    max_query_aliases: int = Field(default=15, ge=1)
    max_query_cost: int = Field(default=20_000, ge=1)
    max_page_size: int = Field(default=500, ge=1)
    response_cache_size: int = Field(default=512, ge=0,
                                     description="Cached registry query results; 0 = off")
    response_cache_version_ttl_s: float = Field(
        default=1.0, ge=0, description="How stale a registry write by another process may be seen")

    # Field
    simulate_field: bool = Field(default=False, description="Run the demo's simulated devices")
    modbus_lines: dict[str, str] = Field(default_factory=dict,
                                         description='Modbus line name -> "host:port"')
    poll_period_s: float = Field(default=5.0, gt=0, description="Modbus poll period")
    crew_sim_period_s: float = Field(
        default=5.0, ge=0, description="With simulate_field: seconds between the demo crews' "
                                       "position reports (0: no simulated crews)")
    sim_period_s: float = Field(default=1.0, gt=0,
                                description="Update period of the simulated OPC UA stations "
                                            "(the demo; a soak test runs it faster)")
    opcua_endpoints: dict[str, str] = Field(
        default_factory=dict, description='OPC UA endpoint name -> "opc.tcp://host:port/path"')

    # Hydraulic twin
    twin_enabled: bool = Field(default=True, description="Run the live hydraulic twin in this process")
    twin_period_s: float = Field(default=10.0, gt=0, description="Seconds between live twin solves")
    twin_air_temperature_c: float | None = Field(
        default=None, description="Daily mean air temperature for demand estimation; "
                                  "unset: the town's climate normal for the date")
    twin_leak_warmup_s: float = Field(
        default=600.0, gt=0, description="After start, the live twin's leak watch only learns "
                                         "its residual baselines for this long (no alarm)")
    twin_estimation_every_s: float = Field(
        default=300.0, ge=0, description="Window of the live state estimation (demand scale and "
                                         "roughness per area, suspect sensors); 0 turns it off")

    # Map backgrounds (the wall display and the console; none = schematic is always offered)
    map_tiles_path: Path | None = Field(
        default=None, description="Local tiles served under /tiles: a directory of "
        "{z}/{x}/{y}.png (XYZ) or an .mbtiles file")
    map_tiles_url: str | None = Field(
        default=None, description="An XYZ URL template of the utility's own map server, "
        "e.g. https://maps.example.local/{z}/{x}/{y}.png (the browser loads it, not the server)")

    # Auth
    access_token_ttl_s: int = Field(default=900, ge=30)
    auth_cache_ttl_s: float = Field(default=5.0, ge=0,
                                    description="How long a checked token is trusted in memory")

    @model_validator(mode="after")
    def _defaults_from_var_dir(self) -> Settings:
        # Derived defaults live here so that var_dir alone relocates every runtime file.
        if not self.database_url:
            object.__setattr__(
                self, "database_url", f"sqlite+aiosqlite:///{self.var_dir / 'gasops.sqlite3'}"
            )
        if not self.historian_url and self.historian is HistorianKind.duckdb:
            object.__setattr__(self, "historian_url", str(self.var_dir / "history.duckdb"))
        return self

    def modbus_line_addresses(self) -> dict[str, tuple[str, int]]:
        """`modbus_lines` parsed into (host, port)."""
        out = {}
        for name, addr in self.modbus_lines.items():
            host, _, port = addr.rpartition(":")
            out[name] = (host or "127.0.0.1", int(port))
        return out

    def signing_key(self) -> str:
        """The token signing key: from settings, else generated once into `var/secret_key`."""
        if self.secret_key is not None:
            return self.secret_key.get_secret_value()
        return load_or_create_secret(self.var_dir / "secret_key")
