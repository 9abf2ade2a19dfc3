"""Square in the sandbox, under ``/square`` (CONTRACT section 7; providers.md section 2).

Routes (all JSON, ``Authorization: Bearer <token>``, ``Square-Version`` checked and echoed):
customers (create, get, sparse update with ``version``, delete, list, search), orders
(create, get, update, batch-retrieve, search), inventory (changes/batch-create,
counts/batch-retrieve), locations, merchants, and the OAuth endpoints ``/oauth2/token`` and
``/oauth2/revoke``. A token is an account's registered API access token or one the sandbox
issued; an unknown one gets 401 ``UNAUTHORIZED``, an expired or revoked one
``ACCESS_TOKEN_EXPIRED`` / ``ACCESS_TOKEN_REVOKED``.

Rate limit: Square publishes none, so the sandbox picks one: **10 requests per second per
account** by default, set by ``SANDBOX_SQUARE_REQUESTS_PER_SECOND`` (``0`` turns it off);
past it, 429 ``RATE_LIMIT_ERROR`` / ``RATE_LIMITED`` without ``Retry-After`` (Square's
headers are unconfirmed).

Webhooks: the envelope ``{merchant_id, type, event_id, created_at, data}`` signed in
``x-square-hmacsha256-signature`` = base64(HMAC-SHA256(signature key, notification URL +
body)) with the app-wide ``SQUARE_WEBHOOK_SIGNATURE_KEY``.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import uuid
from typing import TYPE_CHECKING, Any

from aiohttp import web

from sandbox.core import Account, Limits
from sandbox.square import customers, inventory, oauth, orders
from sandbox.square.common import error_body, rfc3339
from sandbox.square.store import new_store

if TYPE_CHECKING:
    from sandbox.core import SandboxState

DEFAULT_PER_SECOND = 10.0
_FAULT_CODES = {
    400: ("INVALID_REQUEST_ERROR", "BAD_REQUEST"),
    401: ("AUTHENTICATION_ERROR", "UNAUTHORIZED"),
    403: ("AUTHENTICATION_ERROR", "FORBIDDEN"),
    404: ("INVALID_REQUEST_ERROR", "NOT_FOUND"),
    405: ("INVALID_REQUEST_ERROR", "METHOD_NOT_ALLOWED"),
    408: ("API_ERROR", "REQUEST_TIMEOUT"),
    409: ("INVALID_REQUEST_ERROR", "CONFLICT"),
    429: ("RATE_LIMIT_ERROR", "RATE_LIMITED"),
    500: ("API_ERROR", "INTERNAL_SERVER_ERROR"),
    501: ("API_ERROR", "NOT_IMPLEMENTED"),
    502: ("API_ERROR", "BAD_GATEWAY"),
    503: ("API_ERROR", "SERVICE_UNAVAILABLE"),
    504: ("API_ERROR", "GATEWAY_TIMEOUT"),
}


def _per_second_from_env() -> float | None:
    raw = os.environ.get("SANDBOX_SQUARE_REQUESTS_PER_SECOND")
    if raw is None or raw == "":
        return DEFAULT_PER_SECOND
    value = float(raw)
    return value if value > 0 else None


def _bearer(request: web.Request) -> str | None:
    header = request.headers.get("Authorization", "")
    if header[:7].lower() != "bearer ":
        return None
    return header[7:].strip() or None


def signature(key: str, url: str, body: bytes) -> str:
    """Square's ``x-square-hmacsha256-signature`` for ``body`` delivered to ``url``."""
    digest = hmac.new(key.encode(), url.encode() + body, hashlib.sha256).digest()
    return base64.b64encode(digest).decode()


