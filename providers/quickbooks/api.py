"""QuickBooks Online's HTTP surface: company URLs, pinned minorversion, Fault checks on 2xx."""

from __future__ import annotations

from typing import Any

from providers.base import ProviderRecord, VenueAuth
from providers.http import ProviderHttp, ProviderSpec, spec_for
from providers.quickbooks.errors import THROTTLE_WAIT_S, error_from_fault, error_hook, find_fault
from providers.quickbooks.webhooks import parse_time
from service.errors import ConfigurationError, ProviderError

MINOR_VERSION = "75"  # the one pinned minorversion (1-74 are served as 75 since 2025-08-01)
SPEC: ProviderSpec = spec_for(
    "quickbooks", error_hook=error_hook, default_retry_after_s=THROTTLE_WAIT_S,
    headers={"Accept": "application/json"},
)
ENTITY_NAMES = {"customers": "Customer", "invoices": "Invoice", "payments": "Payment"}


class QuickBooksApi:
    """Calls under ``<QUICKBOOKS_API_BASE>/v3/company/{realmId}``; JSON in, JSON out."""

    def __init__(self, http: ProviderHttp, *, base_url: str) -> None:
        self.http = http
        self.base_url = base_url.rstrip("/")

    def company_url(self, realm_id: str) -> str:
        return f"{self.base_url}/v3/company/{realm_id}"

    async def call(
        self, auth: VenueAuth, method: str, path: str, *, operation: str,
        body: Any = None, params: dict[str, str] | None = None, realm_id: str | None = None,
    ) -> dict[str, Any]:
        """One call; the reply's JSON object. A Fault, even in a 2xx, raises its error."""
        realm = realm_id or realm_of(auth)
        reply = await self.http.request(
            SPEC, auth, method, f"{self.company_url(realm)}{path}", operation=operation,
            params={**(params or {}), "minorversion": MINOR_VERSION}, json_body=body,
        )
        payload = reply.json()
        if not isinstance(payload, dict):
            raise reply.garbage(f"expected a JSON object, got {type(payload).__name__}")
        fault = find_fault(payload)
        if fault is not None:
            raise error_from_fault(fault, status=reply.status, operation=operation)
        return payload

    async def query(self, auth: VenueAuth, statement: str, *, operation: str) -> dict[str, Any]:
        """GET /query?query=...; the ``QueryResponse`` object (empty when nothing matched)."""
        payload = await self.call(auth, "GET", "/query", operation=operation, params={"query": statement})
        response = payload.get("QueryResponse", {})
        if not isinstance(response, dict):
            raise ProviderError(f"quickbooks {operation}: QueryResponse is not an object", retryable=True)
        return response


def realm_of(auth: VenueAuth) -> str:
    """The company (realm) id of a credential; ConfigurationError when it has none."""
    realm = auth.value("realm_id")
    if not realm:
        raise ConfigurationError(f"quickbooks credential of venue {auth.venue_id} has no realm_id")
    return realm


def rows_of(response: dict[str, Any], name: str, *, operation: str) -> list[dict[str, Any]]:
    """The ``name`` rows of a QueryResponse (the key is absent when nothing matched)."""
    rows = response.get(name, [])
    if not isinstance(rows, list) or not all(isinstance(r, dict) for r in rows):
        raise ProviderError(f"quickbooks {operation}: {name} is not a list of objects", retryable=True)
    return rows


def object_of(payload: dict[str, Any], name: str, *, operation: str) -> dict[str, Any]:
    """``payload[name]`` as an object with an Id; anything else is ProviderError."""
    value = payload.get(name)
    if not isinstance(value, dict) or value.get("Id") in (None, ""):
        raise ProviderError(f"quickbooks {operation}: response has no {name} object", retryable=True)
    return value


def last_updated(obj: dict[str, Any]) -> str | None:
    """``MetaData.LastUpdatedTime`` of an object."""
    meta = obj.get("MetaData")
    value = meta.get("LastUpdatedTime") if isinstance(meta, dict) else None
    return value if isinstance(value, str) else None


def to_record(obj: dict[str, Any], *, entity: str) -> ProviderRecord:
    """A QuickBooks object as a ProviderRecord; an inactive customer counts as deleted."""
    updated = last_updated(obj)
    return ProviderRecord(
        external_id=str(obj["Id"]), data=obj,
        version=str(obj["SyncToken"]) if obj.get("SyncToken") is not None else updated,
        updated_at=parse_time(updated),
        deleted=entity == "customers" and obj.get("Active") is False,
    )
