"""Tag path ↔ OPC UA NodeId: the string NodeId scheme gasops uses and its parser.

A gasops tag path ("station/GRP-12/p_out") is the string identifier of its node, in the
namespace of the server's namespace URI: ``nsu=urn:gasops:sim;s=station/GRP-12/p_out``. The
URI form is stable across server restarts (a namespace *index* is not guaranteed to be); the
driver resolves it against the server's NamespaceArray once per session. The index form
(``ns=2;s=...``), numeric (``i=``), GUID (``g=``) and opaque (``b=``) identifiers are accepted too,
for servers that are not ours.
"""

from __future__ import annotations

import base64
import binascii
import re
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Literal
from urllib.parse import quote, unquote

from asyncua import ua

from realtime.model import TagPath

__all__ = [
    "NAMESPACE_URI",
    "STATION_VARIABLES",
    "NodeRef",
    "node_id_for_path",
    "parse_node_id",
    "path_from_node_id",
    "split_station_path",
    "station_path",
    "station_points",
    "to_ua_node_id",
]

NAMESPACE_URI = "urn:gasops:sim"
STATION_VARIABLES: tuple[str, ...] = ("p_in", "p_out", "t_gas", "flow", "door", "valve_pos",
                                       "p_out_sp")

IdKind = Literal["i", "s", "g", "b"]
_NODE_ID = re.compile(r"^(?:ns=(?P<ns>\d+);|nsu=(?P<nsu>[^;]+);)?(?P<kind>[isgb])=(?P<id>.*)$", re.DOTALL)
_UINT32_MAX = 0xFFFFFFFF
_UINT16_MAX = 0xFFFF


@dataclass(frozen=True, slots=True)
class NodeRef:
    """A parsed string NodeId: the namespace (an index or a URI, never both) and the identifier."""

    kind: IdKind
    identifier: str | int
    namespace_index: int | None = None
    namespace_uri: str | None = None

    def __post_init__(self) -> None:
        if self.namespace_index is not None and self.namespace_uri is not None:
            raise ValueError("a NodeId has a namespace index or a namespace URI, not both")

    def __str__(self) -> str:
        if self.namespace_uri is not None:
            prefix = f"nsu={quote(self.namespace_uri, safe=':/._-~')};"
        elif self.namespace_index:
            prefix = f"ns={self.namespace_index};"
        else:
            prefix = ""
        return f"{prefix}{self.kind}={self.identifier}"


def parse_node_id(text: str) -> NodeRef:
    """Parse ``[ns=<index>;|nsu=<uri>;]<i|s|g|b>=<identifier>``; `ValueError` if malformed."""
    match = _NODE_ID.match(text.strip())
    if match is None:
        raise ValueError(f"not a NodeId: {text!r} "
                         f"(expected e.g. 'nsu={NAMESPACE_URI};s=station/GRP-01/p_out')")
    kind: IdKind = match["kind"]  # type: ignore[assignment]  # the regex admits only i, s, g, b
    raw = match["id"]
    identifier: str | int
    if kind == "i":
        if not raw.isdigit() or int(raw) > _UINT32_MAX:
            raise ValueError(f"numeric NodeId identifier must be a UInt32: {text!r}")
        identifier = int(raw)
    elif kind == "g":
        try:
            identifier = str(uuid.UUID(raw))
        except ValueError:
            raise ValueError(f"GUID NodeId identifier is not a GUID: {text!r}") from None
    elif kind == "b":
        try:
            base64.b64decode(raw, validate=True)
        except (binascii.Error, ValueError):
            raise ValueError(f"opaque NodeId identifier is not base64: {text!r}") from None
        identifier = raw
    else:
        if not raw:
            raise ValueError(f"string NodeId identifier is empty: {text!r}")
        identifier = raw
    index = int(match["ns"]) if match["ns"] is not None else None
    if index is not None and index > _UINT16_MAX:
        raise ValueError(f"namespace index must be a UInt16: {text!r}")
    uri = unquote(match["nsu"]) if match["nsu"] is not None else None
    return NodeRef(kind=kind, identifier=identifier, namespace_index=index, namespace_uri=uri)


def station_path(station: str, variable: str) -> TagPath:
    """The tag path of one station variable: ``station/<id>/<variable>``."""
    for part, what in ((station, "station id"), (variable, "variable")):
        if not part or "/" in part or part != part.strip():
            raise ValueError(f"bad {what} {part!r}: non-empty, no '/', no surrounding blanks")
    return f"station/{station}/{variable}"


def split_station_path(path: TagPath) -> tuple[str, str]:
    """``station/<id>/<variable>`` → ``(id, variable)``; `ValueError` for other paths."""
    parts = path.split("/")
    if len(parts) != 3 or parts[0] != "station" or not parts[1] or not parts[2]:
        raise ValueError(f"not a station tag path: {path!r}")
    return parts[1], parts[2]


def node_id_for_path(path: TagPath, *, namespace_uri: str | None = NAMESPACE_URI,
                     namespace_index: int | None = None) -> str:
    """The string NodeId of a tag path (the path is the node's string identifier)."""
    if not path or path != path.strip():
        raise ValueError(f"bad tag path {path!r}")
    if namespace_index is not None:
        namespace_uri = None
    return str(NodeRef("s", path, namespace_index=namespace_index, namespace_uri=namespace_uri))


def path_from_node_id(text: str) -> TagPath:
    """The tag path a string NodeId carries (inverse of `node_id_for_path`)."""
    ref = parse_node_id(text)
    if ref.kind != "s":
        raise ValueError(f"only string NodeIds carry a tag path: {text!r}")
    return str(ref.identifier)


def station_points(stations: Iterable[str], *, variables: Sequence[str] = STATION_VARIABLES,
                   namespace_uri: str = NAMESPACE_URI) -> dict[TagPath, str]:
    """Tag path → NodeId for every variable of every station (the driver's `points`)."""
    return {path: node_id_for_path(path, namespace_uri=namespace_uri)
            for station in stations for path in (station_path(station, v) for v in variables)}


def to_ua_node_id(ref: NodeRef, namespaces: Sequence[str] | Mapping[str, int]) -> ua.NodeId:
    """An asyncua NodeId for `ref`, its namespace URI looked up in the server's NamespaceArray.

    Raises `LookupError` when the server does not know the URI.
    """
    index = ref.namespace_index or 0
    if ref.namespace_uri is not None:
        table = namespaces if isinstance(namespaces, Mapping) else {u: i for i, u in enumerate(namespaces)}
        try:
            index = table[ref.namespace_uri]
        except KeyError:
            raise LookupError(f"the server has no namespace {ref.namespace_uri!r}") from None
    if ref.kind == "i":
        return ua.NodeId(int(ref.identifier), index, ua.NodeIdType.Numeric)
    if ref.kind == "g":
        return ua.NodeId(uuid.UUID(str(ref.identifier)), index, ua.NodeIdType.Guid)
    if ref.kind == "b":
        return ua.NodeId(base64.b64decode(str(ref.identifier)), index, ua.NodeIdType.ByteString)
    return ua.NodeId(str(ref.identifier), index, ua.NodeIdType.String)
