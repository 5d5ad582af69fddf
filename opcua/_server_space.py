"""The integrator server's address space as data: districts, assets, tags, units and node ids.

`plan_address_space` groups tag definitions into ``GasNetwork/<District>/<Asset>/<Tag>`` without
touching asyncua; `add_nodes_items` turns that plan into one batch of AddNodes items (one
service call builds 5,000 tags in well under a second, where a `Node.add_variable` per tag
costs an await and a type lookup each).

Node ids, all string identifiers in namespace ``urn:gasops:server`` (`NAMESPACE_URI`):

- ``GasNetwork`` — the root folder under Objects;
- ``area/<area id>`` — a district folder (``area/_unassigned`` for tags without an area);
- ``asset/<asset id>`` — an asset object (station, SKZ, meter, valve);
- ``asset/<asset id>/Select`` (``Operate``, ``Cancel``) — its control methods, plus
  ``…/<Method>/InputArguments`` and ``…/OutputArguments``;
- ``<tag path>`` — a tag's variable, e.g. ``nsu=urn:gasops:server;s=station/GRP-12/p_out``;
  ``<tag path>/EURange`` and ``<tag path>/EngineeringUnits`` — its properties.

Tag paths never start with ``area/``, ``asset/`` or ``alarm/`` (the kinds are station, skz,
meter, valve…), so the id spaces do not collide.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Final

from asyncua import ua

from realtime.model import TagDef, TagPath

__all__ = [
    "APPLICATION_URI",
    "NAMESPACE_URI",
    "ROOT_ID",
    "UNASSIGNED",
    "UNECE_NAMESPACE",
    "AssetPlan",
    "DistrictPlan",
    "add_nodes_items",
    "asset_node_id",
    "district_node_id",
    "eu_information",
    "notifier_references",
    "plan_address_space",
    "tag_paths",
    "variant_type",
]

NAMESPACE_URI: Final = "urn:gasops:server"
APPLICATION_URI: Final = "urn:gasops:server:integrator"
UNECE_NAMESPACE: Final = "http://www.opcfoundation.org/UA/units/un/cefact"
UNASSIGNED: Final = "Unassigned"
ROOT_ID: Final = "GasNetwork"

# unit as gasops writes it → (UNECE Rec. 20 common code, display name, description)
_UNITS: Final[Mapping[str, tuple[str, str, str]]] = {
    "Pa": ("PAL", "Pa", "pascal"),
    "kPa": ("KPA", "kPa", "kilopascal"),
    "MPa": ("MPA", "MPa", "megapascal"),
    "bar": ("BAR", "bar", "bar [unit of pressure]"),
    "degC": ("CEL", "°C", "degree Celsius"),
    "°C": ("CEL", "°C", "degree Celsius"),
    "K": ("KEL", "K", "kelvin"),
    "m3/h": ("MQH", "m³/h", "cubic metre per hour"),
    "m³/h": ("MQH", "m³/h", "cubic metre per hour"),
    "m3": ("MTQ", "m³", "cubic metre"),
    "m³": ("MTQ", "m³", "cubic metre"),
    "V": ("VLT", "V", "volt"),
    "mV": ("2Z", "mV", "millivolt"),
    "A": ("AMP", "A", "ampere"),
    "mA": ("4K", "mA", "milliampere"),
    "%": ("P1", "%", "percent"),
    "kWh": ("KWH", "kW·h", "kilowatt hour"),
    "kW": ("KWT", "kW", "kilowatt"),
    "GJ": ("GV", "GJ", "gigajoule"),
    "m": ("MTR", "m", "metre"),
    "s": ("SEC", "s", "second"),
    "Hz": ("HTZ", "Hz", "hertz"),
}
_VARIANTS: Final[Mapping[str, ua.VariantType]] = {
    "float": ua.VariantType.Double, "int": ua.VariantType.Int64,
    "bool": ua.VariantType.Boolean, "str": ua.VariantType.String,
}
_READ_HISTORY: Final = ua.AccessLevel.CurrentRead.mask | ua.AccessLevel.HistoryRead.mask


@dataclass(frozen=True, slots=True)
class AssetPlan:
    """One asset object: its id, kind (first path segment) and tags (browse name → definition)."""

    id: str
    kind: str
    tags: tuple[tuple[str, TagDef], ...]

    @property
    def controllable(self) -> bool:
        """Whether any of its tags is writable (then it carries Select/Operate/Cancel)."""
        return any(tag.writable for _, tag in self.tags)


@dataclass(frozen=True, slots=True)
class DistrictPlan:
    """One district folder: area id (None: unassigned), browse name, assets, loose tags."""

    area_id: str | None
    name: str
    assets: tuple[AssetPlan, ...]
    tags: tuple[tuple[str, TagDef], ...]  # tags without an asset, directly in the folder


def district_node_id(area_id: str | None) -> str:
    """String identifier of a district folder."""
    return f"area/{area_id if area_id is not None else '_unassigned'}"


def asset_node_id(asset_id: str) -> str:
    """String identifier of an asset object."""
    return f"asset/{asset_id}"


def variant_type(tag: TagDef) -> ua.VariantType:
    """The OPC UA type of a tag's value (Double, Int64, Boolean or String)."""
    return _VARIANTS.get(tag.data_type, ua.VariantType.Double)


