"""The Mailchimp plug-in: auth, problem+json errors, the 10-connection cap, OAuth, webhooks.

Auth (providers.md 4.1): Basic with any user and a ``<key>-<dc>`` API key, or
``Bearer <token>`` for OAuth. OAuth: ``POST /mailchimp/oauth2/token`` takes
``grant_type=authorization_code`` (the code is the one registered in the account's
``oauth.code``; codes are single use); tokens never expire and there is no refresh token,
so SANDBOX_TOKEN_TTL_SECONDS does not apply here. ``GET /mailchimp/oauth2/metadata`` with
``Authorization: OAuth <token>`` answers ``{dc, api_endpoint, login, ...}``, and a bad token
gets 200 ``{"error": "invalid_token"}``. At most 10 calls in flight per account, then 429
without Retry-After (4.4). Webhooks are form-encoded and unsigned (4.6).

Sandbox choice (unconfirmed for the real API): a body property the resource does not
have is a 400 "Invalid Resource" naming it, so a client sending a misspelt field notices.
"""

from __future__ import annotations

import base64
import binascii
import json
import secrets
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qsl, urlencode

from aiohttp import web

from sandbox.core import Account, Limits, SandboxState
from sandbox.mailchimp import audiences, members
from sandbox.mailchimp.audiences import Audience, Ctx
from sandbox.mailchimp.errors import MailchimpError, iso, problem

LIMITS = Limits(concurrency=10)
_PUBLIC = frozenset({"/mailchimp/oauth2/token", "/mailchimp/oauth2/metadata"})
_STATUS_TITLES = {
    400: ("Bad Request", "Your request could not be processed."),
    403: ("Forbidden", "You don't have permission to access this resource."),
    404: ("Resource Not Found", "The requested resource could not be found."),
    405: (
        "Method Not Allowed",
        "The requested method and resource are not compatible. See the Allow header "
        "for this resource's available methods.",
    ),
    500: (
        "Internal Server Error",
        "An unexpected internal error has occurred. Please contact Support for more information.",
    ),
    503: ("Service Unavailable", "This method has been disabled."),
}


