"""One HTTP POST with the failure classification every HTTP-based channel shares.

2xx is delivered. 4xx means the request itself is wrong (bad token, bad number, unknown
endpoint) and sending it again will not help: permanent — except 408, 425 and 429, which ask us
to come back later. 5xx, timeouts and connection errors are temporary. Redirects are not
followed: a webhook that moved is a configuration error to fix, not to chase.

A client per request: notification volumes are small, and a client that lives no longer than
its request leaves no connection for anyone to close.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Final

import httpx

from realtime.notify.model import DeliveryFailed

__all__ = ["post"]

_RETRYABLE_4XX: Final = frozenset({408, 425, 429})


async def post(url: str, body: bytes, headers: Mapping[str, str], timeout_s: float,
               what: str) -> httpx.Response:
    """POST `body` to `url`; return the 2xx response or raise `DeliveryFailed`."""
    try:
        async with httpx.AsyncClient(timeout=timeout_s, follow_redirects=False) as client:
            response = await client.post(url, content=body, headers=dict(headers))
    except httpx.TimeoutException as exc:
        raise DeliveryFailed(f"{what}: timed out after {timeout_s:g} s ({type(exc).__name__})",
                             permanent=False) from exc
    except httpx.HTTPError as exc:
        raise DeliveryFailed(f"{what}: {type(exc).__name__}: {exc}", permanent=False) from exc
    status = response.status_code
    if 200 <= status < 300:
        return response
    detail = f"{what}: HTTP {status} {response.reason_phrase}: {response.text[:200]}".rstrip(": ")
    permanent = 300 <= status < 500 and status not in _RETRYABLE_4XX
    raise DeliveryFailed(detail, permanent=permanent)
