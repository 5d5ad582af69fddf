"""Tag path ↔ NodeId: the string scheme, its parser and the resolution against a NamespaceArray."""

from __future__ import annotations

import uuid

import pytest
from asyncua import ua

from opcua.nodes import (
    NAMESPACE_URI,
    STATION_VARIABLES,
    NodeRef,
    node_id_for_path,
    parse_node_id,
    path_from_node_id,
    split_station_path,
    station_path,
    station_points,
    to_ua_node_id,
)

NAMESPACES = ["http://opcfoundation.org/UA/", "urn:freeopcua:python:server", NAMESPACE_URI]


def test_a_tag_path_is_the_string_identifier_in_the_gasops_namespace() -> None:
    assert node_id_for_path("station/GRP-12/p_out") == "nsu=urn:gasops:sim;s=station/GRP-12/p_out"
    assert node_id_for_path("station/GRP-12/p_out", namespace_index=2) == "ns=2;s=station/GRP-12/p_out"
    assert path_from_node_id("nsu=urn:gasops:sim;s=station/GRP-12/p_out") == "station/GRP-12/p_out"


@pytest.mark.parametrize("text", [
    "nsu=urn:gasops:sim;s=station/GRP-01/p_out",
    "ns=2;s=station/GRP-01/p_out",
    "s=plain",
    "i=2258",
    "ns=3;i=4294967295",
    f"ns=1;g={uuid.UUID(int=7)}",
    "ns=4;b=AAEC",
    "ns=2;s=with;semicolons=and spaces",
])
def test_node_ids_round_trip(text: str) -> None:
    assert str(parse_node_id(text)) == text
    assert parse_node_id(str(parse_node_id(text))) == parse_node_id(text)


def test_parsed_parts() -> None:
    assert parse_node_id("nsu=urn:gasops:sim;s=station/GRP-01/door") == NodeRef(
        "s", "station/GRP-01/door", namespace_uri=NAMESPACE_URI)
    assert parse_node_id(" ns=2;i=17 ") == NodeRef("i", 17, namespace_index=2)
    assert parse_node_id("s=x").namespace_index is None


@pytest.mark.parametrize("text", [
    "", "station/GRP-01/p_out", "ns=2;x=1", "ns=2;s=", "i=abc", "i=-1", "i=4294967296",
    "ns=70000;i=1", "g=not-a-guid", "b=***", "ns=;s=x", "nsu=;s=x",
])
def test_malformed_node_ids_are_refused(text: str) -> None:
    with pytest.raises(ValueError):
        parse_node_id(text)


def test_a_node_id_has_one_namespace() -> None:
    with pytest.raises(ValueError, match="not both"):
        NodeRef("s", "x", namespace_index=2, namespace_uri=NAMESPACE_URI)


def test_only_string_node_ids_carry_a_path() -> None:
    with pytest.raises(ValueError, match="string NodeIds"):
        path_from_node_id("ns=2;i=5")


def test_station_paths() -> None:
    assert station_path("GRP-01", "p_in") == "station/GRP-01/p_in"
    assert split_station_path("station/GRP-01/p_in") == ("GRP-01", "p_in")
    for station, variable in (("", "p_in"), ("A/B", "p_in"), ("GRP-01", ""), (" GRP", "x")):
        with pytest.raises(ValueError):
            station_path(station, variable)
    for path in ("station/GRP-01", "meter/M-1/index", "station//p_in", "station/GRP-01/p_in/x"):
        with pytest.raises(ValueError):
            split_station_path(path)


def test_station_points_cover_every_variable_of_every_station() -> None:
    points = station_points(["GRP-01", "ShRP-7"])
    assert len(points) == 2 * len(STATION_VARIABLES) == 14
    assert points["station/ShRP-7/valve_pos"] == "nsu=urn:gasops:sim;s=station/ShRP-7/valve_pos"
    assert all(path_from_node_id(node) == path for path, node in points.items())


def test_a_namespace_uri_resolves_to_the_servers_index() -> None:
    node = to_ua_node_id(parse_node_id("nsu=urn:gasops:sim;s=station/GRP-01/p_out"), NAMESPACES)
    assert node == ua.NodeId("station/GRP-01/p_out", 2, ua.NodeIdType.String)
    assert to_ua_node_id(parse_node_id("nsu=urn:gasops:sim;i=5"), {NAMESPACE_URI: 7}) == ua.NodeId(5, 7)


def test_index_forms_need_no_lookup() -> None:
    assert to_ua_node_id(parse_node_id("i=2258"), []) == ua.NodeId(2258, 0)
    assert to_ua_node_id(parse_node_id("ns=3;s=a"), []) == ua.NodeId("a", 3)
    guid = uuid.UUID(int=42)
    assert to_ua_node_id(parse_node_id(f"ns=1;g={guid}"), []) == ua.NodeId(guid, 1, ua.NodeIdType.Guid)
    assert to_ua_node_id(parse_node_id("ns=1;b=AAEC"), []) == ua.NodeId(b"\x00\x01\x02", 1,
                                                                         ua.NodeIdType.ByteString)


def test_an_unknown_namespace_uri_is_a_lookup_error() -> None:
    with pytest.raises(LookupError, match="urn:elsewhere"):
        to_ua_node_id(parse_node_id("nsu=urn:elsewhere;s=x"), NAMESPACES)
