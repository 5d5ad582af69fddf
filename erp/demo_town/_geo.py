"""Geometry of the demo town: local metres around the centre, WGS84, and the terrain.

The town is laid out in a local east/north plane in metres with the origin at the centre of
Yaroslavl; `to_lat_lon` turns that into WGS84 with an equirectangular approximation (good to
a few centimetres over the 10 km the town spans). The terrain is a smooth, made-up field:
the Kotorosl valley crossing the town west to east a little north of the centre at about
90–95 m above sea level, rising to about 140 m on the southern and northern edges.
"""

from __future__ import annotations

import math

__all__ = ["CENTRE_LAT", "CENTRE_LON", "METRES_PER_DEGREE_LAT", "elevation_m", "to_lat_lon"]

CENTRE_LAT = 57.6261
CENTRE_LON = 39.8845
METRES_PER_DEGREE_LAT = 111_195.0

_VALLEY_FLOOR_M = 96.0
_VALLEY_RISE_M = 40.0
_VALLEY_HALF_WIDTH_M = 1_900.0


def to_lat_lon(x_m: float, y_m: float) -> tuple[float, float]:
    """WGS84 (lat, lon) in degrees, rounded to 1e-7°, of a point `x_m` east, `y_m` north."""
    lat = CENTRE_LAT + y_m / METRES_PER_DEGREE_LAT
    lon = CENTRE_LON + x_m / (METRES_PER_DEGREE_LAT * math.cos(math.radians(CENTRE_LAT)))
    return round(lat, 7), round(lon, 7)


def _valley_axis_y_m(x_m: float) -> float:
    """North coordinate of the valley floor at `x_m` (a gently meandering line)."""
    return 700.0 + 450.0 * math.sin(x_m / 2_600.0 + 0.6)


def elevation_m(x_m: float, y_m: float) -> float:
    """Ground elevation above sea level (m, rounded to 0.1 m) at local point (`x_m`, `y_m`)."""
    d = y_m - _valley_axis_y_m(x_m)
    valley = _VALLEY_RISE_M * (1.0 - math.exp(-((d / _VALLEY_HALF_WIDTH_M) ** 2)))
    hills = 5.0 * math.sin(x_m / 1_700.0) * math.cos(y_m / 2_100.0)
    tilt = 0.0008 * x_m  # the east bank is a little higher
    return round(max(85.0, min(145.0, _VALLEY_FLOOR_M + valley + hills + tilt)), 1)
