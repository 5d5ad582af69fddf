"""HTTP push endpoint for NB-IoT smart meters and data concentrators.

`POST /api/push/meter-readings` with `Authorization: Device <token>` and a JSON body
`{"readings": [{"ts": "2026-12-03T06:00:00+03:00", "index_m3": 1234.567, "valve_open": true,
"battery_pct": 87, "tamper": false}, ...]}`. The answer lists every item as stored, duplicate
or rejected (with the reason), so a device can re-send safely after a lost acknowledgement.
"""

from __future__ import annotations

import datetime as dt
import logging
from typing import Any

import orjson
from sqlalchemy.exc import IntegrityError
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from erp.services import readings
from realtime.model import Quality, TagDef, TagValue

__all__ = ["MAX_BODY_BYTES", "PushEndpoint"]

log = logging.getLogger("gasops.push")
MAX_BODY_BYTES = 1_000_000

_TAGS = (("index", "m3", "meter register, working conditions", "float"),
         ("valve_open", "", "shut-off valve open", "bool"),
         ("battery", "%", "battery level", "float"),
         ("tamper", "", "tamper / magnet event", "bool"))


class PushEndpoint:
    """The Starlette endpoint; feeds stored readings into the live pipeline too."""

    def __init__(self, db: Any, telemetry: Any) -> None:
        self._db = db
        self._telemetry = telemetry

    async def handle(self, request: Request) -> Response:
        """POST /api/push/meter-readings."""
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() not in ("device", "bearer") or not token.strip():
            return _error(401, "send Authorization: Device <token>")
        if int(request.headers.get("content-length") or 0) > MAX_BODY_BYTES:
            return _error(413, f"body over {MAX_BODY_BYTES} bytes: send smaller batches")
        body = await request.body()
        if len(body) > MAX_BODY_BYTES:
            return _error(413, f"body over {MAX_BODY_BYTES} bytes: send smaller batches")
        try:
            data = orjson.loads(body)
        except orjson.JSONDecodeError as exc:
            return _error(400, f"invalid JSON: {exc}")
        items = data.get("readings") if isinstance(data, dict) else None
        if not isinstance(items, list):
            return _error(400, 'the body must be {"readings": [ ... ]}')
        if len(items) > readings.MAX_BATCH:
            return _error(413, f"at most {readings.MAX_BATCH} readings per request")
        for attempt in (1, 2):
            try:
                async with self._db.begin() as s:
                    who = await readings.authenticate_device(s, token.strip())
                    if who is None:
                        return _error(401, "unknown or revoked device token")
                    results, fresh = await readings.ingest(s, who[0], items)
                break
            except IntegrityError:
                if attempt == 2:
                    raise
                # The same batch arrived twice at once: the retry sees the rows as duplicates.
        self._feed(who[0], who[1], fresh)
        counts = {k: sum(r.status == k for r in results)
                  for k in ("stored", "duplicate", "rejected")}
        return JSONResponse({"meter": who[0], **counts, "items": [
            {k: v for k, v in vars_(r).items() if v is not None} for r in results]})

    def _feed(self, meter_id: str, area_id: str | None,
              fresh: list[readings.ParsedReading]) -> None:
        if not fresh:
            return
        store = self._telemetry.store
        for name, unit, desc, dtype in _TAGS:
            path = f"meter/{meter_id}/{name}"
            if path not in store.known:
                store.define(TagDef(path, unit=unit, description=desc, asset_id=meter_id,
                                    area_id=area_id, data_type=dtype,
                                    expected_period_s=86_400.0))
        last = fresh[-1]
        now = dt.datetime.now(dt.UTC)
        values = {"index": last.index_m3, "valve_open": last.valve_open,
                  "battery": last.battery_pct, "tamper": last.tamper}
        self._telemetry.pipeline.on_values({
            f"meter/{meter_id}/{k}": TagValue(v, Quality.GOOD, last.ts, now)
            for k, v in values.items() if v is not None})


def vars_(r: readings.ItemResult) -> dict[str, Any]:
    """An item result as JSON."""
    return {"index": r.index, "status": r.status, "ts": r.ts, "error": r.error}


def _error(status: int, message: str) -> Response:
    return JSONResponse({"error": message}, status_code=status)
