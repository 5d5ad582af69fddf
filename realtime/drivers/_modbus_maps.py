"""Modbus register maps as data: points, devices and lines; loading and validation; decode/encode.

Pure code (standard library only, no pymodbus): a device model's registers are described in a
JSON file (`realtime/drivers/maps/*.json`, format in `docs/adding-a-device-driver.md`), loaded
into an immutable `RegisterMap` of `Point`s, and raw register words are turned into engineering
values (and back, for writes) here.

Word and byte order: a 32/64-bit value whose big-endian bytes are `A B C D` arrives as
registers `[AB, CD]` with word order big / byte order big ("ABCD"), `[CD, AB]` with word order
little ("CDAB", the common word-swapped float), `[BA, DC]` with byte order little ("BADC",
byte-swapped) and `[DC, BA]` with both little ("DCBA").
"""

from __future__ import annotations

import json
import math
import re
import struct
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import IntEnum, StrEnum
from pathlib import Path
from typing import Any, Literal, TypeVar

from realtime.drivers.base import DriverError

__all__ = [
    "MAPS_DIR",
    "DataType",
    "EncodeError",
    "Framing",
    "FunctionCode",
    "ModbusDevice",
    "ModbusLine",
    "Order",
    "Point",
    "PointRef",
    "RegisterMap",
    "RegisterMapError",
    "builtin_map",
    "decode",
    "decode_at",
    "encode",
    "load_map",
    "parse_map",
]

MAPS_DIR = Path(__file__).with_name("maps")
MAX_READ_REGISTERS = 125  # Modbus application protocol: function 3/4 carry at most 125 registers
MAX_READ_BITS = 2000  # function 1/2 carry at most 2000 bits

_E = TypeVar("_E", bound=StrEnum)
_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.\-]*$")


class RegisterMapError(DriverError, ValueError):
    """A register map is invalid; says which file, point and field."""

    def __init__(self, source: str, message: str, *, point: str | None = None,
                 field_name: str | None = None) -> None:
        where = source
        if point is not None:
            where += f": point {point!r}"
        if field_name is not None:
            where += f": field {field_name!r}"
        super().__init__(f"{where}: {message}")
        self.source = source
        self.point = point
        self.field_name = field_name


class EncodeError(DriverError, ValueError):
    """A value cannot be written to a point (wrong kind, out of the type's range)."""


class FunctionCode(IntEnum):
    """The Modbus read function of a point's table."""

    COILS = 1
    DISCRETE_INPUTS = 2
    HOLDING_REGISTERS = 3
    INPUT_REGISTERS = 4

    @property
    def is_bits(self) -> bool:
        """Coils and discrete inputs address single bits, not 16-bit registers."""
        return self in (FunctionCode.COILS, FunctionCode.DISCRETE_INPUTS)


_FUNCTION_NAMES = {
    "coils": FunctionCode.COILS,
    "discrete_inputs": FunctionCode.DISCRETE_INPUTS,
    "holding_registers": FunctionCode.HOLDING_REGISTERS,
    "input_registers": FunctionCode.INPUT_REGISTERS,
}


class DataType(StrEnum):
    """How a point's raw value is laid out in registers."""

    BOOL = "bool"
    INT16 = "int16"
    UINT16 = "uint16"
    INT32 = "int32"
    UINT32 = "uint32"
    FLOAT32 = "float32"
    FLOAT64 = "float64"

    @property
    def registers(self) -> int:
        """16-bit registers the type occupies (a bool occupies one bit or one register)."""
        return _LAYOUT[self][1]

    @property
    def is_integer(self) -> bool:
        """Whether raw values are integers."""
        return self in _INT_RANGE


_LAYOUT: dict[DataType, tuple[str, int]] = {  # struct code (big-endian), registers
    DataType.BOOL: ("", 1),
    DataType.INT16: (">h", 1),
    DataType.UINT16: (">H", 1),
    DataType.INT32: (">i", 2),
    DataType.UINT32: (">I", 2),
    DataType.FLOAT32: (">f", 2),
    DataType.FLOAT64: (">d", 4),
}
_INT_RANGE: dict[DataType, tuple[int, int]] = {
    DataType.INT16: (-(2**15), 2**15 - 1),
    DataType.UINT16: (0, 2**16 - 1),
    DataType.INT32: (-(2**31), 2**31 - 1),
    DataType.UINT32: (0, 2**32 - 1),
}


