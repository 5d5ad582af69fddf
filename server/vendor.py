"""Third-party browser assets (GraphiQL, React…) served from `frontend/node_modules`.

They are installed from the npm registry at setup time (`make install` runs `npm ci` in
`frontend/`) and served under `/vendor/<name>`; only the files named in `frontend/vendor.json`
are served. Pages never load anything from a CDN: the control room may have no internet.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from starlette.requests import Request
from starlette.responses import FileResponse, PlainTextResponse, Response

import frontend

__all__ = ["FRONTEND_DIR", "VendorAssets"]

FRONTEND_DIR = Path(frontend.__file__).resolve().parent
_UNPKG = re.compile(r"https://unpkg\.com/((?:@[^/@]+/)?[^/@]+)@[^/]+/([^\"'\s]+)")


class VendorAssets:
    """The whitelist of served assets and the rewriting of CDN links to them."""

    def __init__(self, root: Path = FRONTEND_DIR) -> None:
        manifest = json.loads((root / "vendor.json").read_text())
        self.modules = root / "node_modules"
        self.files = {k: v for k, v in manifest.items() if not k.startswith("_")}
        self._by_path = {v: k for k, v in self.files.items()}

    @property
    def installed(self) -> bool:
        """Whether `npm ci` has put the files in place."""
        return all((self.modules / p).is_file() for p in self.files.values())

    def localize(self, html: str) -> str:
        """Point every unpkg link of `html` at `/vendor/…`; refuse any it cannot serve."""

        def swap(m: re.Match[str]) -> str:
            name = self._by_path.get(f"{m[1]}/{m[2]}")
            if name is None:
                raise LookupError(f"no local copy of {m[0]}: add it to frontend/vendor.json")
            return f"/vendor/{name}"

        return _UNPKG.sub(swap, html)

    async def endpoint(self, request: Request) -> Response:
        """GET /vendor/{name}."""
        rel = self.files.get(request.path_params["name"])
        if rel is None or not (self.modules / rel).is_file():
            return PlainTextResponse("not found (run `make install` with npm available)", 404)
        return FileResponse(self.modules / rel, headers={"cache-control": "public, max-age=86400"})