def _credentials(request: web.Request) -> tuple[str, str] | None:
    """("key", api key) from Basic auth or ("token", token) from Bearer auth."""
    header = request.headers.get("Authorization", "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() == "bearer" and value.strip():
        return "token", value.strip()
    if scheme.lower() == "basic":
        try:
            key = base64.b64decode(value).decode().partition(":")[2]
        except (binascii.Error, UnicodeDecodeError):
            return None
        return ("key", key) if key else None
    return None


def lists_of(account: Account) -> dict[str, Audience]:
    return account.data.setdefault("mailchimp", {})  # type: ignore[no-any-return]


def data_center(account: Account) -> str:
    """The account's dc: the OAuth server_prefix, else the API key's suffix."""
    prefix = (account.oauth or {}).get("server_prefix")
    if prefix:
        return str(prefix)
    if account.api_key and "-" in account.api_key:
        return account.api_key.rsplit("-", 1)[1]
    return "us1"


class Plugin:
    """Mailchimp under ``/mailchimp`` (so the API base is ``http://host:port/mailchimp``)."""

    name = "mailchimp"

    def __init__(self, state: SandboxState) -> None:
        self.state = state

    def add_routes(self, app: web.Application, prefix: str) -> None:
        app.router.add_post(prefix + "/oauth2/token", self.token)
        app.router.add_get(prefix + "/oauth2/metadata", self.metadata)
        for method, path, handler in (
            ("GET", "/3.0/", _root),
            ("GET", "/3.0/ping", _ping),
            *audiences.ROUTES,
            *members.ROUTES,
        ):
            app.router.add_route(method, prefix + path, self._endpoint(handler))

    def identify(self, request: web.Request) -> Account | None:
        found = _credentials(request)
        if found is None:
            return None
        kind, value = found
        if kind == "key":
            return self.state.account_for_key("mailchimp", value)
        return self.state.account_for_token("mailchimp", value)

    def is_public(self, request: web.Request) -> bool:
        return request.path in _PUBLIC

    def unauthorized(self, request: web.Request) -> web.Response:
        if _credentials(request) is None:
            return problem(MailchimpError(401, "API Key Missing", "Your request did not include an API key."))
        return problem(
            MailchimpError(
                401,
                "API Key Invalid",
                "Your API key may be invalid, or you've attempted to access the wrong datacenter.",
            )
        )

    def rate_limited(self, request: web.Request) -> web.Response:
        return problem(
            MailchimpError(
                429, "Too Many Requests", "You have exceeded the limit of 10 simultaneous connections."
            )
        )

    def error_response(self, request: web.Request, status: int) -> web.Response:
        if status == 401:
            return self.unauthorized(request)
        if status == 429:
            return self.rate_limited(request)
        title, detail = _STATUS_TITLES.get(status, ("Error", "The request could not be processed."))
        return problem(MailchimpError(status, title, detail))

    def limits(self, account: Account) -> Limits:
        return LIMITS

    def idempotency_key(self, request: web.Request, body: bytes) -> str | None:
        return None  # Mailchimp has none (providers.md 4.5)

    def register(self, account: Account) -> None:
        lists_of(account)

    def reset(self) -> None:
        """All Mailchimp state lives in the accounts, which the core empties."""

    async def build_webhook(self, account: Account, spec: dict[str, Any]) -> tuple[dict[str, str], bytes]:
        """A form-encoded, unsigned list webhook from a flat (or nested) form dict."""
        event = spec.get("event")
        if not isinstance(event, dict):
            raise ValueError("event must be an object (the webhook's form fields)")
        fields = dict(_flatten(event))
        fields.setdefault(
            "fired_at", datetime.fromtimestamp(self.state.clock(), UTC).strftime("%Y-%m-%d %H:%M:%S")
        )
        headers = {"Content-Type": "application/x-www-form-urlencoded", "User-Agent": "MailChimp"}
        return headers, urlencode(fields).encode()

    # OAuth ------------------------------------------------------------------------------------

    async def token(self, request: web.Request) -> web.Response:
        """Exchange a registered authorization code for a never-expiring access token."""
        form = dict(parse_qsl(request["body"].decode(), keep_blank_values=True))
        if form.get("grant_type") != "authorization_code":
            return _oauth_error(400, "unsupported_grant_type")
        client_id, client_secret = self.state.clients.get("mailchimp", (None, None))
        if (client_id is not None and form.get("client_id") != client_id) or (
            client_secret is not None and form.get("client_secret") != client_secret
        ):
            return _oauth_error(401, "invalid_client")
        account = self._account_for_code(form.get("code", ""))
        if account is None:
            return _oauth_error(400, "invalid_grant")
        request["account"] = account
        if not account.client_matches(form.get("client_id"), form.get("client_secret")):
            return _oauth_error(401, "invalid_client")  # not the app the code was issued to
        token = self.state.issue_token(account, ttl_s=None)
        return web.json_response({"access_token": token, "expires_in": 0, "scope": None})

    def _account_for_code(self, code: str) -> Account | None:
        for account in self.state.accounts.values():
            oauth = account.oauth or {}
            if account.provider == "mailchimp" and code and oauth.get("code") == code:
                oauth.pop("code")  # single use
                return account
        return None

    async def metadata(self, request: web.Request) -> web.Response:
        scheme, _, token = request.headers.get("Authorization", "").partition(" ")
        account = self.state.account_for_token("mailchimp", token.strip()) if scheme == "OAuth" else None
        if account is None:
            return web.json_response({"error": "invalid_token"})
        request["account"] = account
        dc = data_center(account)
        return web.json_response(
            {
                "dc": dc,
                "role": "owner",
                "accountname": account.name,
                "user_id": abs(hash(account.name)) % 10**8,
                "login": {
                    "email": f"{account.name}@example.com",
                    "avatar": None,
                    "login_id": 1,
                    "login_name": account.name,
                    "login_email": f"{account.name}@example.com",
                },
                "login_url": "https://login.mailchimp.com",
                "api_endpoint": f"{request.scheme}://{request.host}/mailchimp",
            }
        )

    # HTTP plumbing -------------------------------------------------------------------------------

    def _endpoint(self, handler: Callable[[Ctx], tuple[int, Any]]) -> Callable[[web.Request], Any]:
        async def endpoint(request: web.Request) -> web.StreamResponse:
            try:
                return self._answer(request, handler)
            except MailchimpError as exc:
                return problem(exc)

        return endpoint

    def _answer(self, request: web.Request, handler: Callable[[Ctx], tuple[int, Any]]) -> web.Response:
        account: Account = request["account"]
        raw = request["body"]
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            raise MailchimpError(
                400, "JSON Parse Exception", "We encountered an unspecified JSON parsing error."
            ) from None
        ctx = Ctx(
            lists_of(account), body, request.query, dict(request.match_info), self.state.clock(), account.name
        )
        status, payload = handler(ctx)
        if status == 204:
            return web.Response(status=204)
        return web.Response(status=status, body=json.dumps(payload).encode(), content_type="application/json")


def _root(ctx: Ctx) -> tuple[int, Any]:
    return 200, {
        "account_id": secrets.token_hex(12)[:25],
        "account_name": ctx.account_name,
        "role": "owner",
        "member_since": iso(0),
        "pricing_plan_type": "monthly",
        "total_subscribers": sum(len(a.members) for a in ctx.lists.values()),
    }


def _ping(ctx: Ctx) -> tuple[int, Any]:
    return 200, {"health_status": "Everything's Chimpy!"}


def _oauth_error(status: int, error: str) -> web.Response:
    return web.json_response({"error": error, "error_description": error.replace("_", " ")}, status=status)


def _flatten(value: dict[str, Any], prefix: str = "") -> list[tuple[str, str]]:
    """Nested dicts as bracketed form keys: {"data": {"email": x}} -> [("data[email]", x)]."""
    out: list[tuple[str, str]] = []
    for key, item in value.items():
        name = f"{prefix}[{key}]" if prefix else str(key)
        if isinstance(item, dict):
            out.extend(_flatten(item, name))
        else:
            out.append((name, "" if item is None else str(item)))
    return out
