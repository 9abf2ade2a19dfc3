"""QuickBooks Online in the sandbox, under ``/quickbooks`` (CONTRACT section 7; providers.md section 3).

Calls carry ``Authorization: Bearer <access token>``; the token must belong to the realm in
the path (``/v3/company/{realmId}/...``), else the lowercase 401 ``AUTHENTICATION`` fault.
``minorversion`` is accepted and ignored. Limits per realm, as Intuit documents them:
10 requests per second, 500 per minute, at most 10 in flight; past any of them, 429 with
Intuit's XML ``ThrottleExceeded`` body (no ``Retry-After``), even when JSON was asked for.

Webhooks: ``format`` ``"classic"`` (``eventNotifications``) or ``"cloudevents"`` (a JSON
array), signed in ``intuit-signature`` = base64(HMAC-SHA256(verifier token, raw body)) with
the app-wide ``QUICKBOOKS_WEBHOOK_VERIFIER_TOKEN``.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import uuid
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from aiohttp import web

from sandbox.core import Account, Limits
from sandbox.quickbooks import oauth, routes
from sandbox.quickbooks.common import QBError, auth_fault, fault_response, throttle_response
from sandbox.quickbooks.store import new_realm

if TYPE_CHECKING:
    from sandbox.core import SandboxState

LIMITS = Limits(per_second=10, per_minute=500, concurrency=10)
COMPANY_PREFIX = "/quickbooks/v3/company/"
PAST_TENSE = {
    "create": "created",
    "update": "updated",
    "delete": "deleted",
    "merge": "merged",
    "void": "voided",
    "emailed": "emailed",
}


def _bearer(request: web.Request) -> str | None:
    header = request.headers.get("Authorization", "")
    if header[:7].lower() != "bearer ":
        return None
    return header[7:].strip() or None


def signature(verifier_token: str, body: bytes) -> str:
    """Intuit's ``intuit-signature`` for ``body``."""
    return base64.b64encode(hmac.new(verifier_token.encode(), body, hashlib.sha256).digest()).decode()


def _path_realm(path: str) -> str | None:
    if not path.startswith(COMPANY_PREFIX):
        return None
    return path[len(COMPANY_PREFIX) :].split("/", 1)[0]


class Plugin:
    """The QuickBooks Online plug-in (``Plugin(state)``, see sandbox/core.py)."""

    name = "quickbooks"

    def __init__(self, state: SandboxState) -> None:
        self.state = state

    def add_routes(self, app: web.Application, prefix: str) -> None:
        oauth.add_routes(app, prefix, self.state)
        routes.add_routes(app, prefix, self.state)

    def identify(self, request: web.Request) -> Account | None:
        token = _bearer(request)
        if token is None:
            return None
        account = self.state.account_for_token("quickbooks", token)
        if account is None:
            return None
        self.register(account)
        realm = _path_realm(request.path)
        return account if realm is None or realm == account.data["realm"].realm_id else None

    def is_public(self, request: web.Request) -> bool:
        return request.path in oauth.PATHS

    def unauthorized(self, request: web.Request) -> web.Response:
        token = _bearer(request)
        record = self.state.token("quickbooks", token) if token else None
        now = self.state.clock()
        if record is None or record.kind != "access":
            return auth_fault("Token invalid: the access token is not recognized.", now)
        if record.revoked:
            return auth_fault("Token revoked: the access token has been revoked.", now)
        if record.expires_at is not None and record.expires_at <= now:
            return auth_fault("Token expired: the access token has expired.", now)
        return auth_fault("Token invalid: the access token does not belong to this company (realmId).", now)

    def rate_limited(self, request: web.Request) -> web.Response:
        return throttle_response(self.state.clock())

    def error_response(self, request: web.Request, status: int) -> web.Response:
        now = self.state.clock()
        if status == 401:
            return auth_fault("Token invalid: authentication failed.", now)
        if status == 429:
            return throttle_response(now)
        if status == 403:
            error = QBError(
                "003100",
                "message=ApplicationAuthorizationFailed; errorCode=003100; statusCode=403",
                "",
                status=403,
                fault_type="AuthorizationFault",
            )
        elif status >= 500:
            error = QBError(
                "10000",
                "An application error has occurred while processing your request",
                "System Failure Error: injected by the sandbox",
                status=status,
                fault_type="SystemFault",
            )
        else:
            error = QBError(
                str(status), "Request failed", f"The request failed with HTTP {status}", status=status
            )
        return fault_response(error, now)

    def limits(self, account: Account) -> Limits:
        return LIMITS

    def idempotency_key(self, request: web.Request, body: bytes) -> str | None:
        return request.query.get("requestid")

    def register(self, account: Account) -> None:
        if "realm" not in account.data:
            realm_id = (account.oauth or {}).get("realm_id")
            realm = new_realm(str(realm_id) if realm_id else None, self.state.clock, account.name)
            account.data["realm"] = realm
            if account.oauth is not None:
                account.oauth.setdefault("realm_id", realm.realm_id)  # shown by GET /_sandbox/accounts

    def reset(self) -> None:
        """Accounts (and their realms) live in the state, which core empties."""

    async def build_webhook(self, account: Account, spec: dict[str, Any]) -> tuple[dict[str, str], bytes]:
        """A classic or CloudEvents notification for ``spec["event"]``, signed with the verifier token."""
        token = self.state.app_keys.get("quickbooks_webhook_verifier_token")
        if not token:
            raise ValueError("the sandbox was started without a QuickBooks webhook verifier token")
        self.register(account)
        payload = _payload(
            account.data["realm"].realm_id,
            spec.get("event"),
            spec.get("format") or "classic",
            self.state.clock(),
        )
        body = json.dumps(payload, separators=(",", ":")).encode()
        return {
            "Content-Type": "application/json",
            "intuit-signature": signature(token, body),
            "intuit-t-id": str(uuid.uuid4()),
        }, body


def _tense(operation: str) -> str:
    return PAST_TENSE.get(operation.lower(), "updated")


def _changes(event: Any) -> list[dict[str, Any]]:
    if isinstance(event, dict) and "entities" in event:
        event = event["entities"]
    changes = event if isinstance(event, list) else [event]
    for change in changes:
        if not isinstance(change, dict) or not {"name", "id", "operation"} <= set(change):
            raise ValueError("event must be an entity change {name, id, operation} (or a list of them)")
    return changes


def _payload(realm_id: str, event: Any, form: str, now: float) -> Any:
    """The body as given when it is already a full notification, else built in ``form``."""
    if isinstance(event, dict) and "eventNotifications" in event:
        return event
    if isinstance(event, list) and event and isinstance(event[0], dict) and "specversion" in event[0]:
        return event
    if isinstance(event, dict) and "specversion" in event:
        return [event]
    stamp = datetime.fromtimestamp(now, UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"
    changes = [{"lastUpdated": stamp, **change} for change in _changes(event)]
    if form == "classic":
        return {"eventNotifications": [{"realmId": realm_id, "dataChangeEvent": {"entities": changes}}]}
    if form != "cloudevents":
        raise ValueError('format must be "classic" or "cloudevents"')
    return [
        {
            "specversion": "1.0",
            "id": str(uuid.uuid4()),
            "source": "intuit.sandbox",
            "type": f"qbo.{change['name'].lower()}.{_tense(change['operation'])}.v1",
            "datacontenttype": "application/json",
            "time": change["lastUpdated"],
            "intuitentityid": str(change["id"]),
            "intuitaccountid": realm_id,
            "data": {},
        }
        for change in changes
    ]
