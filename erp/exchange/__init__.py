"""Network exchange formats: GeoJSON import and export, GasLib import (docs/network-format.md)."""

from __future__ import annotations

from erp.exchange.gaslib import convert_unit as convert_unit
from erp.exchange.gaslib import import_gaslib_file as import_gaslib_file
from erp.exchange.gaslib import parse_gaslib as parse_gaslib
from erp.exchange.geojson import export_feature_collection as export_feature_collection
from erp.exchange.geojson import import_file as import_file
from erp.exchange.geojson import parse_feature_collection as parse_feature_collection

__all__ = ["convert_unit", "export_feature_collection", "import_file", "import_gaslib_file",
           "parse_feature_collection", "parse_gaslib"]
