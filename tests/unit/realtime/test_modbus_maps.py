"""Register maps (load, validate), decode/encode of every type and order, and the read planner."""

from __future__ import annotations

import json
import math
import random
import struct
from pathlib import Path
from typing import Any

import pytest

from realtime.drivers._modbus_maps import (
    MAPS_DIR,
    DataType,
    EncodeError,
    FunctionCode,
    Order,
    Point,
    RegisterMapError,
    builtin_map,
    decode,
    decode_at,
    encode,
    load_map,
    parse_map,
)
from realtime.drivers._modbus_plan import ReadRequest, plan_reads
from realtime.drivers.base import DriverError

HR, IR, CO, DI = (FunctionCode.HOLDING_REGISTERS, FunctionCode.INPUT_REGISTERS,
                  FunctionCode.COILS, FunctionCode.DISCRETE_INPUTS)


def _point(type_: str = "uint16", function: FunctionCode = HR, address: int = 0, **kw: Any) -> Point:
    return Point(name=kw.pop("name", "x"), address=address, function=function,
                 type=DataType(type_), **kw)


def _words(data: bytes) -> list[int]:
    """Big-endian bytes → big-endian 16-bit words, the way a device in ABCD order sends them."""
    return [int.from_bytes(data[i:i + 2], "big") for i in range(0, len(data), 2)]


F32 = struct.pack(">f", 123.456)  # bytes A B C D
A, B, C, D = F32
FLOAT32_ORDERS = {  # (word order, byte order) → registers on the wire, built by hand
    ("big", "big"): [(A << 8) | B, (C << 8) | D],  # ABCD
    ("little", "big"): [(C << 8) | D, (A << 8) | B],  # CDAB (word-swapped)
    ("big", "little"): [(B << 8) | A, (D << 8) | C],  # BADC (byte-swapped)
    ("little", "little"): [(D << 8) | C, (B << 8) | A],  # DCBA
}
F32_VALUE = struct.unpack(">f", F32)[0]  # 123.456 as float32 holds it


# --------------------------------------------------------------------------- decode

@pytest.mark.parametrize(("word_order", "byte_order"), sorted(FLOAT32_ORDERS))
def test_float32_decodes_in_all_four_orders(word_order: str, byte_order: str) -> None:
    point = _point("float32", word_order=Order(word_order), byte_order=Order(byte_order))
    value = decode(point, FLOAT32_ORDERS[word_order, byte_order])
    assert value == F32_VALUE
    assert value == pytest.approx(123.456, abs=1e-5)


@pytest.mark.parametrize(("word_order", "byte_order"), sorted(FLOAT32_ORDERS))
def test_float32_encodes_to_the_same_registers(word_order: str, byte_order: str) -> None:
    point = _point("float32", word_order=Order(word_order), byte_order=Order(byte_order),
                   writable=True)
    assert encode(point, 123.456) == FLOAT32_ORDERS[word_order, byte_order]


def test_the_four_orders_really_differ() -> None:
    assert len({tuple(v) for v in FLOAT32_ORDERS.values()}) == 4


@pytest.mark.parametrize(("type_", "fmt", "value"), [
    ("int32", ">i", -123456789),
    ("int32", ">i", 2**31 - 1),
    ("uint32", ">I", 4_000_000_000),
    ("uint32", ">I", 0),
    ("float64", ">d", -98765.4321),
    ("float64", ">d", 1e300),
])
def test_wide_types_in_all_orders(type_: str, fmt: str, value: float) -> None:
    big = _words(struct.pack(fmt, value))
    swapped_bytes = [((w & 0xFF) << 8) | (w >> 8) for w in big]
    cases = {("big", "big"): big, ("little", "big"): big[::-1],
             ("big", "little"): swapped_bytes, ("little", "little"): swapped_bytes[::-1]}
    for (word_order, byte_order), registers in cases.items():
        point = _point(type_, word_order=Order(word_order), byte_order=Order(byte_order))
        assert decode(point, registers) == value, (word_order, byte_order)
        assert encode(point, value) == registers, (word_order, byte_order)


def test_float64_word_order_reverses_all_four_words() -> None:
    big = _words(struct.pack(">d", 1.5))
    assert decode(_point("float64", word_order=Order.LITTLE), big[::-1]) == 1.5


