"""Authentication and scope from the outside: API tokens, areas, failed logins, masking."""

from __future__ import annotations

import pytest

from tests._live import LiveServer
from tests.e2e._network import seed_grid

LOGIN = ('mutation($u: String!, $p: String!) { login(username: $u, password: $p) '
         '{ __typename ... on LoginSuccess { accessToken user { role areaIds } } '
         '... on AuthError { message } } }')


@pytest.fixture(scope="module")
def two_areas(live_server: LiveServer) -> LiveServer:
    seed_grid(live_server.settings.database_url, 5, area="NORTH")
    seed_grid(live_server.settings.database_url, 7, area="SOUTH")
    return live_server


def test_integrator_api_token_works_over_http(two_areas: LiveServer) -> None:
    body = two_areas.gql('mutation { createApiToken(name: "scada-link", ttlDays: 30) '
                         '{ __typename ... on ApiTokenSuccess { token expiresAt } } }',
                         role="integrator")
    token = body["data"]["createApiToken"]["token"]
    assert token.startswith("gso_")
    summary = two_areas.gql("{ networkSummary { pipes } }", role=None, token=token)
    assert summary["data"]["networkSummary"]["pipes"] >= 12
    bad = two_areas.gql("{ networkSummary { pipes } }", role=None, token=token + "x")
    assert bad["errors"][0]["extensions"]["code"] == "FORBIDDEN"


def test_area_scoped_user_sees_and_changes_only_their_district(two_areas: LiveServer) -> None:
    made = two_areas.gql('mutation { createUser(input: {username: "north-eng", password: '
                         '"long-enough-9", role: "engineer", areaIds: ["NORTH"]}) '
                         '{ __typename } }')
    assert made["data"]["createUser"]["__typename"] == "UserSuccess"
    login = two_areas.gql(LOGIN, {"u": "north-eng", "p": "long-enough-9"}, role=None)
    token = login["data"]["login"]["accessToken"]
    assert login["data"]["login"]["user"]["areaIds"] == ["NORTH"]
    pipes = two_areas.gql("{ pipes(first: 50) { totalCount edges { node { area { assetId } } } } }",
                          token=token)["data"]["pipes"]
    assert pipes["totalCount"] == 5
    assert {e["node"]["area"]["assetId"] for e in pipes["edges"]} == {"NORTH"}
    south = two_areas.gql('mutation { updatePipe(id: "SOUTH-P-0001", input: {lengthM: 3}) '
                          '{ __typename } }', token=token)
    assert south["data"]["updatePipe"]["__typename"] == "NotFound"
    north = two_areas.gql('mutation { updatePipe(id: "NORTH-P-0001", input: {lengthM: 3}) '
                          '{ __typename ... on PipeSuccess { asset { lengthM } } } }', token=token)
    assert north["data"]["updatePipe"]["asset"]["lengthM"] == 3


def test_failed_login_is_refused_and_audited(two_areas: LiveServer) -> None:
    body = two_areas.gql(LOGIN, {"u": "admin", "p": "wrong-password"}, role=None)
    assert body["data"]["login"]["__typename"] == "AuthError"
    log = two_areas.gql('{ auditLog(first: 1, filter: {operationPrefix: "auth.login", '
                        'outcome: "refused"}) { edges { node { actor outcome } } } }')
    assert log["data"]["auditLog"]["edges"][0]["node"] == {"actor": "admin", "outcome": "refused"}


def test_validation_errors_name_the_field(two_areas: LiveServer) -> None:
    body = two_areas.gql('mutation { createPipe(input: {id: "BAD", fromNodeId: "NORTH-N-0000", '
                         'toNodeId: "SOUTH-N-0000", lengthM: -4, innerDiameterM: 0.1, '
                         'material: "pe", roughnessM: 0.00001, pressureLevel: "low"}) '
                         '{ __typename ... on ValidationError { fieldErrors { field message } } } }')
    result = body["data"]["createPipe"]
    assert result["__typename"] == "ValidationError"
    assert {"length_m"} <= {e["field"] for e in result["fieldErrors"]}


async def test_unexpected_errors_are_masked() -> None:
    from erp.domain.access import Principal
    from realtime.broadcast import Broadcast
    from schema.context import Context, Services
    from schema.schema import build_schema

    def broken_db() -> object:
        raise RuntimeError("connection string with a secret in it")

    ctx = Context(services=Services(db=broken_db, bus=Broadcast(), signing_key="k"),  # type: ignore[arg-type]
                  principal=Principal(1, "a", "admin", None))
    result = await build_schema().execute("{ networkSummary { nodes } }", context_value=ctx)
    assert result.errors is not None
    assert result.errors[0].message == "Unexpected error."


def test_introspection_can_be_switched_off() -> None:
    from schema.schema import Limits, build_schema

    closed = build_schema(Limits(introspection=False))
    result = closed.execute_sync("{ __schema { types { name } } }")
    assert result.errors and "introspection" in result.errors[0].message.lower()
    assert build_schema().execute_sync("{ __schema { queryType { name } } }").errors is None
