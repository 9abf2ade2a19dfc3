"""Square pulls, one page per call: customers, orders, inventory counts, locations.

Cursors (JSON dicts the engine stores between pages):

- ``next_cursor``: ``{"square": <Square cursor>, "since": <RFC 3339 or None>, "max": <latest
  updated time seen so far>}``; orders add ``"locations"`` (ids) and ``"group"`` (which ten).
- ``resume_cursor``: ``{"updated_at": <latest updated time>}``, given only on a pull's last
  page: Square does not page customers or counts in update order, so a running maximum
  stored mid-pull could skip records on later pages. Square's time filters are inclusive,
  so the boundary record is seen again on the next incremental pull (harmless: the engine
  compares versions) rather than lost. The customer cursor also trails by SEARCH_LAG_S.
"""

from __future__ import annotations

from datetime import UTC, timedelta
from typing import Any

from providers.base import Page, ProviderRecord, VenueAuth
from providers.square.api import SquareApi, items_of, next_cursor
from providers.square.webhooks import customer_record, inventory_record, parse_time, record_version

CUSTOMER_PAGE = 100  # list/search limit: 1-100
ORDER_PAGE = 500     # search orders: default 500, max 1000
INVENTORY_PAGE = 1000
ORDER_LOCATIONS_PER_SEARCH = 10
# Square's customer search index lags writes (<30 s, sometimes over a minute: providers.md
# 2.2), so the stored customer cursor stays this far behind the newest update seen (never
# behind the cursor it started from): late-indexed customers are caught by the next pull,
# and the re-read ones are skipped by the engine as unchanged.
SEARCH_LAG_S = 120.0


def order_record(order: dict[str, Any]) -> ProviderRecord:
    """A Square order as pulled."""
    return ProviderRecord(
        external_id=str(order["id"]), data=order,
        version=record_version(order),
        updated_at=parse_time(order.get("updated_at")),
    )


def location_record(location: dict[str, Any]) -> ProviderRecord:
    """A Square location as pulled."""
    return ProviderRecord(
        external_id=str(location["id"]), data=location,
        version=location.get("updated_at") or location.get("created_at"),
        updated_at=parse_time(location.get("updated_at") or location.get("created_at")),
    )


def _later(a: str | None, b: str | None) -> str | None:
    """The later of two RFC 3339 strings (compared as times, not text)."""
    if a is None or b is None:
        return a or b
    ta, tb = parse_time(a), parse_time(b)
    if ta is None or tb is None:
        return a if tb is None else b
    return a if ta >= tb else b


def _finish(
    records: list[ProviderRecord], state: dict[str, Any], field: str, more: dict[str, Any] | None,
    *, lag_s: float = 0.0,
) -> Page:
    """The page, carrying the running maximum; the resume cursor only on the last page."""
    latest = state.get("max") or state.get("since")
    for record in records:
        latest = _later(latest, record.data.get(field))
    if more is not None:
        return Page(records=records, next_cursor={**more, "max": latest}, resume_cursor=None)
    resume = _later(state.get("since"), _minus(latest, lag_s)) if lag_s else latest
    return Page(records=records, next_cursor=None, resume_cursor={"updated_at": resume} if resume else None)


def _minus(value: str | None, seconds: float) -> str | None:
    """An RFC 3339 time moved back by ``seconds`` (UTC, ``Z``)."""
    moment = parse_time(value)
    if moment is None:
        return value
    return (moment - timedelta(seconds=seconds)).astimezone(UTC).isoformat().replace("+00:00", "Z")


def _start(cursor: dict[str, Any] | None, resume: dict[str, Any] | None) -> dict[str, Any]:
    if cursor is not None:
        return dict(cursor)
    return {"since": (resume or {}).get("updated_at"), "max": None, "square": None}


