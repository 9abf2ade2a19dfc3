"""The control endpoints of CONTRACT section 7, under ``/_sandbox``.

- ``POST /_sandbox/accounts`` registers an account; ``GET /_sandbox/accounts`` lists them.
- ``GET /_sandbox/calls[?provider=P&account=A]`` -> ``{"calls": [...]}`` in arrival order.
- ``POST /_sandbox/faults`` adds a fault; ``GET`` lists them; ``DELETE`` clears them.
- ``POST /_sandbox/reset`` empties all state, accounts included.
- ``POST /_sandbox/clock`` ``{"advance_seconds": N}`` moves sandbox time (tests of expiry).
- ``POST /_sandbox/webhooks/{provider}`` ``{"account", "event", "url", ...}`` builds a
  signed webhook through the provider plugin, POSTs it to ``url`` and answers
  ``{"status": ..., "body": ...}`` with the receiver's answer.
"""

from __future__ import annotations

import json
from typing import Any

import aiohttp
from aiohttp import web

from sandbox.core import Account, Fault, SandboxState

STATE_KEY = web.AppKey("sandbox_state", SandboxState)
WEBHOOK_TIMEOUT = aiohttp.ClientTimeout(total=15)
_FAULT_FIELDS = {"provider", "account", "path_prefix", "status", "latency_ms", "rate", "count"}


def add_control_routes(app: web.Application) -> None:
    """Register the control endpoints on ``app`` (whose STATE_KEY holds the state)."""
    app.router.add_post("/_sandbox/accounts", post_account)
    app.router.add_get("/_sandbox/accounts", get_accounts)
    app.router.add_get("/_sandbox/calls", get_calls)
    app.router.add_post("/_sandbox/faults", post_fault)
    app.router.add_get("/_sandbox/faults", get_faults)
    app.router.add_delete("/_sandbox/faults", delete_faults)
    app.router.add_post("/_sandbox/reset", post_reset)
    app.router.add_post("/_sandbox/clock", post_clock)
    app.router.add_post("/_sandbox/webhooks/{provider}", post_webhook)


def _bad(message: str, status: int = 400) -> web.Response:
    return web.json_response({"error": message}, status=status)


async def _json_object(request: web.Request) -> dict[str, Any]:
    try:
        payload = json.loads(await request.read() or b"{}")
    except ValueError:
        raise web.HTTPBadRequest(
            text=json.dumps({"error": "body is not JSON"}), content_type="application/json"
        ) from None
    if not isinstance(payload, dict):
        raise web.HTTPBadRequest(
            text=json.dumps({"error": "body must be a JSON object"}), content_type="application/json"
        )
    return payload


def _account_view(account: Account) -> dict[str, Any]:
    return {
        "provider": account.provider,
        "account": account.name,
        "api_key": account.api_key,
        "oauth": account.oauth,
        "webhook_secrets": list(account.webhook_secrets),
    }


async def post_account(request: web.Request) -> web.Response:
    """Register an account: its key, OAuth tokens and webhook secret (CONTRACT section 7)."""
    state = request.app[STATE_KEY]
    payload = await _json_object(request)
    provider, name = payload.get("provider"), payload.get("account")
    if provider not in state.plugins:
        return _bad(f"unknown provider: {provider!r}")
    if not isinstance(name, str) or not name:
        return _bad("account must be a non-empty string")
    oauth = payload.get("oauth")
    if oauth is not None and not isinstance(oauth, dict):
        return _bad("oauth must be an object")
    secret = payload.get("webhook_secret")
    account = state.add_account(
        Account(
            provider=provider,
            name=name,
            api_key=payload.get("api_key"),
            oauth=dict(oauth) if oauth else None,
            webhook_secrets=[secret] if secret else [],
        )
    )
    state.plugins[provider].register(account)
    return web.json_response(_account_view(account), status=201)


async def get_accounts(request: web.Request) -> web.Response:
    state = request.app[STATE_KEY]
    provider = request.query.get("provider")
    accounts = [a for a in state.accounts.values() if provider is None or a.provider == provider]
    return web.json_response({"accounts": [_account_view(a) for a in accounts]})


