"""The `gasops` command line as a user runs it (subprocesses, own var/ directory)."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

GASOPS = str(Path(sys.executable).with_name("gasops"))


def _run(var: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "GASOPS_VAR_DIR": str(var), "GASOPS_LOG_LEVEL": "WARNING"}
    return subprocess.run([GASOPS, *args], capture_output=True, text=True, env=env, timeout=120)


def test_migrate_user_token_and_audit_verify(tmp_path: Path) -> None:
    assert _run(tmp_path, "migrate").returncode == 0
    r = _run(tmp_path, "user", "add", "ivanov", "--role", "integrator", "--password",
             "long-enough-1", "--all-areas")
    assert r.returncode == 0, r.stderr
    r = _run(tmp_path, "user", "add", "x", "--role", "pope", "--password", "long-enough-1")
    assert r.returncode == 2 and "role" in r.stderr
    r = _run(tmp_path, "token", "create", "ivanov", "--name", "scada")
    assert r.returncode == 0 and r.stdout.startswith("gso_")
    r = _run(tmp_path, "audit", "verify")
    assert r.returncode == 0 and "intact: 2 records" in r.stdout
    with sqlite3.connect(tmp_path / "gasops.sqlite3") as db:
        db.execute("UPDATE audit_records SET operation = 'nothing' WHERE seq = 1")
    r = _run(tmp_path, "audit", "verify")
    assert r.returncode == 1 and "BROKEN at record 1" in r.stdout


def test_twin_solve_gaslib_11(tmp_path: Path) -> None:
    data = Path(__file__).resolve().parents[1] / "data" / "gaslib"
    out = tmp_path / "tmp" / "x.json"
    r = _run(tmp_path, "twin", "solve", str(data / "GasLib-11.net"), "--out", str(out))
    assert r.returncode == 0, r.stderr
    doc = json.loads(out.read_text())
    assert doc["status"] == "converged" and doc["message"] == "converged"
    assert doc["iterations"] > 0 and 0 <= doc["residual"] <= 1
    ids = {"entry01", "entry02", "entry03", "exit01", "exit02", "exit03",
           "N01", "N02", "N03", "N04", "N05"}
    assert set(doc["nodes"]) == ids
    gauge = {k: v["pressure_pa_gauge"] for k, v in doc["nodes"].items()}
    assert all(v["supplied"] for v in doc["nodes"].values())
    assert gauge["entry01"] == 6_898_675.0  # pressureMax 70 bar absolute, as gauge
    assert all(5e6 < p <= 6_898_675.0 + 1.0 for p in gauge.values())  # 50…69 barg
    assert len(doc["branches"]) == 11  # 8 pipes, 1 valve, 2 compressors
    assert doc["branches"]["CS02_N04_N05"]["mass_flow_kg_s"] > 0
    assert doc["consumers_below_minimum"] == []


def test_twin_solve_exit_codes(tmp_path: Path) -> None:
    bad = tmp_path / "bad.geojson"
    bad.write_text('{"type": "FeatureCollection", "features": [{"type": "Feature", "id": "P-1",'
                   ' "geometry": null, "properties": {"kind": "pipe"}}]}')
    r = _run(tmp_path, "twin", "solve", str(bad))
    assert r.returncode == 2 and "P-1: geometry" in r.stderr and r.stdout == ""
    # GasLib-40 with its compressors held at 70 barg below 80 barg entries: no steady state
    data = Path(__file__).resolve().parents[1] / "data" / "gaslib"
    r = _run(tmp_path, "twin", "solve", str(data / "GasLib-40.net"), "--compressors", "boost")
    assert r.returncode == 3 and "--compressors bypass" in r.stderr
    assert json.loads(r.stdout)["status"] == "max_iterations"


def test_opcua_clients_list_and_trust_a_rejected_certificate(tmp_path: Path) -> None:
    from cryptography import x509

    from opcua._security import generate_certificate
    from opcua.trust import ClientTrust

    # what the server does with a certificate it does not know: keeps it in rejected/
    pki = tmp_path / "pki" / "integrator-server"
    pair = generate_certificate(tmp_path / "client", "scada-1", application_uri="urn:scada:1")
    refused = ClientTrust(pki).reject(x509.load_der_x509_certificate(pair.certificate.read_bytes()))
    r = _run(tmp_path, "opcua-clients", "list")
    assert r.returncode == 0, r.stderr
    assert "trusted" in r.stdout and "none" in r.stdout.split("rejected")[0]
    assert refused.name in r.stdout and "urn:scada:1" in r.stdout
    r = _run(tmp_path, "opcua-clients", "trust", "nobody")
    assert r.returncode == 2 and "no rejected certificate" in r.stderr
    r = _run(tmp_path, "opcua-clients", "trust", "scada-1")  # the start of the file name
    assert r.returncode == 0, r.stderr
    assert not refused.exists() and (pki / "trusted" / refused.name).is_file()
    assert ClientTrust(pki).is_trusted(pair.certificate.read_bytes())