class Order(StrEnum):
    """Word or byte order: `big` = most significant first (the Modbus default)."""

    BIG = "big"
    LITTLE = "little"


@dataclass(frozen=True, slots=True)
class Point:
    """One value of a device: where it lives, how it is laid out, how it scales.

    `address` is the 0-based protocol address (register "40001" of a manual is function 3,
    address 0). Engineering value = raw * scale + offset. `bit` selects one bit (0 = least
    significant) of a register for a bool point read with function 3 or 4.
    """

    name: str
    address: int
    function: FunctionCode
    type: DataType
    word_order: Order = Order.BIG
    byte_order: Order = Order.BIG
    scale: float = 1.0
    offset: float = 0.0
    unit: str = ""
    writable: bool = False
    bit: int | None = None
    description: str = ""

    @property
    def count(self) -> int:
        """Registers (or bits, for coils/discrete inputs) the point occupies."""
        return 1 if self.function.is_bits else self.type.registers

    @property
    def end(self) -> int:
        """The last address the point occupies (inclusive)."""
        return self.address + self.count - 1


@dataclass(frozen=True, slots=True)
class RegisterMap:
    """A device model's points, and how many registers/bits one read request may carry."""

    model: str
    points: tuple[Point, ...]
    description: str = ""
    max_registers_per_read: int = MAX_READ_REGISTERS
    max_bits_per_read: int = MAX_READ_BITS
    max_gap: int = 0
    by_name: Mapping[str, Point] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "by_name", {p.name: p for p in self.points})

    def point(self, name: str) -> Point:
        """The point called `name`; `RegisterMapError` if the map has none."""
        try:
            return self.by_name[name]
        except KeyError:
            raise RegisterMapError(self.model, "no such point", point=name) from None


# --------------------------------------------------------------------------- devices and lines

class Framing(StrEnum):
    """How Modbus frames travel over the TCP connection."""

    TCP = "tcp"  # Modbus TCP (MBAP header)
    RTU = "rtu"  # Modbus RTU frames (CRC) through a serial-to-TCP modem / RS-485 gateway


@dataclass(frozen=True, slots=True)
class ModbusLine:
    """One line: where it is, how it frames, and how patient the driver is with it.

    Times in seconds. `retries` extra attempts per request (a down device is probed with one
    attempt); `down_after_failures` consecutive failed polls mark a device down.
    """

    host: str
    port: int = 502
    framing: Framing = Framing.TCP
    timeout_s: float = 1.0
    retries: int = 1
    inter_frame_delay_s: float = 0.0
    down_after_failures: int = 3
    backoff_initial_s: float = 30.0
    backoff_max_s: float = 300.0
    reconnect_initial_s: float = 0.5
    reconnect_max_s: float = 30.0

    def __post_init__(self) -> None:
        if not 0 < self.port < 65536:
            raise ValueError(f"port {self.port} is not 1..65535")
        if self.timeout_s <= 0 or self.retries < 0 or self.inter_frame_delay_s < 0:
            raise ValueError("timeout_s must be > 0, retries and inter_frame_delay_s >= 0")
        if self.down_after_failures < 1:
            raise ValueError("down_after_failures must be >= 1")
        if not 0 < self.backoff_initial_s <= self.backoff_max_s:
            raise ValueError("need 0 < backoff_initial_s <= backoff_max_s")
        if not 0 < self.reconnect_initial_s <= self.reconnect_max_s:
            raise ValueError("need 0 < reconnect_initial_s <= reconnect_max_s")

    @property
    def label(self) -> str:
        """`host:port/framing`, for logs and errors."""
        return f"{self.host}:{self.port}/{self.framing.value}"


@dataclass(frozen=True, slots=True)
class ModbusDevice:
    """A device on the line: its name, Modbus unit id, register map and poll period (s)."""

    name: str
    unit_id: int
    register_map: RegisterMap
    poll_period_s: float = 10.0

    def __post_init__(self) -> None:
        if not 0 <= self.unit_id <= 255:
            raise ValueError(f"device {self.name!r}: unit id {self.unit_id} is not 0..255")
        if self.poll_period_s <= 0:
            raise ValueError(f"device {self.name!r}: poll_period_s must be > 0")