async def pull_customers(
    api: SquareApi, auth: VenueAuth, cursor: dict[str, Any] | None, resume: dict[str, Any] | None
) -> Page:
    """Full: GET /v2/customers; incremental: POST /v2/customers/search on updated_at."""
    state = _start(cursor, resume)
    if state["since"] is None:
        params: dict[str, Any] = {"limit": CUSTOMER_PAGE}
        if state["square"]:
            params["cursor"] = state["square"]
        payload = await api.call(auth, "GET", "/customers", operation="list_customers", params=params)
    else:
        body: dict[str, Any] = {
            "limit": CUSTOMER_PAGE,
            "query": {"filter": {"updated_at": {"start_at": state["since"]}}},
        }
        if state["square"]:
            body["cursor"] = state["square"]
        payload = await api.call(auth, "POST", "/customers/search", operation="search_customers", body=body)
    records = [customer_record(c) for c in items_of(payload, "customers", operation="pull_customers")
               if c.get("id")]
    square_cursor = next_cursor(payload)
    more = {**state, "square": square_cursor} if square_cursor else None
    return _finish(records, state, "updated_at", more, lag_s=SEARCH_LAG_S)


async def list_location_ids(api: SquareApi, auth: VenueAuth) -> list[str]:
    """Every location id of the account (orders are searched per location)."""
    payload = await api.call(auth, "GET", "/locations", operation="list_locations")
    locations = items_of(payload, "locations", operation="list_locations")
    return [str(loc["id"]) for loc in locations if loc.get("id")]


async def pull_orders(
    api: SquareApi, auth: VenueAuth, cursor: dict[str, Any] | None, resume: dict[str, Any] | None
) -> Page:
    """POST /v2/orders/search over the account's locations, ten at a time, by updated_at."""
    state = _start(cursor, resume)
    if "locations" not in state:
        state["locations"], state["group"] = await list_location_ids(api, auth), 0
    group = int(state["group"])
    ids = state["locations"][group * ORDER_LOCATIONS_PER_SEARCH:(group + 1) * ORDER_LOCATIONS_PER_SEARCH]
    if not ids:
        return _finish([], state, "updated_at", None)
    query: dict[str, Any] = {"sort": {"sort_field": "UPDATED_AT", "sort_order": "ASC"}}
    if state["since"] is not None:
        query["filter"] = {"date_time_filter": {"updated_at": {"start_at": state["since"]}}}
    body: dict[str, Any] = {"location_ids": ids, "limit": ORDER_PAGE, "query": query}
    if state["square"]:
        body["cursor"] = state["square"]
    payload = await api.call(auth, "POST", "/orders/search", operation="search_orders", body=body)
    records = [order_record(o) for o in items_of(payload, "orders", operation="search_orders") if o.get("id")]
    square_cursor = next_cursor(payload)
    more: dict[str, Any] | None
    if square_cursor:
        more = {**state, "square": square_cursor}
    elif (group + 1) * ORDER_LOCATIONS_PER_SEARCH < len(state["locations"]):
        more = {**state, "square": None, "group": group + 1}
    else:
        more = None
    return _finish(records, state, "updated_at", more)


async def pull_inventory(
    api: SquareApi, auth: VenueAuth, cursor: dict[str, Any] | None, resume: dict[str, Any] | None
) -> Page:
    """POST /v2/inventory/counts/batch-retrieve with updated_after, page by page."""
    state = _start(cursor, resume)
    body: dict[str, Any] = {"limit": INVENTORY_PAGE}
    if state["since"] is not None:
        body["updated_after"] = state["since"]
    if state["square"]:
        body["cursor"] = state["square"]
    payload = await api.call(
        auth, "POST", "/inventory/counts/batch-retrieve", operation="retrieve_inventory_counts", body=body
    )
    counts = items_of(payload, "counts", operation="retrieve_inventory_counts")
    records = [inventory_record(c) for c in counts if c.get("catalog_object_id")]
    square_cursor = next_cursor(payload)
    more = {**state, "square": square_cursor} if square_cursor else None
    return _finish(records, state, "calculated_at", more)


async def pull_locations(
    api: SquareApi, auth: VenueAuth, cursor: dict[str, Any] | None, resume: dict[str, Any] | None
) -> Page:
    """GET /v2/locations: one page, always all of them (Square has no filter)."""
    payload = await api.call(auth, "GET", "/locations", operation="list_locations")
    records = [location_record(loc) for loc in items_of(payload, "locations", operation="list_locations")
               if loc.get("id")]
    return Page(records=records, next_cursor=None, resume_cursor=None)
