"""The Stripe plug-in: auth, error bodies, rate limits, idempotency, webhooks, routes.

Auth is ``Authorization: Bearer <key>`` or Basic with the key as user (providers.md 1.1).
Live keys get 100 requests/s, test keys 25/s (1.6). A POST with an ``Idempotency-Key``
replays the first answer (``Idempotent-Replayed: true``); the same key with other
parameters or another endpoint is a 400 ``idempotency_error`` (1.7). Webhooks carry
``Stripe-Signature: t=<unix>,v1=<hex HMAC-SHA256(whsec, "{t}.{body}")>`` (1.8).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import itertools
import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from sandbox.core import Account, Limits, SandboxState
from sandbox.stripe import payments, resources
from sandbox.stripe.forms import StripeError, decode
from sandbox.stripe.store import API_VERSION, IDEMPOTENCY_RETENTION_S, IdempotentResult, StripeStore, store_of

LIVE_LIMITS = Limits(per_second=100)
TEST_LIMITS = Limits(per_second=25)
_NO_KEY = (
    "You did not provide an API key. You need to provide your API key in the Authorization header, "
    "using Bearer auth (e.g. 'Authorization: Bearer YOUR_SECRET_KEY'). See https://stripe.com/docs/api#"
    "authentication for details, or we can help at https://support.stripe.com/."
)
_RATE_LIMITED = (
    "Request rate limit exceeded. Learn more about rate limits here https://stripe.com/docs/rate-limits."
)
_NOT_STORED = frozenset({400, 401, 409, 429})  # validation failures and conflicts are not saved
_request_ids = itertools.count(1)


@dataclass
class Call:
    """What a Stripe handler sees."""

    store: StripeStore
    params: dict[str, Any]
    now: int
    ids: dict[str, str]
    request_ref: dict[str, Any]
    account: Account
    state: SandboxState


Handler = Callable[[Call], tuple[int, dict[str, Any]]]


def _api_key(request: web.Request) -> str | None:
    header = request.headers.get("Authorization", "")
    if header.startswith("Bearer "):
        return header[7:].strip() or None
    if header.startswith("Basic "):
        try:
            user = base64.b64decode(header[6:]).decode().partition(":")[0]
        except (binascii.Error, UnicodeDecodeError):
            return None
        return user or None
    return None


def _masked(key: str) -> str:
    prefix = key[:8] if key.startswith(("sk_", "rk_")) else ""
    return prefix + "*" * max(len(key) - len(prefix) - 4, 0) + key[-4:]


def _json(status: int, payload: dict[str, Any], **headers: str) -> web.Response:
    return web.Response(
        status=status,
        body=json.dumps(payload).encode(),
        content_type="application/json",
        headers={"Request-Id": f"req_{next(_request_ids):014d}", "Stripe-Version": API_VERSION, **headers},
    )


def error_body(exc: StripeError) -> web.Response:
    return _json(exc.status, {"error": exc.body})


class Plugin:
    """Stripe under ``/stripe`` (so ``STRIPE_API_BASE`` = ``http://host:port/stripe``)."""

    name = "stripe"

    def __init__(self, state: SandboxState) -> None:
        self.state = state

    # Interface of sandbox.core.ProviderPlugin ------------------------------------------

    def add_routes(self, app: web.Application, prefix: str) -> None:
        for method, path, handler in (*resources.ROUTES, *payments.ROUTES):
            app.router.add_route(method, prefix + path, self._endpoint(handler))

    def identify(self, request: web.Request) -> Account | None:
        key = _api_key(request)
        return None if key is None else self.state.account_for_key("stripe", key)

    def is_public(self, request: web.Request) -> bool:
        return False

    def unauthorized(self, request: web.Request) -> web.Response:
        key = _api_key(request)
        message = _NO_KEY if key is None else f"Invalid API Key provided: {_masked(key)}"
        return _json(
            401,
            {"error": {"message": message, "type": "invalid_request_error"}},
            **{"WWW-Authenticate": 'Basic realm="Stripe"'},
        )

    def rate_limited(self, request: web.Request) -> web.Response:
        return error_body(StripeError(429, message=_RATE_LIMITED, code="rate_limit"))

    def error_response(self, request: web.Request, status: int) -> web.Response:
        if status == 401:
            return self.unauthorized(request)
        if status == 429:
            return self.rate_limited(request)
        if status in (404, 405):
            message = (
                f"Unrecognized request URL ({request.method}: {request.path[len('/stripe') :]}). "
                "Please see https://stripe.com/docs or we can help at https://support.stripe.com/."
            )
            return error_body(StripeError(404, message=message))
        if status < 500:
            return error_body(StripeError(status, message="The request could not be processed."))
        return error_body(StripeError(status, message="An unknown error occurred", type_="api_error"))

    def limits(self, account: Account) -> Limits:
        return LIVE_LIMITS if (account.api_key or "").startswith(("sk_live_", "rk_live_")) else TEST_LIMITS

    def idempotency_key(self, request: web.Request, body: bytes) -> str | None:
        return request.headers.get("Idempotency-Key")

    def register(self, account: Account) -> None:
        store_of(account)

    def reset(self) -> None:
        """All Stripe state lives in the accounts, which the core empties."""

    async def build_webhook(self, account: Account, spec: dict[str, Any]) -> tuple[dict[str, str], bytes]:
        """A Stripe event (an object, or the id of one this account recorded), signed."""
        event = spec.get("event")
        if isinstance(event, str):
            event = store_of(account).events.objects.get(event)
        if not isinstance(event, dict):
            raise ValueError("event must be a Stripe event object or the id of a recorded event")
        if not account.webhook_secrets:
            raise ValueError(f"stripe account {account.name!r} has no webhook secret")
        body = json.dumps(event, indent=2).encode()
        timestamp = int(spec.get("timestamp") or self.state.clock())
        return {
            "Content-Type": "application/json; charset=utf-8",
            "User-Agent": "Stripe/1.0 (+https://stripe.com/docs/webhooks)",
            "Stripe-Signature": sign(account.webhook_secrets[-1], body, timestamp),
        }, body

    # HTTP plumbing ----------------------------------------------------------------------

    def _endpoint(self, handler: Handler) -> Callable[[web.Request], Any]:
        async def endpoint(request: web.Request) -> web.StreamResponse:
            try:
                return self._answer(request, handler)
            except StripeError as exc:
                return error_body(exc)

        return endpoint

    def _answer(self, request: web.Request, handler: Handler) -> web.Response:
        account: Account = request["account"]
        store = store_of(account)
        raw = request["body"].decode() if request.method == "POST" else request.query_string
        params = decode(raw)
        key = request.headers.get("Idempotency-Key") if request.method == "POST" else None
        if key is not None:
            replay = self._replay(store, key, request, params)
            if replay is not None:
                return replay
        request_id = f"req_{next(_request_ids):014d}"
        call = Call(
            store,
            params,
            int(self.state.clock()),
            dict(request.match_info),
            {"id": request_id, "idempotency_key": key},
            account,
            self.state,
        )
        try:
            status, payload = handler(call)
        except StripeError as exc:
            status, payload = exc.status, {"error": exc.body}
        body = json.dumps(payload).encode()
        if key is not None and status not in _NOT_STORED:
            store.idempotency[key] = IdempotentResult(
                request.method, request.path, params, status, body, self.state.clock()
            )
        return web.Response(
            status=status,
            body=body,
            content_type="application/json",
            headers={"Request-Id": request_id, "Stripe-Version": API_VERSION},
        )

    def _replay(
        self, store: StripeStore, key: str, request: web.Request, params: dict[str, Any]
    ) -> web.Response | None:
        """The stored answer for ``key``, or None to run the request; raises on misuse."""
        if len(key) > 255:
            raise StripeError(
                400, message="Idempotency-Key must be at most 255 characters long.", param="Idempotency-Key"
            )
        first = store.idempotency.get(key)
        if first is None or first.at < self.state.clock() - IDEMPOTENCY_RETENTION_S:
            return None
        path = request.path[len("/stripe") :]
        if first.path != request.path:
            raise StripeError(
                400,
                type_="idempotency_error",
                message=(
                    "Keys for idempotent requests can only be used for the same endpoint they were first "
                    f"used for ('{first.path[len('/stripe') :]}' vs '{path}'). Try using a key other than "
                    f"'{key}' if you meant to execute a different request."
                ),
            )
        if first.params != params:
            raise StripeError(
                400,
                type_="idempotency_error",
                message=(
                    "Keys for idempotent requests can only be used with the same parameters they were "
                    f"first used with. Try using a key other than '{key}' if you meant to execute a "
                    "different request."
                ),
            )
        return web.Response(
            status=first.status,
            body=first.body,
            content_type="application/json",
            headers={
                "Idempotent-Replayed": "true",
                "Stripe-Version": API_VERSION,
                "Request-Id": f"req_{next(_request_ids):014d}",
            },
        )


def sign(secret: str, body: bytes, timestamp: int) -> str:
    """The Stripe-Signature header: HMAC-SHA256 keyed with the whole whsec_ string."""
    signed = f"{timestamp}.".encode() + body
    digest = hmac.new(secret.encode(), signed, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={digest}"
