"""The read planner: the fewest Modbus read requests that cover a device's points.

Pure code. Points are grouped by function code, sorted by address and merged greedily into
contiguous requests, across gaps of at most `max_gap` unused addresses, never longer than the
protocol limit (125 registers for functions 3/4, 2000 bits for 1/2, or less where a device says
so). Greedy left-to-right merging is optimal here: it yields the fewest requests for the limit.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from realtime.drivers._modbus_maps import MAX_READ_BITS, MAX_READ_REGISTERS, FunctionCode, Point

__all__ = ["ReadRequest", "plan_reads"]


@dataclass(frozen=True, slots=True)
class ReadRequest:
    """One read: `count` registers (or bits) from `address` with `function`, and the points in it."""

    function: FunctionCode
    address: int
    count: int
    points: tuple[Point, ...]

    @property
    def end(self) -> int:
        """The last address read (inclusive)."""
        return self.address + self.count - 1


def plan_reads(points: Iterable[Point], *, max_gap: int = 0,
               max_registers: int = MAX_READ_REGISTERS,
               max_bits: int = MAX_READ_BITS) -> list[ReadRequest]:
    """The fewest requests reading every point once, in (function, address) order.

    Arguments: `max_gap` is how many unused addresses a request may span between two points
    (reading them costs less than a second request, but some devices refuse reads of
    unmapped addresses: keep 0 for those); `max_registers`/`max_bits` cap one request
    (registers for functions 3/4, bits for 1/2). A point is never split across requests.
    """
    if max_gap < 0:
        raise ValueError("max_gap must be >= 0")
    if not 1 <= max_registers <= MAX_READ_REGISTERS or not 1 <= max_bits <= MAX_READ_BITS:
        raise ValueError(f"limits must be 1..{MAX_READ_REGISTERS} registers, 1..{MAX_READ_BITS} bits")
    ordered = sorted(dict.fromkeys(points), key=lambda p: (p.function, p.address, p.end, p.name))
    requests: list[ReadRequest] = []
    group: list[Point] = []
    start = end = 0
    for point in ordered:
        limit = max_bits if point.function.is_bits else max_registers
        if point.count > limit:
            raise ValueError(f"point {point.name!r} needs {point.count} registers, more than "
                             f"the limit of {limit} per request")
        if group and (point.function is group[0].function
                      and point.address - end - 1 <= max_gap
                      and max(end, point.end) - start + 1 <= limit):
            group.append(point)
            end = max(end, point.end)
            continue
        if group:
            requests.append(ReadRequest(group[0].function, start, end - start + 1, tuple(group)))
        group, start, end = [point], point.address, point.end
    if group:
        requests.append(ReadRequest(group[0].function, start, end - start + 1, tuple(group)))
    return requests
