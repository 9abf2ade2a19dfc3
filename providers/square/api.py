"""Square's HTTP surface: base URL, pinned version, and every call through the shared helper."""

from __future__ import annotations

import re
from typing import Any

from providers.base import VenueAuth
from providers.http import ProviderHttp, ProviderSpec, spec_for
from providers.square.errors import error_from_square, error_hook, first_error
from service.errors import DataError, ProviderError

SQUARE_VERSION = "2026-09-16"  # the one pinned API version (squareup 46 SDK default)
SPEC: ProviderSpec = spec_for(
    "square", error_hook=error_hook, default_retry_after_s=1.0,
    headers={"Square-Version": SQUARE_VERSION, "Accept": "application/json"},
)


_ID = re.compile(r"^[A-Za-z0-9_-]{1,192}$")


def path_id(value: str) -> str:
    """A Square object id checked before it goes into a URL path (no '/', '..' or '?')."""
    if not _ID.match(value):
        raise DataError(f"square id {value[:40]!r} is not a Square object id")
    return value


class SquareApi:
    """Calls under ``<SQUARE_API_BASE>/v2``; returns JSON objects, raises IntegrationError."""

    def __init__(self, http: ProviderHttp, *, base_url: str) -> None:
        self.http = http
        self.base_url = base_url.rstrip("/")

    async def call(
        self, auth: VenueAuth, method: str, path: str, *, operation: str,
        body: dict[str, Any] | None = None, params: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        """One call; the reply's JSON object (an ``errors`` list in a 2xx raises too)."""
        reply = await self.http.request(
            SPEC, auth, method, f"{self.base_url}/v2{path}", operation=operation,
            json_body=body, params=params,
        )
        payload = reply.json()
        if payload is None:
            return {}
        if not isinstance(payload, dict):
            raise reply.garbage(f"expected a JSON object, got {type(payload).__name__}")
        error = first_error(payload)
        if error is not None:
            raise error_from_square(error, status=reply.status, operation=operation)
        return payload


def items_of(payload: dict[str, Any], key: str, *, operation: str) -> list[dict[str, Any]]:
    """``payload[key]`` as a list of objects (absent means empty); a wrong shape is ProviderError."""
    value = payload.get(key, [])
    if not isinstance(value, list) or not all(isinstance(v, dict) for v in value):
        raise ProviderError(f"square {operation}: {key!r} is not a list of objects", retryable=True)
    return value


def object_of(payload: dict[str, Any], key: str, *, operation: str) -> dict[str, Any]:
    """``payload[key]`` as an object with an ``id``; anything else is ProviderError."""
    value = payload.get(key)
    if not isinstance(value, dict) or not value.get("id"):
        raise ProviderError(f"square {operation}: response has no {key!r} object", retryable=True)
    return value


def next_cursor(payload: dict[str, Any]) -> str | None:
    """Square's page cursor: present while more results remain."""
    cursor = payload.get("cursor")
    return cursor if isinstance(cursor, str) and cursor else None
