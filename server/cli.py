"""The `gasops` command line: migrate, seed, serve, demo, users, tokens, network files, audit,
the hydraulic twin."""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import glob
import json
import logging
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from sqlalchemy import select

from erp import errors as erp_errors
from erp.adapters import orm
from erp.adapters.db import create_engine, migrate, session_factory
from erp.services import accounts, audit
from server.settings import Settings

__all__ = ["main"]

CLI_ACTOR = audit.Actor("cli", "admin", "local")


async def _with_db(settings: Settings, fn: Callable[[Any], Awaitable[Any]]) -> Any:
    engine = create_engine(settings.database_url)
    try:
        return await fn(engine)
    finally:
        await engine.dispose()


async def _migrate(settings: Settings) -> None:
    await _with_db(settings, migrate)
    print("database migrated to head")


async def _seed(settings: Settings) -> None:
    from server.seed import seed_demo, write_credentials

    async def run(engine: Any) -> None:
        await migrate(engine)
        t0 = time.perf_counter()
        async with session_factory(engine).begin() as s:
            result = await seed_demo(s, settings.var_dir)
        if result.created:
            write_credentials(settings.var_dir, result.credentials)
            counts = ", ".join(f"{k} {v}" for k, v in result.counts.items())
            print(f"demo town seeded in {time.perf_counter() - t0:.1f} s: {counts}")
            t0 = time.perf_counter()
            written = await _seed_history(settings)
            print(f"its past {DEMO_HISTORY_DAYS} days of station flows and air temperature "
                  f"({written:,} hourly points) written to the historian in "
                  f"{time.perf_counter() - t0:.1f} s")
        else:
            print("demo town already present; nothing changed")
        if result.credentials:
            print("demo users (user / password; also in var/demo-credentials.txt):")
            for user, password in result.credentials.items():
                print(f"  {user:<12} {password}")

    await _with_db(settings, run)


DEMO_HISTORY_DAYS = 400


async def _seed_history(settings: Settings) -> int:
    """The demo town's past in the historian (`server/demo_history.py`): forecasts fit to it, and
    the wall compares today with last week."""
    from erp.demo_town import generate_demo_town
    from server.app import historian_for
    from server.demo_history import seed_demo_history

    historian = historian_for(settings)
    await historian.start()
    try:
        return await seed_demo_history(historian, generate_demo_town().records,
                                       dt.datetime.now(dt.UTC), days=DEMO_HISTORY_DAYS)
    finally:
        await historian.close()


def _serve(settings: Settings) -> None:
    import uvicorn

    from server.app import create_app

    uvicorn.run(create_app(settings), host=settings.host, port=settings.port,
                log_level=settings.log_level.lower(), ws="websockets-sansio")


async def _user_add(settings: Settings, a: argparse.Namespace) -> None:
    password = a.password or _ask_password()

    async def run(engine: Any) -> None:
        async with session_factory(engine).begin() as s:
            u = await accounts.create_user(s, a.username, password, a.role, CLI_ACTOR,
                                           full_name=a.full_name, area_ids=a.area or [],
                                           all_areas=a.all_areas)
        print(f"user {u.username} ({u.role}) added, id {u.id}")

    await _with_db(settings, run)


def _ask_password() -> str:
    import getpass

    return getpass.getpass("password: ")


async def _token_create(settings: Settings, a: argparse.Namespace) -> None:
    async def run(engine: Any) -> None:
        async with session_factory(engine).begin() as s:
            user = (await s.execute(select(orm.User).where(orm.User.username == a.username))
                    ).scalar_one_or_none()
            if user is None:
                raise erp_errors.NotFound("user", a.username)
            issued = await accounts.create_api_token(s, user.id, a.name, CLI_ACTOR, a.days)
        print(issued.token)
        if issued.expires_at:
            print(f"expires {issued.expires_at.isoformat()}", file=sys.stderr)

    await _with_db(settings, run)


async def _device_token(settings: Settings, meter_id: str) -> None:
    from erp.services import readings

    async def run(engine: Any) -> None:
        async with session_factory(engine).begin() as s:
            print(await readings.create_device_token(s, meter_id, CLI_ACTOR))

    await _with_db(settings, run)


async def _network_import(settings: Settings, path: Path, gaslib: bool) -> None:
    from erp.exchange import gaslib as gl
    from erp.exchange import geojson as gj

    async def run(engine: Any) -> None:
        async with session_factory(engine).begin() as s:
            if gaslib:
                summary = await gl.import_gaslib_file(s, path, CLI_ACTOR)
            else:
                summary = await gj.import_file(s, path, CLI_ACTOR)
        print("imported: " + ", ".join(f"{k} {v}" for k, v in summary.counts.items()))

    await _with_db(settings, run)