@pytest.mark.parametrize(("type_", "registers", "expected"), [
    ("int16", [0xFFFF], -1),
    ("int16", [0x8000], -32768),
    ("uint16", [0xFFFF], 65535),
    ("int32", [0xFFFF, 0xFFFE], -2),
    ("uint32", [0x0001, 0x0000], 65536),
])
def test_integer_types(type_: str, registers: list[int], expected: int) -> None:
    value = decode(_point(type_), registers)
    assert value == expected and isinstance(value, int)


def test_int16_byte_order_little_swaps_the_bytes() -> None:
    assert decode(_point("int16", byte_order=Order.LITTLE), [0x3412]) == 0x1234


def test_scale_and_offset() -> None:
    point = _point("int16", scale=0.001, offset=0.0)
    assert decode(point, [(-950) & 0xFFFF]) == pytest.approx(-0.95)
    kelvin = _point("uint16", scale=0.1, offset=-273.15)
    assert decode(kelvin, [2931]) == pytest.approx(19.95)
    pressure = _point("float32", scale=100000.0)  # bar → Pa
    assert decode(pressure, _words(struct.pack(">f", 5.5))) == pytest.approx(550000.0)


def test_bits_and_register_bits() -> None:
    assert decode(_point("bool", CO), [True]) is True
    assert decode(_point("bool", DI), [False]) is False
    word = 0b1000_0000_0000_1010
    assert [decode(_point("bool", IR, bit=b), [word]) for b in (0, 1, 3, 15)] == [
        False, True, True, True]


def test_decode_at_slices_the_block() -> None:
    point = _point("float32", address=12)
    block = [0] * 12 + _words(struct.pack(">f", 2.5)) + [7]
    assert decode_at(point, 0, block) == 2.5
    with pytest.raises(ValueError, match="outside the block"):
        decode_at(point, 0, block[:13])


def test_decode_checks_the_word_count() -> None:
    with pytest.raises(ValueError, match="needs 2"):
        decode(_point("float32"), [1])


# --------------------------------------------------------------------------- encode

@pytest.mark.parametrize(("type_", "value", "scale", "offset"), [
    ("int16", -0.95, 0.001, 0.0),
    ("uint16", 12.34, 0.01, 0.0),
    ("int32", -123456.7, 0.1, 0.0),
    ("uint32", 42_000.5, 0.5, 0.0),
    ("uint16", 20.0, 0.1, -273.15),
    ("float32", 3.25, 1.0, 0.0),
    ("float64", 1234567.890123, 1.0, 0.0),
    ("float32", 550000.0, 100000.0, 0.0),
])
def test_write_round_trip(type_: str, value: float, scale: float, offset: float) -> None:
    for word_order in Order:
        for byte_order in Order:
            point = _point(type_, scale=scale, offset=offset, word_order=word_order,
                           byte_order=byte_order, writable=True)
            registers = encode(point, value)
            assert isinstance(registers, list) and len(registers) == point.count
            assert all(0 <= r <= 0xFFFF for r in registers)
            tolerance = scale / 2 if DataType(type_).is_integer else 1e-6 * abs(value)
            assert decode(point, registers) == pytest.approx(value, abs=tolerance)


def test_encode_refuses_out_of_range_and_wrong_kinds() -> None:
    with pytest.raises(EncodeError, match="outside uint16 range"):
        encode(_point("uint16"), 70000)
    with pytest.raises(EncodeError, match="outside int16 range"):
        encode(_point("int16", scale=0.001), -40.0)  # raw -40000
    with pytest.raises(EncodeError, match="takes a number"):
        encode(_point("uint16"), "12")
    with pytest.raises(EncodeError, match="takes a number"):
        encode(_point("uint16"), True)
    with pytest.raises(EncodeError, match="finite"):
        encode(_point("int32"), math.nan)
    with pytest.raises(EncodeError, match="does not fit"):
        encode(_point("float32"), 1e300)
    with pytest.raises(EncodeError, match="is a bool"):
        encode(_point("bool", CO), 2)
    assert isinstance(EncodeError("x"), DriverError)


def test_encode_coils() -> None:
    assert encode(_point("bool", CO, writable=True), True) is True
    assert encode(_point("bool", CO, writable=True), 0) is False


# --------------------------------------------------------------------------- loading

def _doc(*points: dict[str, Any], **top: Any) -> dict[str, Any]:
    return {"model": "test-device", "points": list(points), **top}