def eu_information(unit: str) -> ua.EUInformation:
    """EUInformation of a unit: UNECE code when known, else a display-name-only entry (UnitId -1)."""
    known = _UNITS.get(unit.strip())
    if known is None:
        return ua.EUInformation(NamespaceUri=NAMESPACE_URI, UnitId=-1,
                                DisplayName=ua.LocalizedText(unit), Description=ua.LocalizedText(unit))
    code, display, description = known
    unit_id = 0
    for char in code:  # OPC UA Part 8 §5.6.3: the common code's characters, big-endian
        unit_id = (unit_id << 8) | ord(char)
    return ua.EUInformation(NamespaceUri=UNECE_NAMESPACE, UnitId=unit_id,
                            DisplayName=ua.LocalizedText(display), Description=ua.LocalizedText(description))


def _asset_of(tag: TagDef) -> tuple[str | None, str, str]:
    """(asset id, kind, browse name) of a tag from its definition and path ``kind/ASSET/name``."""
    parts = tag.path.split("/")
    if len(parts) >= 3:
        return tag.asset_id or parts[1], parts[0], ".".join(parts[2:])
    return tag.asset_id, parts[0] if tag.asset_id else "", parts[-1]


def _unique(named: list[tuple[str, TagDef]]) -> tuple[tuple[str, TagDef], ...]:
    """Browse names unique within a parent: a clash falls back to the full tag path."""
    counts: dict[str, int] = {}
    for name, _ in named:
        counts[name] = counts.get(name, 0) + 1
    return tuple(sorted(((name if counts[name] == 1 else tag.path), tag) for name, tag in named))


def plan_address_space(defs: Iterable[TagDef], area_names: Mapping[str, str] | None = None,
                       ) -> tuple[DistrictPlan, ...]:
    """Group tags into districts and assets, sorted by name; an asset lives in its first tag's area."""
    area_names = area_names or {}
    ordered = sorted(defs, key=lambda t: t.path)
    asset_area: dict[str, str | None] = {}
    asset_kind: dict[str, str] = {}
    asset_tags: dict[str, list[tuple[str, TagDef]]] = {}
    loose: dict[str | None, list[tuple[str, TagDef]]] = {}
    for tag in ordered:
        asset, kind, name = _asset_of(tag)
        if asset is None:
            loose.setdefault(tag.area_id, []).append((name, tag))
            continue
        if asset not in asset_tags or (asset_area[asset] is None and tag.area_id is not None):
            asset_area[asset] = tag.area_id
        asset_kind.setdefault(asset, kind)
        asset_tags.setdefault(asset, []).append((name, tag))
    areas = set(asset_area.values()) | set(loose)
    names = {a: (area_names.get(a, a) if a is not None else UNASSIGNED) for a in areas}
    clashes = {n for n in names.values() if list(names.values()).count(n) > 1}
    districts = []
    for area in areas:
        name = names[area]
        if name in clashes:
            name = f"{name} ({area if area is not None else '-'})"
        assets = tuple(AssetPlan(a, asset_kind[a], _unique(asset_tags[a]))
                       for a in sorted(asset_tags) if asset_area[a] == area)
        districts.append(DistrictPlan(area, name, assets, _unique(loose.get(area, []))))
    return tuple(sorted(districts, key=lambda d: (d.area_id is None, d.name)))


# --------------------------------------------------------------------------- AddNodes items

def _item(node_id: ua.NodeId, parent: ua.NodeId, ref: int, node_class: ua.NodeClass, name: str,
          ns: int, type_def: int, attrs: ua.NodeAttributes) -> ua.AddNodesItem:
    return ua.AddNodesItem(ParentNodeId=parent, ReferenceTypeId=ua.NodeId(ref), RequestedNewNodeId=node_id,
                           BrowseName=ua.QualifiedName(name, ns), NodeClass=node_class,
                           NodeAttributes=attrs, TypeDefinition=ua.NodeId(type_def))


def _folder(ident: str, parent: ua.NodeId, name: str, ns: int, description: str,
            ) -> ua.AddNodesItem:
    attrs = ua.ObjectAttributes(DisplayName=ua.LocalizedText(name), Description=ua.LocalizedText(description),
                                EventNotifier=ua.EventNotifier.SubscribeToEvents.mask)
    return _item(ua.NodeId(ident, ns), parent, ua.ObjectIds.Organizes, ua.NodeClass.Object, name, ns,
                 ua.ObjectIds.FolderType, attrs)