async def _network_export(settings: Settings, path: Path) -> None:
    from erp.exchange import geojson as gj

    async def run(engine: Any) -> dict[str, Any]:
        async with session_factory(engine)() as s:
            return await gj.export_feature_collection(s)

    fc = await _with_db(settings, run)
    path.write_text(json.dumps(fc, ensure_ascii=False, indent=1))  # noqa: ASYNC240 - after the DB work
    print(f"exported {len(fc['features'])} features to {path}")


def _opcua_clients(settings: Settings, args: argparse.Namespace) -> int:
    """The integrator OPC UA server's trust list: `list`, or `trust NAME` (a rejected file)."""
    from opcua.trust import ClientTrust, application_uris, read_certificate

    trust = ClientTrust(settings.var_dir / "pki" / "integrator-server")
    if args.oc_cmd == "list":
        for label, folder in (("trusted", trust.trusted_dir), ("rejected", trust.rejected_dir)):
            files = sorted(folder.iterdir()) if folder.is_dir() else []
            print(f"{label} ({folder}): {len(files) or 'none'}")
            for path in files:
                cert = read_certificate(path)
                if cert is None:
                    print(f"  {path.name}: not a certificate")
                    continue
                uris = application_uris(cert)
                print(f"  {path.name}: {cert.subject.rfc4514_string()}, "
                      f"{', '.join(uris) or 'no application URI'}, "
                      f"valid {cert.not_valid_before_utc:%Y-%m-%d} to {cert.not_valid_after_utc:%Y-%m-%d}")
        return 0
    matches = ([trust.rejected_dir / args.name] if (trust.rejected_dir / args.name).is_file()
               else sorted(trust.rejected_dir.glob(f"{glob.escape(args.name)}*"))
               if trust.rejected_dir.is_dir() else [])
    if len(matches) != 1:
        print(f"error: {'no' if not matches else 'more than one'} rejected certificate named "
              f"{args.name!r} in {trust.rejected_dir} (see `gasops opcua-clients list`)",
              file=sys.stderr)
        return 2
    trust.prepare()
    target = trust.trusted_dir / matches[0].name
    matches[0].replace(target)
    print(f"trusted: {target} (the server reads its trust list again at the next connection)")
    return 0


async def _audit_verify(settings: Settings) -> int:
    async def run(engine: Any) -> int:
        async with session_factory(engine)() as s:
            r = await audit.verify(s)
        if r.ok:
            print(f"audit chain intact: {r.checked} records")
            return 0
        print(f"AUDIT CHAIN BROKEN at record {r.first_bad_seq}: {r.problem} "
              f"({r.checked} records verified before it)")
        return 1

    return int(await _with_db(settings, run))