def _err(data: Any) -> RegisterMapError:
    with pytest.raises(RegisterMapError) as info:
        parse_map(data, source="maps/test.json")
    return info.value


def test_parse_a_full_point_and_defaults() -> None:
    rmap = parse_map(_doc(
        {"name": "p", "address": 8, "function": "input_registers", "type": "float32",
         "scale": 100000, "unit": "Pa", "description": "pressure"},
        {"name": "mode", "address": 10, "function": 3, "type": "uint16", "writable": True,
         "word_order": "big"},
        defaults={"word_order": "little", "byte_order": "big"}, max_gap=3,
        max_registers_per_read=60))
    p, mode = rmap.points
    assert p == Point(name="p", address=8, function=IR, type=DataType.FLOAT32,
                      word_order=Order.LITTLE, byte_order=Order.BIG, scale=100000.0, unit="Pa",
                      description="pressure")
    assert mode.writable and mode.word_order is Order.BIG and mode.function is HR
    assert rmap.point("mode") is mode
    assert (rmap.max_gap, rmap.max_registers_per_read, rmap.max_bits_per_read) == (3, 60, 2000)


@pytest.mark.parametrize(("point", "field", "message"), [
    ({"address": 0, "function": 3, "type": "uint16"}, "name", "must be a name"),
    ({"name": "x", "function": 3, "type": "uint16"}, "address", "is required"),
    ({"name": "x", "address": 70000, "function": 3, "type": "uint16"}, "address", "0..65535"),
    ({"name": "x", "address": 65535, "function": 3, "type": "uint32"}, "address", "runs past"),
    ({"name": "x", "address": 0, "function": 5, "type": "uint16"}, "function", "expected 1, 2, 3, 4"),
    ({"name": "x", "address": 0, "function": 3, "type": "float16"}, "type", "expected one of"),
    ({"name": "x", "address": 0, "function": 3, "type": "float32", "word_order": "middle"},
     "word_order", "expected one of big, little"),
    ({"name": "x", "address": 0, "function": 3, "type": "uint16", "scale": 0}, "scale", "not be 0"),
    ({"name": "x", "address": 0, "function": 3, "type": "uint16", "scale": "2"}, "scale", "finite"),
    ({"name": "x", "address": 0, "function": 1, "type": "uint16"}, "type", "must be 'bool'"),
    ({"name": "x", "address": 0, "function": 3, "type": "bool"}, "bit", "needs 'bit'"),
    ({"name": "x", "address": 0, "function": 3, "type": "uint16", "bit": 2}, "bit", "only a bool"),
    ({"name": "x", "address": 0, "function": 3, "type": "bool", "bit": 16}, "bit", "0..15"),
    ({"name": "x", "address": 0, "function": 4, "type": "uint16", "writable": True}, "writable",
     "read-only"),
    ({"name": "x", "address": 0, "function": 2, "type": "bool", "writable": True}, "writable",
     "read-only"),
    ({"name": "x", "address": 0, "function": 3, "type": "bool", "bit": 1, "writable": True},
     "writable", "single bit"),
    ({"name": "x", "address": 0, "function": 3, "type": "uint16", "writable": "yes"}, "writable",
     "true or false"),
    ({"name": "x", "address": 0, "function": 1, "type": "bool", "scale": 2}, "scale", "cannot be scaled"),
    ({"name": "x", "address": 0, "function": 3, "type": "uint16", "adress": 1}, "adress", "unknown field"),
])
def test_invalid_points_name_file_point_and_field(point: dict[str, Any], field: str,
                                                  message: str) -> None:
    err = _err(_doc({"name": "ok", "address": 500, "function": 3, "type": "uint16"}, point))
    assert err.source == "maps/test.json"
    assert err.field_name == field
    assert message in str(err)
    assert str(err).startswith("maps/test.json: point ")
    assert err.point == point.get("name", "#1")