@dataclass(frozen=True, slots=True)
class PointRef:
    """Where a tag lives: a device of the line and a point of its map."""

    device: str
    point: str

    @classmethod
    def parse(cls, address: str) -> PointRef:
        """`"corrector-1/vb"` → `PointRef("corrector-1", "vb")`."""
        device, sep, point = address.partition("/")
        if not sep or not device or not point:
            raise ValueError(f"{address!r} is not 'device/point'")
        return cls(device, point)


# --------------------------------------------------------------------------- loading

_MAP_KEYS = {"model", "description", "defaults", "points", "max_registers_per_read",
             "max_bits_per_read", "max_gap"}
_DEFAULT_KEYS = {"word_order", "byte_order"}
_POINT_KEYS = {"name", "address", "function", "type", "word_order", "byte_order", "scale",
               "offset", "unit", "writable", "bit", "description"}


def load_map(path: str | Path) -> RegisterMap:
    """Load and validate a register map file (JSON); `RegisterMapError` says what is wrong."""
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise RegisterMapError(str(path), f"cannot read: {exc}") from exc
    except json.JSONDecodeError as exc:
        raise RegisterMapError(str(path), f"not valid JSON: {exc}") from exc
    return parse_map(data, source=str(path))


def builtin_map(model: str) -> RegisterMap:
    """One of the maps shipped in `realtime/drivers/maps/` by model name (file stem)."""
    path = MAPS_DIR / f"{model}.json"
    if not _NAME.match(model) or not path.is_file():
        known = sorted(p.stem for p in MAPS_DIR.glob("*.json"))
        raise RegisterMapError(str(path), f"no built-in map {model!r} (known: {', '.join(known)})")
    return load_map(path)


def parse_map(data: Any, *, source: str = "<map>") -> RegisterMap:
    """Validate a decoded map document (see `load_map`) into a `RegisterMap`."""
    if not isinstance(data, Mapping):
        raise RegisterMapError(source, "the document must be a JSON object")
    _unknown_keys(data, _MAP_KEYS, source)
    model = data.get("model")
    if not isinstance(model, str) or not _NAME.match(model):
        raise RegisterMapError(source, "must be a name of letters, digits, '_', '-', '.'",
                               field_name="model")
    description = _string(data, "description", source, None)
    defaults = data.get("defaults", {})
    if not isinstance(defaults, Mapping):
        raise RegisterMapError(source, "must be an object", field_name="defaults")
    _unknown_keys(defaults, _DEFAULT_KEYS, source, where="defaults")
    max_regs = _int(data, "max_registers_per_read", source, None, MAX_READ_REGISTERS,
                    low=1, high=MAX_READ_REGISTERS)
    max_bits = _int(data, "max_bits_per_read", source, None, MAX_READ_BITS,
                    low=1, high=MAX_READ_BITS)
    max_gap = _int(data, "max_gap", source, None, 0, low=0, high=MAX_READ_REGISTERS)
    raw_points = data.get("points")
    if not isinstance(raw_points, list) or not raw_points:
        raise RegisterMapError(source, "must be a non-empty list", field_name="points")
    points: list[Point] = []
    seen: set[str] = set()
    for index, raw in enumerate(raw_points):
        point = _parse_point(raw, index, defaults, source)
        if point.name in seen:
            raise RegisterMapError(source, "duplicate point name", point=point.name,
                                   field_name="name")
        seen.add(point.name)
        points.append(point)
    return RegisterMap(model=model, description=description, points=tuple(points),
                       max_registers_per_read=max_regs, max_bits_per_read=max_bits,
                       max_gap=max_gap)