def _property(owner: str, name: str, value: ua.Variant, data_type: int, ns: int) -> ua.AddNodesItem:
    attrs = ua.VariableAttributes(DisplayName=ua.LocalizedText(name), Description=ua.LocalizedText(name),
                                  Value=value, DataType=ua.NodeId(data_type), ValueRank=ua.ValueRank.Scalar,
                                  AccessLevel=ua.AccessLevel.CurrentRead.mask,
                                  UserAccessLevel=ua.AccessLevel.CurrentRead.mask)
    return _item(ua.NodeId(f"{owner}/{name}", ns), ua.NodeId(owner, ns), ua.ObjectIds.HasProperty,
                 ua.NodeClass.Variable, name, ns, ua.ObjectIds.PropertyType, attrs)


def _variable(tag: TagDef, name: str, parent: ua.NodeId, ns: int) -> list[ua.AddNodesItem]:
    """The variable of a tag (plus EURange / EngineeringUnits properties for a float)."""
    vtype = variant_type(tag)
    analog = vtype is ua.VariantType.Double
    has_range = analog and tag.range_low is not None and tag.range_high is not None
    # AnalogItemType makes EURange mandatory; without a known range, its supertype
    # BaseAnalogType (where EURange is optional) is the conformant choice.
    type_def = (ua.ObjectIds.AnalogItemType if has_range else ua.ObjectIds.BaseAnalogType) if analog else (
        ua.ObjectIds.BaseDataVariableType)
    attrs = ua.VariableAttributes(
        DisplayName=ua.LocalizedText(name), Description=ua.LocalizedText(tag.description or tag.path),
        Value=ua.Variant(None, ua.VariantType.Null), DataType=ua.NodeId(int(vtype)),
        ValueRank=ua.ValueRank.Scalar, AccessLevel=_READ_HISTORY, UserAccessLevel=_READ_HISTORY,
        Historizing=True, MinimumSamplingInterval=0.0)
    items = [_item(ua.NodeId(tag.path, ns), parent, ua.ObjectIds.HasComponent, ua.NodeClass.Variable, name,
                   ns, type_def, attrs)]
    if has_range:
        assert tag.range_low is not None and tag.range_high is not None
        rng = ua.Range(Low=float(tag.range_low), High=float(tag.range_high))
        items.append(_property(tag.path, "EURange", ua.Variant(rng, ua.VariantType.ExtensionObject),
                               ua.ObjectIds.Range, ns))
    if analog and tag.unit.strip():
        items.append(_property(tag.path, "EngineeringUnits",
                               ua.Variant(eu_information(tag.unit), ua.VariantType.ExtensionObject),
                               ua.ObjectIds.EUInformation, ns))
    return items


def add_nodes_items(plan: Iterable[DistrictPlan], ns: int) -> list[ua.AddNodesItem]:
    """Every folder, object, variable and property of `plan`, parents first (methods not included)."""
    root = ua.NodeId(ROOT_ID, ns)
    items = [_folder(ROOT_ID, ua.NodeId(ua.ObjectIds.ObjectsFolder), ROOT_ID, ns,
                     "The gas network by district, asset and tag")]
    for district in plan:
        folder = district_node_id(district.area_id)
        items.append(_folder(folder, root, district.name, ns, f"District {district.area_id or UNASSIGNED}"))
        parent = ua.NodeId(folder, ns)
        for name, tag in district.tags:
            items += _variable(tag, name, parent, ns)
        for asset in district.assets:
            ident = asset_node_id(asset.id)
            attrs = ua.ObjectAttributes(DisplayName=ua.LocalizedText(asset.id),
                                        Description=ua.LocalizedText(f"{asset.kind} {asset.id}".strip()),
                                        EventNotifier=ua.EventNotifier.SubscribeToEvents.mask)
            items.append(_item(ua.NodeId(ident, ns), parent, ua.ObjectIds.Organizes, ua.NodeClass.Object,
                               asset.id, ns, ua.ObjectIds.BaseObjectType, attrs))
            for name, tag in asset.tags:
                items += _variable(tag, name, ua.NodeId(ident, ns), ns)
    return items


def notifier_references(ns: int) -> list[ua.AddReferencesItem]:
    """Server HasNotifier GasNetwork: the A&C area hierarchy's root (OPC UA Part 9 §5.4).

    The district and asset objects are event notifiers too, but get no HasNotifier references
    from their parents: HasNotifier is hierarchical, so browsers would list each child twice
    (once Organizes, once HasNotifier). Events are emitted on every level explicitly instead.
    """
    return [ua.AddReferencesItem(SourceNodeId=ua.NodeId(ua.ObjectIds.Server),
                                 ReferenceTypeId=ua.NodeId(ua.ObjectIds.HasNotifier), IsForward=True,
                                 TargetNodeId=ua.NodeId(ROOT_ID, ns), TargetNodeClass=ua.NodeClass.Object)]


def tag_paths(plan: Iterable[DistrictPlan]) -> dict[TagPath, TagDef]:
    """Every tag of the plan by path."""
    out: dict[TagPath, TagDef] = {}
    for district in plan:
        out.update((tag.path, tag) for _, tag in district.tags)
        for asset in district.assets:
            out.update((tag.path, tag) for _, tag in asset.tags)
    return out