def test_invalid_documents() -> None:
    assert "JSON object" in str(_err([]))
    assert _err({"points": []}).field_name == "model"
    assert _err(_doc()).field_name == "points"
    assert _err({**_doc({"name": "a", "address": 0, "function": 3, "type": "uint16"}),
                 "vendor": "x"}).field_name == "vendor"
    assert _err(_doc({"name": "a", "address": 0, "function": 3, "type": "uint16"},
                     max_registers_per_read=200)).field_name == "max_registers_per_read"
    assert _err(_doc({"name": "a", "address": 0, "function": 3, "type": "uint16"},
                     defaults={"scale": 2})).field_name == "defaults.scale"
    dup = _err(_doc({"name": "a", "address": 0, "function": 3, "type": "uint16"},
                    {"name": "a", "address": 1, "function": 3, "type": "uint16"}))
    assert (dup.point, dup.field_name) == ("a", "name") and "duplicate" in str(dup)
    comment = parse_map({**_doc({"name": "a", "address": 0, "function": 3, "type": "uint16",
                                 "$comment": "free text"}), "$comment": "free text"})
    assert comment.point("a").address == 0
    with pytest.raises(RegisterMapError, match="no such point"):
        comment.point("b")


def test_load_map_reports_the_file(tmp_path: Path) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(RegisterMapError, match=r"bad\.json: not valid JSON"):
        load_map(bad)
    with pytest.raises(RegisterMapError, match="cannot read"):
        load_map(tmp_path / "missing.json")
    good = tmp_path / "good.json"
    good.write_text(json.dumps(_doc({"name": "a", "address": 1, "function": "coils",
                                     "type": "bool", "writable": True})))
    assert load_map(good).point("a").function is CO


@pytest.mark.parametrize("path", sorted(MAPS_DIR.glob("*.json")), ids=lambda p: p.stem)
def test_builtin_maps_load_and_say_what_they_are(path: Path) -> None:
    rmap = builtin_map(path.stem)
    assert rmap.model == path.stem
    assert "not a vendor's official" in rmap.description.lower()
    assert all(p.description for p in rmap.points)
    requests = plan_reads(rmap.points, max_gap=rmap.max_gap,
                          max_registers=rmap.max_registers_per_read)
    assert sorted(p.name for r in requests for p in r.points) == sorted(rmap.by_name)


def test_builtin_maps_cover_the_devices_of_the_issue() -> None:
    corrector = builtin_map("corrector-ek270-like")
    assert {"vb", "vm", "p_abs", "t_gas", "alarm_tamper"} <= corrector.by_name.keys()
    skz = builtin_map("skz-rectifier")
    assert skz.point("mode").writable and skz.point("setpoint_e_pol").writable
    assert {"u_out", "i_out", "e_pol"} <= skz.by_name.keys()
    assert "energy_import" in builtin_map("electricity-meter").by_name
    with pytest.raises(RegisterMapError, match="no built-in map"):
        builtin_map("no-such-meter")


# --------------------------------------------------------------------------- planner

def _pt(name: str, address: int, type_: str = "uint16", function: FunctionCode = HR) -> Point:
    return Point(name=name, address=address, function=function, type=DataType(type_))


def test_planner_merges_neighbours_and_splits_functions() -> None:
    points = [_pt("a", 0), _pt("b", 1, "float32"), _pt("c", 3), _pt("d", 0, "uint16", IR),
              _pt("e", 5, "bool", CO), _pt("f", 6, "bool", CO), _pt("g", 10)]
    plan = plan_reads(points)
    assert [(r.function, r.address, r.count) for r in plan] == [
        (CO, 5, 2), (HR, 0, 4), (HR, 10, 1), (IR, 0, 1)]
    assert plan_reads(points, max_gap=6)[1] == ReadRequest(
        HR, 0, 11, (points[0], points[1], points[2], points[6]))


def test_planner_gap_is_exact() -> None:
    points = [_pt("a", 0), _pt("b", 4)]  # 3 unused registers between them
    assert len(plan_reads(points, max_gap=2)) == 2
    assert [(r.address, r.count) for r in plan_reads(points, max_gap=3)] == [(0, 5)]


def test_planner_respects_the_125_register_limit() -> None:
    points = [_pt(f"r{i}", i) for i in range(300)]
    plan = plan_reads(points)
    assert [(r.address, r.count) for r in plan] == [(0, 125), (125, 125), (250, 50)]
    assert [r.count for r in plan_reads(points, max_registers=100)] == [100, 100, 100]