def _twin_solve(a: argparse.Namespace) -> int:
    """`gasops twin solve`: 0 converged, 2 invalid file, 3 no convergence (JSON still written)."""
    # jax and the twin load here only: importing them costs seconds other commands need not pay.
    from server import twin_model
    from twin_jax import FrictionLaw, NetworkError, Physics, Status, compile_network, solve_steady

    try:
        desc = twin_model.load_network_file(a.file, a.scenario, compressors=a.compressors)
        net = compile_network(desc, Physics(friction=FrictionLaw(a.friction)))
    except erp_errors.ValidationFailed as exc:
        print(f"{a.file}: invalid network file:", file=sys.stderr)
        for e in exc.errors:
            print(f"  {e}", file=sys.stderr)
        return 2
    except NetworkError as exc:
        print(f"{a.file}: the twin cannot solve this network:", file=sys.stderr)
        for problem in exc.problems:
            print(f"  {problem}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except ValueError as exc:
        print(f"{a.file}: {exc}", file=sys.stderr)
        return 2
    result = solve_steady(net, net.parameters())
    text = json.dumps(twin_model.solve_report(net, result), indent=1)
    if a.out is None:
        print(text)
    else:
        a.out.parent.mkdir(parents=True, exist_ok=True)
        a.out.write_text(text + "\n")
    status = Status(int(result.status))
    if status is not Status.CONVERGED:
        hint = (" (GasLib compressors held at their maximum outlet may make a network "
                "infeasible; try --compressors bypass)"
                if a.compressors == "boost" and net.regulator_boost.any() else "")
        print(f"{a.file}: {status.message}{hint}", file=sys.stderr)
        return 3
    return 0


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="gasops", description=__doc__)
    sub = p.add_subparsers(dest="cmd", required=True)
    sub.add_parser("migrate", help="bring the database schema to head")
    sub.add_parser("seed-demo", help="seed the demo town (once) and print demo users")
    sub.add_parser("serve", help="serve HTTP and WebSocket on GASOPS_HOST:GASOPS_PORT")
    sub.add_parser("demo", help="migrate, seed the demo town, serve")
    sub.add_parser("export-schema", help="write the GraphQL SDL to schema.graphql")
    user = sub.add_parser("user", help="users").add_subparsers(dest="user_cmd", required=True)
    ua = user.add_parser("add", help="add a user")
    ua.add_argument("username")
    ua.add_argument("--role", required=True)
    ua.add_argument("--password", help="prompted when absent")
    ua.add_argument("--full-name")
    ua.add_argument("--area", action="append", help="an area id (repeatable)")
    ua.add_argument("--all-areas", action="store_true")
    tok = sub.add_parser("token", help="API tokens").add_subparsers(dest="token_cmd",
                                                                   required=True)
    dev = sub.add_parser("device", help="field devices").add_subparsers(dest="device_cmd",
                                                                        required=True)
    dt_ = dev.add_parser("token", help="a push token for a smart meter (printed once)")
    dt_.add_argument("meter_id")
    tc = tok.add_parser("create", help="create a long-lived API token (printed once)")
    tc.add_argument("username")
    tc.add_argument("--name", default="api")
    tc.add_argument("--days", type=int, help="expiry in days (default: none)")
    net = sub.add_parser("network", help="network files").add_subparsers(dest="net_cmd",
                                                                         required=True)
    for verb, helptext in (("import", "import a GeoJSON FeatureCollection (all or nothing)"),
                           ("import-gaslib", "import a GasLib .net file"),
                           ("export", "export the registry as GeoJSON")):
        n = net.add_parser(verb, help=helptext)
        n.add_argument("file", type=Path)
    twin = sub.add_parser("twin", help="the hydraulic twin").add_subparsers(dest="twin_cmd",
                                                                           required=True)
    ts = twin.add_parser("solve", help="steady-state solve of a GasLib .net or GeoJSON file; "
                                       "JSON result; exit 2 invalid file, 3 no convergence")
    ts.add_argument("file", type=Path, metavar="NETWORK_FILE",
                    help="network file: .net (GasLib), .geojson or .json")
    ts.add_argument("--scenario", type=Path, metavar="FILE",
                    help="GasLib .scn nomination (default: the .scn next to the .net, if any)")
    ts.add_argument("--friction", default="colebrook",  # twin_jax.FrictionLaw's values
                    choices=["colebrook", "swamee-jain", "nikuradse", "sp42-101"],
                    help="pipe friction law (default: colebrook)")
    ts.add_argument("--compressors", default="boost", choices=["boost", "bypass"],
                    help="compressor links hold their outlet set-point (boost) or are open (bypass)")
    ts.add_argument("--out", type=Path, metavar="FILE",
                    help="write the JSON here (default: stdout)")
    aud = sub.add_parser("audit", help="audit trail").add_subparsers(dest="audit_cmd",
                                                                     required=True)
    aud.add_parser("verify", help="check the hash chain; exit 1 if broken")
    oc = sub.add_parser("opcua-clients", help="client certificates the OPC UA server trusts"
                        ).add_subparsers(dest="oc_cmd", required=True)
    oc.add_parser("list", help="the trusted and the rejected (waiting for review) certificates")
    oct_ = oc.add_parser("trust", help="move a rejected certificate to the trusted ones")
    oct_.add_argument("name", help="its file name in rejected/, or the start of it")
    return p


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `gasops` console script."""
    args = _parser().parse_args(argv)
    settings = Settings()
    logging.basicConfig(level=settings.log_level.upper(),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if logging.getLogger().level > logging.DEBUG:
        # asyncua logs every publish request and response at INFO (a thousand lines a minute in
        # the demo), pymodbus its server's chatter, jax that it found no TPU: warnings only.
        for chatty in ("asyncua", "pymodbus", "jax._src.xla_bridge"):
            logging.getLogger(chatty).setLevel(logging.WARNING)
    try:
        match args.cmd:
            case "migrate":
                asyncio.run(_migrate(settings))
            case "seed-demo":
                asyncio.run(_seed(settings))
            case "serve":
                _serve(settings)
            case "demo":
                settings = settings.model_copy(update={"simulate_field": True})
                asyncio.run(_seed(settings))
                print(f"serving on http://{settings.host}:{settings.port}/ "
                      f"(GraphiQL at /graphql)", flush=True)
                _serve(settings)
            case "export-schema":
                from schema.schema import export_sdl

                print(f"wrote {export_sdl()}")
            case "user":
                asyncio.run(_user_add(settings, args))
            case "token":
                asyncio.run(_token_create(settings, args))
            case "device":
                asyncio.run(_device_token(settings, args.meter_id))
            case "network":
                if args.net_cmd == "export":
                    asyncio.run(_network_export(settings, args.file))
                else:
                    asyncio.run(_network_import(settings, args.file,
                                                args.net_cmd == "import-gaslib"))
            case "audit":
                return asyncio.run(_audit_verify(settings))
            case "twin":
                return _twin_solve(args)
            case "opcua-clients":
                return _opcua_clients(settings, args)
    except erp_errors.ValidationFailed as exc:
        print("rejected, nothing was written:", file=sys.stderr)
        for e in exc.errors:
            print(f"  {e}", file=sys.stderr)
        return 2
    except erp_errors.ErpError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
