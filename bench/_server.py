"""The server under benchmark: the real app, plus an anchor route that returns the same
100-pipe page as plain JSON from three SQL queries (no GraphQL), to show GraphQL's cost."""

from __future__ import annotations

import sys
from pathlib import Path

import uvicorn
from sqlalchemy import select
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from erp.adapters import orm
from server.app import create_app
from server.settings import Settings


def main() -> None:
    """`python bench/_server.py VAR_DIR PORT`."""
    var_dir, port = Path(sys.argv[1]), int(sys.argv[2])
    settings = Settings(var_dir=var_dir, port=port, log_level="WARNING")
    app = create_app(settings)
    db = app.state.services.db

    async def raw_pipes(request: Request) -> Response:
        first = int(request.query_params.get("first", "100"))
        async with db() as s:
            pipes = (await s.execute(select(orm.Pipe).order_by(orm.Pipe.id).limit(first))
                     ).scalars().all()
            ids = {p.from_node_id for p in pipes} | {p.to_node_id for p in pipes}
            nodes = {n.id: n for n in (await s.execute(
                select(orm.NetworkNode).where(orm.NetworkNode.id.in_(ids)))).scalars()}
            levels = {lv.code: lv for lv in (await s.execute(select(orm.PressureLevel))).scalars()}

        def node(nid: str) -> dict[str, object]:
            n = nodes[nid]
            return {"id": n.id, "lat": n.lat, "lon": n.lon,
                    "pressureLevel": {"code": levels[n.pressure_level].code}}

        return JSONResponse({"pipes": [
            {"id": p.id, "lengthM": p.length_m, "innerDiameterM": p.inner_diameter_m,
             "material": p.material, "pressureLevel": {"code": levels[p.pressure_level].code},
             "fromNode": node(p.from_node_id), "toNode": node(p.to_node_id)} for p in pipes]})

    app.router.routes.insert(0, Route("/bench/raw-pipes", raw_pipes))
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning", ws="websockets-sansio")


if __name__ == "__main__":
    main()