def _parse_point(raw: Any, index: int, defaults: Mapping[str, Any], source: str) -> Point:
    label = f"#{index}"
    if not isinstance(raw, Mapping):
        raise RegisterMapError(source, "must be an object", point=label)
    name = raw.get("name")
    if not isinstance(name, str) or not _NAME.match(name):
        raise RegisterMapError(source, "must be a name of letters, digits, '_', '-', '.'",
                               point=label, field_name="name")
    _unknown_keys(raw, _POINT_KEYS, source, point=name)
    function = _function(raw.get("function"), source, name)
    type_ = _enum(DataType, raw.get("type"), source, name, "type")
    word_order = _enum(Order, raw.get("word_order", defaults.get("word_order", "big")), source,
                       name, "word_order")
    byte_order = _enum(Order, raw.get("byte_order", defaults.get("byte_order", "big")), source,
                       name, "byte_order")
    address = _int(raw, "address", source, name, None, low=0, high=65535)
    scale = _number(raw, "scale", source, name, 1.0)
    offset = _number(raw, "offset", source, name, 0.0)
    if scale == 0:
        raise RegisterMapError(source, "must not be 0", point=name, field_name="scale")
    writable = raw.get("writable", False)
    if not isinstance(writable, bool):
        raise RegisterMapError(source, "must be true or false", point=name, field_name="writable")
    bit = None if raw.get("bit") is None else _int(raw, "bit", source, name, None, low=0, high=15)
    if function.is_bits and type_ is not DataType.BOOL:
        raise RegisterMapError(source, f"function {int(function)} ({function.name.lower()}) "
                               "holds single bits: type must be 'bool'", point=name,
                               field_name="type")
    if type_ is DataType.BOOL and not function.is_bits and bit is None:
        raise RegisterMapError(source, "a bool in a register needs 'bit' (0-15)", point=name,
                               field_name="bit")
    if bit is not None and (type_ is not DataType.BOOL or function.is_bits):
        raise RegisterMapError(source, "only a bool point read from a register has a bit",
                               point=name, field_name="bit")
    if writable and function in (FunctionCode.DISCRETE_INPUTS, FunctionCode.INPUT_REGISTERS):
        raise RegisterMapError(source, f"function {int(function)} ({function.name.lower()}) "
                               "is read-only", point=name, field_name="writable")
    if writable and bit is not None:
        raise RegisterMapError(source, "writing a single bit of a register is not supported",
                               point=name, field_name="writable")
    if type_ is DataType.BOOL and (scale != 1.0 or offset != 0.0):
        raise RegisterMapError(source, "a bool point cannot be scaled", point=name,
                               field_name="scale")
    point = Point(name=name, address=address, function=function, type=type_,
                  word_order=word_order, byte_order=byte_order, scale=scale, offset=offset,
                  unit=_string(raw, "unit", source, name), writable=writable, bit=bit,
                  description=_string(raw, "description", source, name))
    if point.end > 65535:
        raise RegisterMapError(source, f"{type_.value} at {address} runs past address 65535",
                               point=name, field_name="address")
    return point


def _unknown_keys(data: Mapping[str, Any], allowed: set[str], source: str,
                  point: str | None = None, where: str | None = None) -> None:
    for key in data:
        if key not in allowed and not str(key).startswith("$"):  # "$comment" is free text
            field_name = f"{where}.{key}" if where else str(key)
            raise RegisterMapError(source, f"unknown field (expected one of {', '.join(sorted(allowed))})",
                                   point=point, field_name=field_name)


def _function(value: Any, source: str, point: str) -> FunctionCode:
    if isinstance(value, str) and value in _FUNCTION_NAMES:
        return _FUNCTION_NAMES[value]
    if isinstance(value, int) and not isinstance(value, bool) and value in (1, 2, 3, 4):
        return FunctionCode(value)
    raise RegisterMapError(source, f"{value!r}: expected 1, 2, 3, 4 or one of "
                           f"{', '.join(_FUNCTION_NAMES)}", point=point, field_name="function")


def _enum(kind: type[_E], value: Any, source: str, point: str, name: str) -> _E:
    try:
        return kind(value)
    except ValueError:
        raise RegisterMapError(source, f"{value!r}: expected one of "
                               f"{', '.join(m.value for m in kind)}", point=point,
                               field_name=name) from None


def _int(data: Mapping[str, Any], key: str, source: str, point: str | None, default: int | None,
         *, low: int, high: int) -> int:
    value = data.get(key, default)
    if value is None:
        raise RegisterMapError(source, "is required", point=point, field_name=key)
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise RegisterMapError(source, f"{value!r}: expected an integer {low}..{high}",
                               point=point, field_name=key)
    return value


