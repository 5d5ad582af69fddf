"""Every mutation × every role, against the running server: allowed or Forbidden.

The table is the specification. A mutation the schema has but the table lacks fails the test,
so nobody can add a mutation without deciding who may call it.
"""

from __future__ import annotations

from typing import Any

from erp.domain.access import Role
from tests._live import LiveServer

ALL = frozenset(Role)
REGISTRY_WRITERS = frozenset({Role.admin, Role.engineer})
ADMIN = frozenset({Role.admin})

MATRIX: dict[str, frozenset[Role]] = {
    "login": ALL,
    # Renewing needs a valid access token of any role; without one, an AuthError.
    "renewToken": ALL,
    "createUser": ADMIN,
    "createApiToken": frozenset({Role.admin, Role.integrator}),
    "createArea": ADMIN,
    "updateArea": ADMIN,
    **{name: frozenset({Role.admin, Role.dispatcher, Role.operator})
       for name in ("acknowledgeAlarm", "shelveAlarm", "unshelveAlarm", "commentAlarm")},
    **{name: frozenset({Role.admin, Role.dispatcher, Role.operator})
       for name in ("selectCommand", "operateCommand", "cancelCommand")},
    # A crew's phone (or its foreman's) reports where the crew is.
    "reportPosition": frozenset({Role.crew, Role.foreman}),
    "approveCommand": frozenset({Role.admin, Role.dispatcher, Role.engineer}),
    **{name: frozenset({Role.admin, Role.dispatcher, Role.engineer})
       for name in ("startMaintenance", "endMaintenance")},
    # What-if scenarios on the hydraulic twin (twin.scenarios); without a twin in the process
    # the allowed roles get a ScenarioRefusal, the others Forbidden.
    "runScenario": frozenset({Role.admin, Role.dispatcher, Role.engineer}),
    # Leak localization is a twin job like a scenario (twin.scenarios).
    "locateLeak": frozenset({Role.admin, Role.dispatcher, Role.engineer}),
    # Pressure plans (DSS-1): proposing is a twin job (twin.scenarios); accepting an hour selects
    # commands (control.operate). Without a twin the allowed roles get a PressurePlanRefusal.
    "proposePressurePlan": frozenset({Role.admin, Role.dispatcher, Role.engineer}),
    "acceptPressurePlanHour": frozenset({Role.admin, Role.dispatcher, Role.operator}),
    **{f"{verb}{kind}": REGISTRY_WRITERS
       for verb in ("create", "update", "retire")
       for kind in ("Node", "Pipe", "Station", "Valve", "SkzStation", "ServicePoint", "Meter",
                    "Equipment")},
}

INTROSPECT = """
{ __schema { mutationType { fields { name args { name type { ...T } } } } } }
fragment T on __Type { kind name ofType { kind name ofType { kind name ofType { kind name } } } }
"""
INPUT_FIELDS = """
query($n: String!) { __type(name: $n) { inputFields { name type { ...T } } } }
fragment T on __Type { kind name ofType { kind name ofType { kind name ofType { kind name } } } }
"""
SCALAR_SAMPLES = {"String": '"matrix-x"', "ID": '"matrix-x"', "Float": "1.5", "Int": "1",
                  "Boolean": "false", "Date": '"2030-01-01"', "DateTime": '"2030-01-01T00:00:00Z"'}


def _literal(live: LiveServer, t: dict[str, Any]) -> str | None:
    """A GraphQL literal for a required type (None when the argument may be left out)."""
    if t["kind"] != "NON_NULL":
        return None
    inner = t["ofType"]
    if inner["kind"] == "LIST":
        return "[]"
    if inner["kind"] == "SCALAR":
        return SCALAR_SAMPLES[inner["name"]]
    if inner["kind"] == "INPUT_OBJECT":
        fields = live.gql(INPUT_FIELDS, {"n": inner["name"]})["data"]["__type"]["inputFields"]
        parts = [f"{f['name']}: {v}" for f in fields if (v := _literal(live, f["type"]))]
        return "{" + ", ".join(parts) + "}"
    raise AssertionError(f"no sample for {inner}")


def test_authorization_matrix(live_server: LiveServer) -> None:
    fields = live_server.gql(INTROSPECT)["data"]["__schema"]["mutationType"]["fields"]
    names = {f["name"] for f in fields}
    assert names - MATRIX.keys() == set(), "mutations without an authorization entry"
    assert MATRIX.keys() - names == set(), "table entries for mutations that do not exist"
    wrong = []
    for f in fields:
        args = [f"{a['name']}: {v}" for a in f["args"] if (v := _literal(live_server, a["type"]))]
        call = f"{f['name']}({', '.join(args)})" if args else f["name"]
        query = f"mutation {{ {call} {{ __typename }} }}"
        for role in Role:
            body = live_server.gql(query, role=role.value)
            assert "errors" not in body, (f["name"], role, body)
            got_forbidden = body["data"][f["name"]]["__typename"] == "Forbidden"
            if got_forbidden == (role in MATRIX[f["name"]]):
                wrong.append(f"{f['name']} as {role}: "
                             f"{'Forbidden' if got_forbidden else 'allowed'}")
    assert wrong == []


def test_refusals_are_audited(live_server: LiveServer) -> None:
    body = live_server.gql('mutation { createArea(input: {id: "Z9", name: "z"}) { __typename } }',
                           role="crew")
    assert body["data"]["createArea"]["__typename"] == "Forbidden"
    log = live_server.gql('{ auditLog(first: 5, filter: {outcome: "forbidden", actor: "crew"}) '
                          '{ edges { node { operation role diff } } } }')
    ops = [e["node"] for e in log["data"]["auditLog"]["edges"]]
    assert ops and ops[0]["operation"] == "area.create" and ops[0]["role"] == "crew"
