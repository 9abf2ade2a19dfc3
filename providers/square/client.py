"""SquareClient: the ProviderClient for Square (customers, orders, inventory, locations)."""

from __future__ import annotations

import hashlib
from typing import Any

import aiohttp

from providers.auth import NoAuth, StaticAuth
from providers.base import Page, ParsedWebhook, ProviderRecord, PushItem, PushResult, VenueAuth
from providers.http import ProviderHttp
from providers.square import pull, push
from providers.square.api import SPEC, SquareApi, items_of, object_of, path_id
from providers.square.errors import NotFoundError
from providers.square.webhooks import customer_record, inventory_record, parse_webhook
from service.config import Settings
from service.errors import AuthenticationError, DataError, UnknownEntityError
from service.messages import VerifiedWebhook

_PULLS = {
    "customers": pull.pull_customers,
    "orders": pull.pull_orders,
    "inventory": pull.pull_inventory,
    "locations": pull.pull_locations,
}
_BATCH_SIZES = {"customers": 1, "orders": 1, "inventory": push.INVENTORY_BATCH}


class SquareClient:
    """Square through the shared HTTP helper; provider-shaped dicts in and out."""

    name = "square"

    def __init__(self, http: ProviderHttp, *, settings: Settings | None = None) -> None:
        self.settings = settings or http.settings
        self.api = SquareApi(http, base_url=self.settings.square_base)
        self._locations: dict[str, str | None] = {}  # account -> default location for orders

    def batch_size(self, entity: str) -> int:
        """Customers and orders one per request (no batch create), inventory 100."""
        if entity not in _BATCH_SIZES:
            raise UnknownEntityError(f"square cannot push {entity!r}")
        return _BATCH_SIZES[entity]

    async def pull_page(
        self, auth: VenueAuth, entity: str, *, cursor: dict[str, Any] | None,
        resume: dict[str, Any] | None, options: dict[str, Any],
    ) -> Page:
        """One page of customers, orders, inventory or locations."""
        if entity not in _PULLS:
            raise UnknownEntityError(f"square cannot pull {entity!r}")
        return await _PULLS[entity](self.api, auth, cursor, resume)

    async def push_batch(
        self, auth: VenueAuth, entity: str, items: list[PushItem], *, options: dict[str, Any]
    ) -> list[PushResult]:
        """Write customers / orders one request each, inventory counts in one batch."""
        if entity == "inventory":
            results: list[PushResult] = []
            size = push.INVENTORY_BATCH
            for start in range(0, len(items), size):
                results += await push.push_inventory(self.api, auth, items[start:start + size])
            return results
        if entity == "customers":
            return [await push.push_customer(self.api, auth, item) for item in items]
        if entity == "orders":
            location = options.get("location_id")
            needs_location = any(i.external_id is None and not i.payload.get("location_id") for i in items)
            if location is None and needs_location:
                location = await self._default_location(auth)
            return [await push.push_order(self.api, auth, item, location_id=location) for item in items]
        raise UnknownEntityError(f"square cannot push {entity!r}")

    async def _default_location(self, auth: VenueAuth) -> str | None:
        if auth.account_id not in self._locations:
            ids = await pull.list_location_ids(self.api, auth)
            self._locations[auth.account_id] = ids[0] if ids else None
        return self._locations[auth.account_id]

    async def fetch_record(self, auth: VenueAuth, entity: str, external_id: str) -> ProviderRecord | None:
        """One record by id; None when Square no longer has it."""
        try:
            return await self._fetch(auth, entity, external_id)
        except (NotFoundError, DataError) as exc:
            if isinstance(exc, NotFoundError) or exc.status == 404:
                return None
            raise

    async def _fetch(self, auth: VenueAuth, entity: str, external_id: str) -> ProviderRecord | None:
        if entity in ("customers", "locations"):
            path_id(external_id)  # checked before it goes into a URL path
        if entity == "customers":
            payload = await self.api.call(auth, "GET", f"/customers/{external_id}", operation="get_customer")
            return customer_record(object_of(payload, "customer", operation="get_customer"))
        if entity == "orders":
            order = await push.fetch_order(self.api, auth, external_id)
            return None if order is None else pull.order_record(order)
        if entity == "locations":
            payload = await self.api.call(auth, "GET", f"/locations/{external_id}", operation="get_location")
            return pull.location_record(object_of(payload, "location", operation="get_location"))
        if entity == "inventory":
            return await self._fetch_count(auth, external_id)
        raise UnknownEntityError(f"square has no entity {entity!r}")

    async def _fetch_count(self, auth: VenueAuth, external_id: str) -> ProviderRecord | None:
        catalog_id, _, rest = external_id.partition(":")
        location_id, _, state = rest.partition(":")
        if not catalog_id or not location_id:
            raise DataError(f"square inventory id {external_id!r} is not <catalog>:<location>:<state>")
        body = {"catalog_object_ids": [catalog_id], "location_ids": [location_id],
                "states": [state or "IN_STOCK"]}
        payload = await self.api.call(auth, "POST", "/inventory/counts/batch-retrieve",
                                      operation="retrieve_inventory_counts", body=body)
        counts = items_of(payload, "counts", operation="retrieve_inventory_counts")
        return next((inventory_record(c) for c in counts if c.get("catalog_object_id")), None)

    def parse_webhook(self, webhook: VerifiedWebhook, body: bytes) -> ParsedWebhook:
        """Square's envelope as changes; DataError for unusable content."""
        return parse_webhook(body)

    async def check_health(self) -> None:
        """Square is healthy when an unauthenticated call gets Square's own 401 error body."""
        try:
            await self.api.call(NoAuth("square"), "GET", "/locations", operation="health_check")
        except AuthenticationError:
            return  # Square answered, in its own format: the API is up


async def fetch_merchant_id(settings: Settings, api_key: str) -> str:
    """The merchant id of an access token (GET /v2/merchants/me), for ``credentials set``.

    There is no VenueAuth yet, so the call goes through the shared helper with a one-off
    auth, a private session and an in-process limiter. Raises IntegrationError."""
    from service.limiter import MemoryBucketStore, RateLimiter

    fingerprint = hashlib.sha256(api_key.encode()).hexdigest()[:16]  # the limiter key, never the secret
    auth = StaticAuth(provider="square", secret=api_key, account_id=f"key-{fingerprint}")
    async with aiohttp.ClientSession(timeout=SPEC.timeout) as session:
        http = ProviderHttp(session, limiter=RateLimiter(MemoryBucketStore()), settings=settings)
        payload = await SquareApi(http, base_url=settings.square_base).call(
            auth, "GET", "/merchants/me", operation="get_merchant")
    return str(object_of(payload, "merchant", operation="get_merchant")["id"])