def test_planner_never_splits_a_point_over_the_limit() -> None:
    points = [_pt("a", 0, "float64")] + [_pt(f"f{i}", 4 + 4 * i, "float64") for i in range(40)]
    for request in plan_reads(points):
        assert request.count <= 125
        assert all(request.address <= p.address and p.end <= request.end for p in request.points)
    # registers 0..124 (a float32 at 123) fit exactly; one more register does not
    assert len(plan_reads([_pt("a", 0), _pt("b", 123, "float32")], max_gap=125)) == 1
    assert len(plan_reads([_pt("a", 0), _pt("b", 124, "float32")], max_gap=125)) == 2


def test_planner_bits_limit_is_2000() -> None:
    coils = [_pt(f"c{i}", i, "bool", CO) for i in range(4500)]
    assert [r.count for r in plan_reads(coils)] == [2000, 2000, 500]


def test_planner_handles_overlaps_and_duplicates() -> None:
    status = _pt("status", 4)
    bits = [Point(name=f"b{i}", address=4, function=HR, type=DataType.BOOL, bit=i) for i in range(3)]
    plan = plan_reads([status, *bits, status])
    assert len(plan) == 1 and (plan[0].address, plan[0].count) == (4, 1)
    assert len(plan[0].points) == 4


def test_planner_rejects_bad_parameters() -> None:
    with pytest.raises(ValueError):
        plan_reads([], max_gap=-1)
    with pytest.raises(ValueError):
        plan_reads([], max_registers=126)
    with pytest.raises(ValueError, match="more than the limit"):
        plan_reads([_pt("a", 0, "float64")], max_registers=2)
    assert plan_reads([]) == []


_TYPES = ["uint16", "int16", "int32", "uint32", "float32", "float64"]


def _random_points(rng: random.Random, overlapping: bool) -> list[Point]:
    points: list[Point] = []
    for function in (HR, IR, CO, DI):
        address = rng.randrange(0, 50)
        for i in range(rng.randrange(0, 60)):
            type_ = "bool" if function.is_bits else rng.choice(_TYPES)
            point = Point(name=f"{function.value}-{i}", address=address, function=function,
                          type=DataType(type_))
            points.append(point)
            step = rng.choice([0, 0, 1, 2, 5, 30]) if overlapping else rng.choice([0, 0, 1, 3, 40])
            address = (point.address if overlapping and rng.random() < 0.2
                       else point.end + 1) + step
    rng.shuffle(points)
    return points


def _fewest(points: list[Point], max_gap: int, limit_regs: int, limit_bits: int) -> int:
    """Optimal request count by dynamic programming over consecutive runs (non-overlapping)."""
    total = 0
    for function in FunctionCode:
        group = sorted((p for p in points if p.function is function), key=lambda p: p.address)
        limit = limit_bits if function.is_bits else limit_regs
        best = [0] + [math.inf] * len(group)
        for j in range(1, len(group) + 1):
            for i in range(j - 1, -1, -1):
                run = group[i:j]
                if any(b.address - a.end - 1 > max_gap for a, b in zip(run, run[1:], strict=False)):
                    break
                if run[-1].end - run[0].address + 1 > limit:
                    break
                best[j] = min(best[j], best[i] + 1)
        total += int(best[-1])
    return total


@pytest.mark.parametrize("seed", range(60))
def test_planner_properties_on_random_point_sets(seed: int) -> None:
    rng = random.Random(seed)
    overlapping = seed % 3 == 0
    points = _random_points(rng, overlapping)
    max_gap = rng.choice([0, 1, 4, 20])
    max_regs = rng.choice([125, 125, 16, 7])
    max_bits = rng.choice([2000, 10])
    plan = plan_reads(points, max_gap=max_gap, max_registers=max_regs, max_bits=max_bits)
    covered = [p for r in plan for p in r.points]
    assert sorted(covered, key=id) == sorted(set(points), key=id)  # every point exactly once
    for request in plan:
        limit = max_bits if request.function.is_bits else max_regs
        assert 1 <= request.count <= limit
        assert all(p.function is request.function for p in request.points)
        assert all(request.address <= p.address and p.end <= request.end for p in request.points)
        assert request.address == min(p.address for p in request.points)
        assert request.end == max(p.end for p in request.points)
        spans = sorted((p.address, p.end) for p in request.points)
        reach = spans[0][1]
        for start, end in spans[1:]:  # no hole wider than max_gap inside a request
            assert start - reach - 1 <= max_gap
            reach = max(reach, end)
    if not overlapping:
        assert len(plan) == _fewest(points, max_gap, max_regs, max_bits)
