"""Shared by the browser tests: Chromium's flags and a recorder of what a page did."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from playwright.async_api import BrowserContext, ConsoleMessage, Page, Request, WebSocket

__all__ = ["ARTIFACTS", "CHROMIUM_ARGS", "Browsing"]

CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
# Screenshots the tests leave for people to look at (not in git; CI may keep the folder).
ARTIFACTS = Path(__file__).resolve().parents[2] / "artifacts"


class Browsing:
    """What the page did: console errors, uncaught exceptions, every URL it reached and every
    WebSocket frame it sent."""

    def __init__(self, context: BrowserContext, page: Page) -> None:
        self.errors: list[str] = []
        self.urls: list[str] = []
        self.sent: list[str] = []
        page.on("console", self._console)
        page.on("pageerror", lambda exc: self.errors.append(f"pageerror: {exc}"))
        context.on("request", self._request)
        page.on("websocket", self._websocket)

    def _console(self, msg: ConsoleMessage) -> None:
        if msg.type == "error":
            self.errors.append(f"console.error: {msg.text} at {msg.location}")

    def _request(self, request: Request) -> None:
        self.urls.append(request.url)

    def _websocket(self, ws: WebSocket) -> None:
        self.urls.append(ws.url)
        ws.on("framesent", lambda payload: self.sent.append(
            payload if isinstance(payload, str) else payload.decode(errors="replace")))

    def off_host(self) -> list[str]:
        """URLs that went anywhere but 127.0.0.1 (inline data: and blob: URLs stay local)."""
        return [u for u in self.urls if urlsplit(u).scheme not in ("data", "blob")
                and urlsplit(u).hostname != "127.0.0.1"]

    def connection_init(self) -> dict[str, Any] | None:
        """The payload of the graphql-transport-ws `connection_init` message, if one was sent."""
        for frame in self.sent:
            msg = json.loads(frame)
            if msg.get("type") == "connection_init":
                return dict(msg.get("payload") or {})
        return None
