"""QuickBooksClient: the ProviderClient for QuickBooks Online (customers, invoices, payments,
company_info)."""

from __future__ import annotations

from typing import Any

from providers.auth import NoAuth
from providers.base import Page, ParsedWebhook, ProviderRecord, PushItem, PushResult, VenueAuth
from providers.http import ProviderHttp
from providers.quickbooks import batch, pull
from providers.quickbooks.api import ENTITY_NAMES, QuickBooksApi, object_of, realm_of, to_record
from providers.quickbooks.errors import ObjectNotFoundError
from providers.quickbooks.webhooks import parse_webhook
from service.config import Settings
from service.errors import AuthenticationError, DataError, UnknownEntityError
from service.messages import VerifiedWebhook


class QuickBooksClient:
    """QuickBooks Online through the shared HTTP helper; provider-shaped dicts in and out."""

    name = "quickbooks"

    def __init__(self, http: ProviderHttp, *, settings: Settings | None = None) -> None:
        self.settings = settings or http.settings
        self.api = QuickBooksApi(http, base_url=self.settings.quickbooks_base)

    def batch_size(self, entity: str) -> int:
        """At most 30 writes per batch request (Intuit's recommendation)."""
        if entity not in ENTITY_NAMES:
            raise UnknownEntityError(f"quickbooks cannot push {entity!r}")
        return batch.BATCH_LIMIT

    async def pull_page(
        self, auth: VenueAuth, entity: str, *, cursor: dict[str, Any] | None,
        resume: dict[str, Any] | None, options: dict[str, Any],
    ) -> Page:
        """One page of customers, invoices, payments (by query) or company_info."""
        if entity == "company_info":
            return await pull.pull_company_info(self.api, auth)
        if entity not in ENTITY_NAMES:
            raise UnknownEntityError(f"quickbooks cannot pull {entity!r}")
        return await pull.pull_entity(self.api, auth, entity, cursor, resume)

    async def push_batch(
        self, auth: VenueAuth, entity: str, items: list[PushItem], *, options: dict[str, Any]
    ) -> list[PushResult]:
        """Create or update (sparse, with SyncToken) through POST /batch."""
        if entity not in ENTITY_NAMES:
            raise UnknownEntityError(f"quickbooks cannot push {entity!r}")
        return await batch.push_entity(self.api, auth, entity, items)

    async def fetch_record(self, auth: VenueAuth, entity: str, external_id: str) -> ProviderRecord | None:
        """One record by id (GET /<entity>/<id>); None when it no longer exists."""
        if entity == "company_info":
            page = await pull.pull_company_info(self.api, auth)
            return page.records[0] if page.records else None
        if entity not in ENTITY_NAMES:
            raise UnknownEntityError(f"quickbooks has no entity {entity!r}")
        if not external_id.isalnum():
            raise DataError(f"quickbooks id {external_id!r} is not alphanumeric")
        name = ENTITY_NAMES[entity]
        try:
            payload = await self.api.call(auth, "GET", f"/{name.lower()}/{external_id}",
                                          operation=f"get_{entity}")
        except (ObjectNotFoundError, DataError) as exc:
            if isinstance(exc, ObjectNotFoundError) or exc.status == 404:
                return None
            raise
        obj = object_of(payload, name, operation=f"get_{entity}")
        if entity != "customers" and str(obj.get("status", "")).lower() == "deleted":
            return None
        return to_record(obj, entity=entity)

    def parse_webhook(self, webhook: VerifiedWebhook, body: bytes) -> ParsedWebhook:
        """Either webhook format as changes (ids only); DataError for unusable content."""
        return parse_webhook(body)

    async def check_health(self) -> None:
        """Healthy when an unauthenticated read gets Intuit's own 401 answer."""
        try:
            await self.api.call(NoAuth("quickbooks", realm_id="0"), "GET", "/companyinfo/0", operation="health_check")
        except AuthenticationError:
            return  # Intuit answered, in its own format: the API is up

    def realm(self, auth: VenueAuth) -> str:
        """The credential's realm id (raises ConfigurationError without one)."""
        return realm_of(auth)
