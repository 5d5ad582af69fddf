"""Downloads of the gas balance (ANA-1, ANA-3, ANA-4) as CSV and XLSX.

    GET /export/gas-balance.csv?period=2027-01-15&granularity=month[&area=D03]
    GET /export/gas-balance.xlsx?period=2027-01-15&granularity=day

`Authorization: Bearer <access or API token>`, the same token and permission (`balance.read`)
as the `gasBalance` query, and the same figures for the caller's areas: 401 without a valid
token, 403 (audited) without the permission, 400 on a bad period, granularity or zone, 503
while the historian cannot be reached.

CSV: one row per district, then per branch; volumes (m³ at standard conditions) and money
(roubles) are the exact decimal strings of the balance ("1250400.500", "9518423.73"), the
imbalance share a decimal fraction with six places. XLSX: sheets Districts, Branches and Period,
numeric cells formatted `#,##0.000` (m³), `#,##0.00` (roubles) and `0.00%` (shares).
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import re
from collections.abc import Callable, Sequence
from decimal import Decimal
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from erp.domain.access import Principal, allowed
from erp.domain.balance import BalanceError
from erp.services import accounts, audit
from erp.services.gas_balance import GasBalanceReport, PartBalance, gas_balance
from realtime.historian.base import HistorianUnavailable
from schema.balance import BALANCE_PERMISSION
from schema.context import Services

__all__ = ["COLUMNS", "export_routes", "report_csv", "report_xlsx"]

_SHARE_STEP = Decimal("0.000001")
_VOLUMES = ("inflow", "metered", "unmetered", "leakage", "own_needs", "imbalance")
COLUMNS: tuple[str, ...] = (
    "level", "id", "name", "area_id", "stations", "period", "granularity", "start", "end",
    "complete", *(f"{v}_m3" for v in _VOLUMES), "imbalance_share",
    *(f"{v}_rub" for v in _VOLUMES), "price_per_m3", "inflow_coverage", "service_points",
    "estimated_service_points", "abnormal", "abnormal_reason")
_XLSX_FORMATS = {**{f"{v}_m3": "#,##0.000" for v in _VOLUMES},
                 **{f"{v}_rub": "#,##0.00" for v in _VOLUMES},
                 "price_per_m3": "#,##0.00##", "imbalance_share": "0.00%",
                 "inflow_coverage": "0%", "service_points": "0",
                 "estimated_service_points": "0"}


def _share(p: PartBalance) -> Decimal:
    b = p.balance
    return (b.imbalance_m3 / b.inflow_m3).quantize(_SHARE_STEP) if b.inflow_m3 else Decimal(0)


def _row(r: GasBalanceReport, p: PartBalance) -> dict[str, Any]:
    """One part as typed values: Decimal volumes, money and shares, str, int and bool."""
    b, period = p.balance, r.period
    return {
        "level": p.kind, "id": p.id, "name": p.name, "area_id": p.area_id or "",
        "stations": " ".join(p.stations), "period": period.label,
        "granularity": period.granularity, "start": period.start.isoformat(),
        "end": period.end.isoformat(), "complete": period.complete,
        **{f"{v}_m3": getattr(b, f"{v}_m3") for v in _VOLUMES}, "imbalance_share": _share(p),
        **{f"{v}_rub": b.money[v] for v in _VOLUMES}, "price_per_m3": b.price_per_m3,
        "inflow_coverage": Decimal(repr(p.inflow_coverage)).quantize(Decimal("0.0001")),
        "service_points": p.service_points, "estimated_service_points": p.estimated_points,
        "abnormal": p.abnormal, "abnormal_reason": p.reason or ""}


def _text(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    return str(v)  # a Decimal's str is its exact value


def report_csv(r: GasBalanceReport) -> str:
    """The report as CSV: a header row, the districts, then the branches."""
    out = io.StringIO()
    w = csv.writer(out, lineterminator="\r\n")
    w.writerow(COLUMNS)
    for p in (*r.districts, *r.branches):
        row = _row(r, p)
        w.writerow([_text(row[c]) for c in COLUMNS])
    return out.getvalue()


def report_xlsx(r: GasBalanceReport) -> bytes:
    """The report as an XLSX workbook (sheets Districts, Branches, Period)."""
    from openpyxl import Workbook  # imported here: only this download needs it
    from openpyxl.styles import Font

    wb = Workbook()
    bold = Font(bold=True)
    for k, (title, parts) in enumerate((("Districts", r.districts), ("Branches", r.branches))):
        ws = wb.active if k == 0 else wb.create_sheet()
        ws.title = title
        ws.append(list(COLUMNS))
        for cell in ws[1]:
            cell.font = bold
        for p in parts:
            row = _row(r, p)
            ws.append([row[c] for c in COLUMNS])
        for j, c in enumerate(COLUMNS, start=1):
            fmt = _XLSX_FORMATS.get(c)
            if fmt is not None:
                for (cell,) in ws.iter_rows(min_row=2, min_col=j, max_col=j):
                    cell.number_format = fmt
            ws.column_dimensions[ws.cell(1, j).column_letter].width = max(10, len(c) + 2)
        ws.freeze_panes = "C2"
    info = wb.create_sheet("Period")
    period = r.period
    for key, value in (("period", period.label), ("granularity", period.granularity),
                       ("time zone", period.zone), ("start (UTC)", period.start.isoformat()),
                       ("end (UTC, exclusive)", period.end.isoformat()),
                       ("complete", period.complete), ("price per m³ (RUB)", r.price_per_m3),
                       ("volumes", "m³ at standard conditions (20 °C, 101.325 kPa)"),
                       ("service points in no branch", r.unassigned_service_points)):
        info.append([key, value])
        info.cell(info.max_row, 1).font = bold
    info.column_dimensions["A"].width = 30
    info.column_dimensions["B"].width = 48
    buf = io.BytesIO()
    wb.save(buf)
    return buf.getvalue()


def _error(status: int, message: str, **headers: str) -> Response:
    return JSONResponse({"error": message}, status_code=status, headers=headers or None)


def _bearer(request: Request) -> str | None:
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    return token.strip() if scheme.lower() == "bearer" and token.strip() else None


async def _principal(services: Services, request: Request) -> Principal | Response:
    """The authorised caller, or the refusal to answer with (the 403 audited)."""
    token = _bearer(request)
    if token is None:
        return _error(401, "send Authorization: Bearer <token>", **{"www-authenticate": "Bearer"})
    async with services.db() as s:
        who = await accounts.authenticate_bearer(s, token, services.signing_key)
    if who is None:
        return _error(401, "invalid or expired token", **{"www-authenticate": "Bearer"})
    if not allowed(BALANCE_PERMISSION, who.role):
        async with services.db.begin() as s:
            await audit.record(s, audit.Actor(who.username, who.role,
                                              request.client.host if request.client else None),
                               audit.AuditEntry("export.gas_balance", [],
                                                {"permission": BALANCE_PERMISSION},
                                                outcome="forbidden"))
        return _error(403, f"Forbidden: role {who.role!r} lacks {BALANCE_PERMISSION!r}")
    return who


def _endpoint(services: Services, suffix: str, media_type: str,
              render: Callable[[GasBalanceReport], str | bytes]) -> Callable[..., Any]:
    async def endpoint(request: Request) -> Response:
        who = await _principal(services, request)
        if isinstance(who, Response):
            return who
        q = request.query_params
        try:
            period = dt.date.fromisoformat(q.get("period", ""))
        except ValueError:
            return _error(400, "period: required, a date YYYY-MM-DD")
        area = q.get("area") or None
        try:
            async with services.db() as s:
                report = await gas_balance(s, services.historian, period,
                                           q.get("granularity", "month"), areas=who.areas,
                                           area=area)
        except BalanceError as exc:
            return _error(400, str(exc))
        except HistorianUnavailable:
            return _error(503, "the historian cannot be reached: try again later",
                          **{"retry-after": "60"})
        tail = "-" + re.sub(r"[^A-Za-z0-9_.-]", "_", area) if area else ""
        name = f"gas-balance-{report.period.label}{tail}.{suffix}"
        return Response(render(report), media_type=media_type, headers={
            "content-disposition": f'attachment; filename="{name}"',
            "cache-control": "no-store"})
    return endpoint


def export_routes(services: Services) -> Sequence[Route]:
    """The export routes, to mount in the app's route list."""
    return [
        Route("/export/gas-balance.csv", _endpoint(services, "csv", "text/csv; charset=utf-8",
                                                   report_csv)),
        Route("/export/gas-balance.xlsx", _endpoint(
            services, "xlsx",
            "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet", report_xlsx)),
    ]