class Plugin:
    """The Square plug-in (``Plugin(state)``, see sandbox/core.py)."""

    name = "square"

    def __init__(self, state: SandboxState, *, per_second: float | None = None) -> None:
        self.state = state
        self.per_second = per_second if per_second is not None else _per_second_from_env()
        self._limits = Limits(per_second=self.per_second)

    def add_routes(self, app: web.Application, prefix: str) -> None:
        oauth.add_routes(app, prefix, self.state)
        customers.add_routes(app, prefix)
        orders.add_routes(app, prefix)
        inventory.add_routes(app, prefix)

    def identify(self, request: web.Request) -> Account | None:
        token = _bearer(request)
        if token is None:
            return None
        account = self.state.account_for_key("square", token) or self.state.account_for_token("square", token)
        if account is not None and "store" not in account.data:
            self.register(account)
        return account

    def is_public(self, request: web.Request) -> bool:
        return request.path in oauth.PATHS

    def unauthorized(self, request: web.Request) -> web.Response:
        token = _bearer(request)
        if token is None:
            return error_body(
                401,
                "AUTHENTICATION_ERROR",
                "UNAUTHORIZED",
                "Your request did not include an `Authorization` http header with an access token.",
            )
        record = self.state.token("square", token)
        if record is not None and record.revoked:
            return error_body(
                401, "AUTHENTICATION_ERROR", "ACCESS_TOKEN_REVOKED", "The access token has been revoked."
            )
        if record is not None and record.kind == "access":
            return error_body(
                401, "AUTHENTICATION_ERROR", "ACCESS_TOKEN_EXPIRED", "The access token has expired."
            )
        return error_body(
            401, "AUTHENTICATION_ERROR", "UNAUTHORIZED", "This request could not be authorized."
        )

    def rate_limited(self, request: web.Request) -> web.Response:
        return error_body(429, "RATE_LIMIT_ERROR", "RATE_LIMITED", "Too many requests: rate limit exceeded.")

    def error_response(self, request: web.Request, status: int) -> web.Response:
        category, code = _FAULT_CODES.get(status, ("API_ERROR", "INTERNAL_SERVER_ERROR"))
        return error_body(status, category, code, "Injected by the sandbox." if status >= 500 else None)

    def limits(self, account: Account) -> Limits:
        return self._limits

    def idempotency_key(self, request: web.Request, body: bytes) -> str | None:
        if b'"idempotency_key"' not in body:
            return None
        try:
            key = json.loads(body).get("idempotency_key")
        except (ValueError, AttributeError):
            return None
        return key if isinstance(key, str) else None

    def register(self, account: Account) -> None:
        if "store" not in account.data:
            merchant_id = (account.oauth or {}).get("merchant_id")
            store = new_store(merchant_id, self.state.clock, account.name)
            account.data["store"] = store
            if account.oauth is not None:
                account.oauth.setdefault("merchant_id", store.merchant_id)  # shown by GET /_sandbox/accounts

    def reset(self) -> None:
        """Accounts (and their stores) live in the state, which core empties."""

    async def build_webhook(self, account: Account, spec: dict[str, Any]) -> tuple[dict[str, str], bytes]:
        """Square's envelope around ``spec["event"]``, signed over notification URL + body."""
        key = self.state.app_keys.get("square_webhook_signature_key")
        if not key:
            raise ValueError("the sandbox was started without a Square webhook signature key")
        event = spec.get("event")
        if not isinstance(event, dict) or not isinstance(event.get("type"), str):
            raise ValueError("event must be an object with a string type")
        self.register(account)
        now = rfc3339(self.state.clock())
        envelope = {
            "merchant_id": event.get("merchant_id", account.data["store"].merchant_id),
            "type": event["type"],
            "event_id": event.get("event_id", str(uuid.uuid4())),
            "created_at": event.get("created_at", now),
            "data": event.get("data", {}),
        }
        body = json.dumps(envelope, separators=(",", ":")).encode()
        url = spec.get("notification_url") or spec["url"]
        headers = {
            "Content-Type": "application/json",
            "User-Agent": "Square Connect v2",
            "x-square-hmacsha256-signature": signature(key, url, body),
            "square-initial-delivery-timestamp": now,
            "square-retry-number": "0",
            "square-environment": "Sandbox",
        }
        return headers, body