def _number(data: Mapping[str, Any], key: str, source: str, point: str, default: float) -> float:
    value = data.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise RegisterMapError(source, f"{value!r}: expected a finite number", point=point,
                               field_name=key)
    return float(value)


def _string(data: Mapping[str, Any], key: str, source: str, point: str | None) -> str:
    value = data.get(key, "")
    if not isinstance(value, str):
        raise RegisterMapError(source, "must be a string", point=point, field_name=key)
    return value


# --------------------------------------------------------------------------- decode / encode

def _words_to_bytes(point: Point, words: Sequence[int]) -> bytes:
    ordered = list(words)[::-1] if point.word_order is Order.LITTLE else list(words)
    byteorder: Literal["big", "little"] = "big" if point.byte_order is Order.BIG else "little"
    return b"".join(int(w & 0xFFFF).to_bytes(2, byteorder) for w in ordered)


def _bytes_to_words(point: Point, data: bytes) -> list[int]:
    byteorder: Literal["big", "little"] = "big" if point.byte_order is Order.BIG else "little"
    words = [int.from_bytes(data[i:i + 2], byteorder) for i in range(0, len(data), 2)]
    return words[::-1] if point.word_order is Order.LITTLE else words


def _scaled(point: Point, raw: int | float) -> int | float:
    if point.scale == 1.0 and point.offset == 0.0:
        return raw
    return raw * point.scale + point.offset


def decode(point: Point, data: Sequence[int] | Sequence[bool]) -> bool | int | float:
    """The engineering value of `point` from its own registers (or its one bit).

    Arguments: `data` holds exactly the point's `count` registers (ints 0..65535, as read) or,
    for coils/discrete inputs, one bit. Returns raw * scale + offset (ints stay ints when the
    point is unscaled; bools are never scaled).
    """
    if len(data) != point.count:
        raise ValueError(f"point {point.name!r} needs {point.count} value(s), got {len(data)}")
    if point.function.is_bits:
        return bool(data[0])
    if point.type is DataType.BOOL:
        assert point.bit is not None  # validated on load
        return bool((int(data[0]) >> point.bit) & 1)
    code, _ = _LAYOUT[point.type]
    raw: int | float = struct.unpack(code, _words_to_bytes(point, [int(w) for w in data]))[0]
    return _scaled(point, raw)


def decode_at(point: Point, start: int, data: Sequence[int] | Sequence[bool]) -> bool | int | float:
    """`decode` the point out of a block read from address `start`."""
    offset = point.address - start
    if offset < 0 or offset + point.count > len(data):
        raise ValueError(f"point {point.name!r} at {point.address} is outside the block "
                         f"{start}..{start + len(data) - 1}")
    return decode(point, data[offset:offset + point.count])


def encode(point: Point, value: object) -> list[int] | bool:
    """The registers (or coil state) that make `point` read back as `value`.

    Arguments: `value` in engineering units. Returns a bool for a coil, else `count` register
    words. Raises `EncodeError` for a value of the wrong kind or outside the type's range.
    """
    if point.type is DataType.BOOL:
        if isinstance(value, bool) or isinstance(value, int) and value in (0, 1):
            if point.function.is_bits:
                return bool(value)
            raise EncodeError(f"point {point.name!r}: writing a single bit of a register "
                              "is not supported")
        raise EncodeError(f"point {point.name!r} is a bool; got {value!r}")
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise EncodeError(f"point {point.name!r} takes a number; got {value!r}")
    raw = (value - point.offset) / point.scale if (point.scale, point.offset) != (1.0, 0.0) else value
    code, _ = _LAYOUT[point.type]
    if point.type.is_integer:
        if not math.isfinite(raw):
            raise EncodeError(f"point {point.name!r} ({point.type.value}) takes a finite number")
        integer = round(raw)
        low, high = _INT_RANGE[point.type]
        if not low <= integer <= high:
            raise EncodeError(f"point {point.name!r}: {value!r} is raw {integer}, outside "
                              f"{point.type.value} range {low}..{high}")
        packed = struct.pack(code, integer)
    else:
        try:
            packed = struct.pack(code, float(raw))
        except OverflowError:
            raise EncodeError(f"point {point.name!r}: {value!r} does not fit a "
                              f"{point.type.value}") from None
    return _bytes_to_words(point, packed)