async def get_calls(request: web.Request) -> web.Response:
    """The calls log in arrival order, optionally for one provider and/or account."""
    state = request.app[STATE_KEY]
    provider, account = request.query.get("provider"), request.query.get("account")
    calls = [
        c
        for c in state.calls
        if (provider is None or c["provider"] == provider) and (account is None or c["account"] == account)
    ]
    return web.json_response({"calls": calls})


def _parse_fault(state: SandboxState, payload: dict[str, Any]) -> Fault | str:
    unknown = set(payload) - _FAULT_FIELDS
    if unknown:
        return f"unknown fault fields: {sorted(unknown)}"
    if payload.get("provider") not in state.plugins:
        return f"unknown provider: {payload.get('provider')!r}"
    status = payload.get("status")
    if status is not None and status != "timeout" and not (isinstance(status, int) and 100 <= status < 600):
        return 'status must be an HTTP status or "timeout"'
    rate = payload.get("rate", 1.0)
    if not isinstance(rate, int | float) or not 0.0 <= rate <= 1.0:
        return "rate must be between 0 and 1"
    count = payload.get("count")
    if count is not None and (not isinstance(count, int) or count < 0):
        return "count must be a non-negative integer or null"
    latency = payload.get("latency_ms", 0)
    if not isinstance(latency, int | float) or latency < 0:
        return "latency_ms must be a non-negative number"
    return Fault(
        provider=payload["provider"],
        account=payload.get("account"),
        path_prefix=payload.get("path_prefix"),
        status=status,
        latency_ms=float(latency),
        rate=float(rate),
        count=count,
    )


async def post_fault(request: web.Request) -> web.Response:
    state = request.app[STATE_KEY]
    fault = _parse_fault(state, await _json_object(request))
    if isinstance(fault, str):
        return _bad(fault)
    state.faults.append(fault)
    return web.json_response(fault.as_dict(), status=201)


async def get_faults(request: web.Request) -> web.Response:
    return web.json_response({"faults": [f.as_dict() for f in request.app[STATE_KEY].faults]})


async def delete_faults(request: web.Request) -> web.Response:
    request.app[STATE_KEY].faults.clear()
    return web.json_response({"faults": []})


async def post_reset(request: web.Request) -> web.Response:
    request.app[STATE_KEY].reset()
    return web.json_response({"reset": True})


async def post_clock(request: web.Request) -> web.Response:
    """Move sandbox time forward (or back) by ``advance_seconds``; answers the new time."""
    state = request.app[STATE_KEY]
    advance = (await _json_object(request)).get("advance_seconds", 0)
    if not isinstance(advance, int | float):
        return _bad("advance_seconds must be a number")
    state.clock_offset_s += float(advance)
    return web.json_response({"now": state.clock(), "offset_seconds": state.clock_offset_s})


async def post_webhook(request: web.Request) -> web.Response:
    """Build, sign and deliver a provider webhook; answer the receiver's status and body."""
    state = request.app[STATE_KEY]
    provider = request.match_info["provider"]
    plugin = state.plugins.get(provider)
    if plugin is None:
        return _bad(f"unknown provider: {provider!r}", 404)
    spec = await _json_object(request)
    url = spec.get("url")
    if not isinstance(url, str) or not url.startswith(("http://", "https://")):
        return _bad("url must be an http(s) URL")
    account = state.account(provider, spec.get("account", ""))
    if account is None:
        return _bad(f"unknown account: {spec.get('account')!r}", 404)
    try:
        headers, body = await plugin.build_webhook(account, spec)
    except ValueError as exc:
        return _bad(str(exc))
    return web.json_response(await _deliver(url, headers, body))


async def _deliver(url: str, headers: dict[str, str], body: bytes) -> dict[str, Any]:
    try:
        async with aiohttp.ClientSession(timeout=WEBHOOK_TIMEOUT) as session:
            async with session.post(url, data=body, headers=headers) as response:
                text = await response.text()
                status = response.status
    except (aiohttp.ClientError, TimeoutError) as exc:
        return {"status": None, "body": None, "error": f"{type(exc).__name__}: {exc}"}
    try:
        parsed: Any = json.loads(text) if text else None
    except ValueError:
        parsed = text
    return {"status": status, "body": parsed}
