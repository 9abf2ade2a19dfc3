"""One Square account's in-memory state: merchant, location, customers, orders, inventory."""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from sandbox.square.common import SquareError, json_response, new_id, rfc3339


@dataclass
class Stored:
    """A first response kept for an idempotency key."""

    request: dict[str, Any]
    status: int
    body: bytes


@dataclass
class Store:
    """The account's records; ``stamp`` hands out strictly increasing millisecond times."""

    merchant_id: str
    clock: Callable[[], float]
    location: dict[str, Any] = field(default_factory=dict)
    customers: dict[str, dict[str, Any]] = field(default_factory=dict)
    customer_seqs: list[int] = field(default_factory=list)  # creation order, for list cursors
    customer_ids: list[str] = field(default_factory=list)
    orders: dict[str, dict[str, Any]] = field(default_factory=dict)
    counts: dict[tuple[str, str, str], dict[str, Any]] = field(default_factory=dict)
    changes: list[dict[str, Any]] = field(default_factory=list)
    idempotency: dict[tuple[str, str], Stored] = field(default_factory=dict)
    created: float = 0.0
    last_stamp: float = 0.0
    next_seq: int = 1

    def stamp(self) -> tuple[float, str]:
        """Now, rounded to Square's milliseconds and after every earlier stamp (per account)."""
        now = round(self.clock(), 3)
        if now <= self.last_stamp:
            now = round(self.last_stamp + 0.001, 3)
        self.last_stamp = now
        return now, rfc3339(now)

    def add_customer(self, customer: dict[str, Any], ts: float) -> None:
        customer["_created"] = customer["_updated"] = ts
        customer["_seq"] = self.next_seq
        self.customers[customer["id"]] = customer
        self.customer_seqs.append(self.next_seq)
        self.customer_ids.append(customer["id"])
        self.next_seq += 1

    def customers_after(self, seq: int, *, descending: bool = False) -> Iterator[dict[str, Any]]:
        """Live customers in creation order strictly after (or, descending, before) ``seq``."""
        if descending:
            index = bisect_right(self.customer_seqs, seq - 1) if seq else len(self.customer_seqs)
            ids = (self.customer_ids[i] for i in range(index - 1, -1, -1))
        else:
            start = bisect_right(self.customer_seqs, seq)
            ids = (self.customer_ids[i] for i in range(start, len(self.customer_ids)))
        for customer_id in ids:
            customer = self.customers.get(customer_id)
            if customer is not None:
                yield customer

    def replay(self, endpoint: str, key: str | None, payload: dict[str, Any]) -> web.Response | None:
        """The first response for this key, or None; a changed request is IDEMPOTENCY_KEY_REUSED."""
        if not key:
            return None
        stored = self.idempotency.get((endpoint, key))
        if stored is None:
            return None
        if stored.request != payload:
            raise SquareError(
                400,
                "IDEMPOTENCY_KEY_REUSED",
                "The idempotency key can only be retried with the same request data.",
                field="idempotency_key",
            )
        return web.Response(body=stored.body, status=stored.status, content_type="application/json")

    def remember(
        self,
        endpoint: str,
        key: str | None,
        payload: dict[str, Any],
        result: dict[str, Any],
    ) -> web.Response:
        """Answer ``result`` (200) and keep it for the key."""
        response = json_response(result)
        if key:
            assert isinstance(response.body, bytes)
            self.idempotency[(endpoint, key)] = Stored(payload, 200, response.body)
        return response


def public(record: dict[str, Any]) -> dict[str, Any]:
    """A record without the sandbox's private ``_`` fields."""
    return {k: v for k, v in record.items() if not k.startswith("_")}


def new_store(merchant_id: str | None, clock: Callable[[], float], business_name: str) -> Store:
    """A fresh account: one merchant and its one active location (as Square sets up)."""
    store = Store(merchant_id=merchant_id or new_id(13), clock=clock)
    ts, at = store.stamp()
    store.created = ts
    store.location = {
        "id": new_id(13),
        "name": business_name,
        "address": {
            "address_line_1": "1600 Pennsylvania Ave NW",
            "locality": "Washington",
            "administrative_district_level_1": "DC",
            "postal_code": "20500",
            "country": "US",
        },
        "timezone": "America/Los_Angeles",
        "capabilities": ["CREDIT_CARD_PROCESSING"],
        "status": "ACTIVE",
        "created_at": at,
        "merchant_id": store.merchant_id,
        "country": "US",
        "language_code": "en-US",
        "currency": "USD",
        "business_name": business_name,
        "type": "PHYSICAL",
        "business_hours": {},
        "mcc": "7299",
    }
    return store


def merchant_view(store: Store) -> dict[str, Any]:
    """The merchant object GET /v2/merchants/me answers."""
    return {
        "id": store.merchant_id,
        "business_name": store.location["business_name"],
        "country": "US",
        "language_code": "en-US",
        "currency": "USD",
        "status": "ACTIVE",
        "main_location_id": store.location["id"],
        "created_at": rfc3339(store.created),
    }
