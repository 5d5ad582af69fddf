"""Webhook signatures: HMAC-SHA256 over "<timestamp>.<body>", checked with a time tolerance.

The timestamp is inside the signed text so that a captured request cannot be replayed later
with a fresh timestamp header; receivers reject timestamps older (or newer) than the tolerance.
Headers: ``X-Gasops-Timestamp: <unix seconds>`` and ``X-Gasops-Signature: sha256=<hex>``.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
from typing import Final

__all__ = ["SIGNATURE_HEADER", "TIMESTAMP_HEADER", "sign", "signed_headers", "verify_signature"]

TIMESTAMP_HEADER: Final = "X-Gasops-Timestamp"
SIGNATURE_HEADER: Final = "X-Gasops-Signature"


def sign(secret: str, timestamp: str, body: bytes) -> str:
    """The signature header value: ``sha256=`` + hex HMAC-SHA256 of ``timestamp.body``."""
    mac = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256)
    return "sha256=" + mac.hexdigest()


def signed_headers(secret: str, body: bytes, now: dt.datetime) -> dict[str, str]:
    """The JSON content type, timestamp and signature headers for `body` sent at `now`."""
    ts = str(int(now.timestamp()))
    return {"content-type": "application/json", TIMESTAMP_HEADER: ts,
            SIGNATURE_HEADER: sign(secret, ts, body)}


def verify_signature(secret: str, timestamp: str, body: bytes, header: str, now: dt.datetime,
                     tolerance_s: float = 300) -> bool:
    """Whether `header` signs `body` at `timestamp` with `secret`, and `timestamp` is within
    `tolerance_s` of `now` (for receivers of our webhooks)."""
    try:
        ts = int(timestamp)
    except (TypeError, ValueError):
        return False
    if abs(now.timestamp() - ts) > tolerance_s:
        return False
    return hmac.compare_digest(sign(secret, timestamp, body).encode(), (header or "").encode())
