"""Intuit OAuth: POST /oauth2/v1/tokens/bearer (refresh grant) and /oauth2/v1/tokens/revoke.

The client authenticates with ``Authorization: Basic b64(client_id:client_secret)`` and
must be the one the sandbox was started with. Each refresh issues a new access token
(3600 s, or ``SANDBOX_TOKEN_TTL_SECONDS``) and a new refresh token, and revokes the
refresh token it was given: a reused one gets 400 ``{"error": "invalid_grant"}``.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import json
from typing import TYPE_CHECKING
from urllib.parse import parse_qsl

from aiohttp import web

if TYPE_CHECKING:
    from sandbox.core import SandboxState

ACCESS_TTL_S = 3600.0
REFRESH_TTL_S = 8726400.0  # 101 days, Intuit's x_refresh_token_expires_in
PATHS = frozenset({"/quickbooks/oauth2/v1/tokens/bearer", "/quickbooks/oauth2/v1/tokens/revoke"})


def _oauth_error(error: str, status: int = 400) -> web.Response:
    return web.Response(
        body=json.dumps({"error": error}).encode(),
        status=status,
        content_type="application/json",
        headers={"Cache-Control": "no-cache, no-store", "Pragma": "no-cache"},
    )


def _client(header: str) -> tuple[str, str] | None:
    """(client id, secret) of an ``Authorization: Basic`` header."""
    if not header.lower().startswith("basic "):
        return None
    try:
        client_id, _, secret = base64.b64decode(header[6:].strip()).decode().partition(":")
    except (binascii.Error, UnicodeDecodeError):
        return None
    return client_id, secret


def _client_ok(state: SandboxState, header: str) -> bool:
    client = _client(header)
    if client is None:
        return False
    client_id, secret = client
    expected_id, expected_secret = state.clients.get("quickbooks") or (None, None)
    return (expected_id is None or hmac.compare_digest(client_id, expected_id)) and (
        expected_secret is None or hmac.compare_digest(secret, expected_secret)
    )


def add_routes(app: web.Application, prefix: str, state: SandboxState) -> None:
    async def bearer(request: web.Request) -> web.Response:
        """POST /oauth2/v1/tokens/bearer, form ``grant_type=refresh_token&refresh_token=...``."""
        if not _client_ok(state, request.headers.get("Authorization", "")):
            return _oauth_error("invalid_client", 401)
        form = dict(parse_qsl(request["body"].decode("utf-8", "replace")))
        grant = form.get("grant_type")
        if grant == "authorization_code":
            return _oauth_error("invalid_grant")  # the sandbox hands out no authorization codes
        if grant != "refresh_token":
            return _oauth_error("unsupported_grant_type" if grant else "invalid_request")
        old = form.get("refresh_token", "")
        account = state.account_for_token("quickbooks", old, kind="refresh") if old else None
        if account is None:
            return _oauth_error("invalid_grant")
        request["account"] = account
        if not account.client_matches(*(_client(request.headers.get("Authorization", "")) or (None, None))):
            return _oauth_error("invalid_client", 401)  # not the app the account authorised
        ttl = state.token_ttl_s("quickbooks", ACCESS_TTL_S) or ACCESS_TTL_S
        access = state.issue_token(account, kind="access", ttl_s=ttl)
        refresh = state.issue_token(account, kind="refresh", ttl_s=REFRESH_TTL_S, prefix="RT1-")
        state.revoke_token("quickbooks", old)
        payload = {
            "token_type": "bearer",
            "expires_in": int(ttl),
            "refresh_token": refresh,
            "x_refresh_token_expires_in": int(REFRESH_TTL_S),
            "access_token": access,
        }
        return web.Response(
            body=json.dumps(payload).encode(),
            content_type="application/json",
            headers={"Cache-Control": "no-cache, no-store", "Pragma": "no-cache"},
        )

    async def revoke(request: web.Request) -> web.Response:
        """POST /oauth2/v1/tokens/revoke ``{"token": ...}`` revokes an access or refresh token."""
        if not _client_ok(state, request.headers.get("Authorization", "")):
            return _oauth_error("invalid_client", 401)
        try:
            token = json.loads(request["body"] or b"{}").get("token")
        except (ValueError, AttributeError):
            token = None
        record = state.token("quickbooks", token) if isinstance(token, str) else None
        if record is None:
            return _oauth_error("invalid_request")
        request["account"] = record.account
        state.revoke_token("quickbooks", token)
        return web.Response(status=200)

    app.router.add_post(f"{prefix}/oauth2/v1/tokens/bearer", bearer)
    app.router.add_post(f"{prefix}/oauth2/v1/tokens/revoke", revoke)
