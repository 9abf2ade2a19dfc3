"""Square OAuth: POST /oauth2/token (refresh grant) and POST /oauth2/revoke.

Code-flow refresh tokens are multi-use and never expire, so a refresh answers the same
refresh token it was given (providers.md 2.1). Access tokens live 30 days (24 hours when
``short_lived``), or ``SANDBOX_TOKEN_TTL_SECONDS``. The client must be the one the sandbox
was started with (``SQUARE_CLIENT_ID`` / ``SQUARE_CLIENT_SECRET``).
"""

from __future__ import annotations

import hmac
import time
from typing import TYPE_CHECKING, Any

from aiohttp import web

from sandbox.square.common import (
    BOOL,
    STR,
    SquareError,
    handler,
    json_response,
    parse_json,
    require,
    validate,
)

if TYPE_CHECKING:
    from sandbox.core import SandboxState

ACCESS_TTL_S = 30 * 86400.0
SHORT_TTL_S = 86400.0
TOKEN_REQUEST = {
    "client_id": STR,
    "client_secret": STR,
    "code": STR,
    "redirect_uri": STR,
    "grant_type": STR,
    "refresh_token": STR,
    "migration_token": STR,
    "scopes": [STR],
    "short_lived": BOOL,
    "code_verifier": STR,
}
REVOKE_REQUEST = {"client_id": STR, "access_token": STR, "merchant_id": STR, "revoke_only_access_token": BOOL}
PATHS = frozenset({"/square/oauth2/token", "/square/oauth2/revoke"})


def _expiry(ts: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ts))


def _unauthorized(detail: str) -> SquareError:
    return SquareError(401, "UNAUTHORIZED", detail, category="AUTHENTICATION_ERROR")


def _check_client(state: SandboxState, client_id: str, client_secret: str | None) -> None:
    expected_id, expected_secret = state.clients.get("square") or (None, None)
    if expected_id is not None and not hmac.compare_digest(client_id, expected_id):
        raise _unauthorized("Invalid client_id.")
    if expected_secret is not None and (
        client_secret is None or not hmac.compare_digest(client_secret, expected_secret)
    ):
        raise _unauthorized("Invalid client_secret.")


def add_routes(app: web.Application, prefix: str, state: SandboxState) -> None:
    @handler
    async def obtain_token(request: web.Request) -> web.Response:
        """POST /oauth2/token with ``grant_type=refresh_token``."""
        payload = parse_json(request["body"])
        validate(payload, TOKEN_REQUEST)
        _check_client(state, require(payload, "client_id"), require(payload, "client_secret"))
        grant = require(payload, "grant_type")
        if grant == "authorization_code":
            require(payload, "code")
            raise _unauthorized("The authorization code is invalid or expired.")
        if grant != "refresh_token":
            raise SquareError(400, "INVALID_VALUE", f"Unsupported grant_type `{grant}`.", field="grant_type")
        refresh = require(payload, "refresh_token")
        account = state.account_for_token("square", refresh, kind="refresh")
        if account is None:
            raise _unauthorized("The refresh token is invalid or has been revoked.")
        request["account"] = account
        if not account.client_matches(payload.get("client_id"), payload.get("client_secret")):
            raise _unauthorized("Invalid client_id.")  # not the application the seller authorised
        ttl = state.token_ttl_s("square", SHORT_TTL_S if payload.get("short_lived") else ACCESS_TTL_S)
        token = state.issue_token(account, kind="access", ttl_s=ttl, prefix="EAAA")
        expires = state.token_expires_at("square", token)
        return json_response(
            _token_answer(
                account.data["store"].merchant_id, token, refresh, expires, bool(payload.get("short_lived"))
            )
        )

    @handler
    async def revoke_token(request: web.Request) -> web.Response:
        """POST /oauth2/revoke: ``Authorization: Client <secret>`` and the access token to revoke."""
        payload = parse_json(request["body"])
        validate(payload, REVOKE_REQUEST)
        secret = request.headers.get("Authorization", "").removeprefix("Client ").strip()
        _check_client(state, require(payload, "client_id"), secret or None)
        token = require(payload, "access_token")
        record = state.token("square", token)
        if record is None:
            raise SquareError(404, "NOT_FOUND", "Access token not found.")
        request["account"] = record.account
        state.revoke_token("square", token)
        return json_response({"success": True})

    app.router.add_post(f"{prefix}/oauth2/token", obtain_token)
    app.router.add_post(f"{prefix}/oauth2/revoke", revoke_token)


def _token_answer(
    merchant_id: str,
    token: str,
    refresh: str,
    expires: float | None,
    short_lived: bool,
) -> dict[str, Any]:
    return {
        "access_token": token,
        "token_type": "bearer",
        "expires_at": _expiry(expires) if expires is not None else "2099-12-31T00:00:00Z",
        "merchant_id": merchant_id,
        "refresh_token": refresh,
        "short_lived": short_lived,
    }
