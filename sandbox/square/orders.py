"""Square Orders API: create, retrieve, update, batch-retrieve and search.

Totals are computed from the line items (quantity x base price, rounded to minor units);
taxes and discounts are accepted and echoed but not applied.
"""

from __future__ import annotations

import re
from decimal import Decimal
from typing import Any

from aiohttp import web

from sandbox.square.common import (
    ANY,
    INT,
    STR,
    SquareError,
    check_limit,
    decode_cursor,
    encode_cursor,
    handler,
    in_range,
    json_response,
    order_id,
    parse_json,
    require,
    time_range,
    validate,
)
from sandbox.square.customers import store_of
from sandbox.square.store import Store, public

MONEY = {"amount": INT, "currency": STR}
LINE_ITEM = {
    "uid": STR,
    "name": STR,
    "quantity": STR,
    "catalog_object_id": STR,
    "catalog_version": INT,
    "variation_name": STR,
    "note": STR,
    "base_price_money": MONEY,
    "metadata": ("map", STR),
    "item_type": STR,
    "applied_taxes": ANY,
    "applied_discounts": ANY,
    "modifiers": ANY,
    "quantity_unit": ANY,
    "pricing_blocklists": ANY,
}
ORDER = {
    "location_id": STR,
    "reference_id": STR,
    "source": {"name": STR},
    "customer_id": STR,
    "line_items": [LINE_ITEM],
    "taxes": ANY,
    "discounts": ANY,
    "service_charges": ANY,
    "fulfillments": ANY,
    "metadata": ("map", STR),
    "pricing_options": ANY,
    "ticket_name": STR,
    "state": STR,
    "version": INT,
}
CREATE = {"order": ORDER, "idempotency_key": STR}
UPDATE = {"order": ORDER, "fields_to_clear": [STR], "idempotency_key": STR}
RANGE = {"start_at": STR, "end_at": STR}
SEARCH = {
    "location_ids": [STR],
    "cursor": STR,
    "limit": INT,
    "return_entries": ANY,
    "query": {
        "filter": {
            "state_filter": {"states": [STR]},
            "date_time_filter": {"created_at": RANGE, "updated_at": RANGE, "closed_at": RANGE},
            "customer_filter": {"customer_ids": [STR]},
            "source_filter": {"source_names": [STR]},
            "fulfillment_filter": ANY,
        },
        "sort": {"sort_field": STR, "sort_order": STR},
    },
}
STATES = ("OPEN", "COMPLETED", "CANCELED", "DRAFT")
QUANTITY = re.compile(r"^\d{1,7}(\.\d{1,5})?$")


def add_routes(app: web.Application, prefix: str) -> None:
    app.router.add_post(f"{prefix}/v2/orders", create_order)
    app.router.add_post(f"{prefix}/v2/orders/search", search_orders)
    app.router.add_post(f"{prefix}/v2/orders/batch-retrieve", batch_retrieve_orders)
    app.router.add_get(f"{prefix}/v2/orders/{{order_id}}", get_order)
    app.router.add_put(f"{prefix}/v2/orders/{{order_id}}", update_order)


def _money(amount: int, currency: str) -> dict[str, Any]:
    return {"amount": amount, "currency": currency}


def _line_item(item: dict[str, Any], index: int, currency: str) -> dict[str, Any]:
    path = f"order.line_items[{index}]"
    quantity = require(item, "quantity", path)
    if not QUANTITY.match(quantity) or Decimal(quantity) <= 0:
        raise SquareError(
            400,
            "INVALID_VALUE",
            f"`{path}.quantity` must be a positive decimal string.",
            field=f"{path}.quantity",
        )
    if not item.get("catalog_object_id"):
        require(item, "name", path)
        require(item, "base_price_money", path)
    price = item.get("base_price_money") or {"amount": 0, "currency": currency}
    amount = require(price, "amount", f"{path}.base_price_money")
    if amount < 0:
        raise SquareError(
            400,
            "VALUE_TOO_LOW",
            "Money amounts must not be negative.",
            field=f"{path}.base_price_money.amount",
        )
    if price.get("currency", currency) != currency:
        raise SquareError(
            400,
            "INVALID_VALUE",
            f"Currency must match the location's currency {currency}.",
            field=f"{path}.base_price_money.currency",
        )
    total = int((Decimal(quantity) * amount).to_integral_value())
    line = {"uid": item.get("uid") or order_id()[:22], **{k: v for k, v in item.items() if v is not None}}
    zero = _money(0, currency)
    line.update(
        item_type=item.get("item_type", "ITEM"),
        base_price_money=_money(amount, currency),
        variation_total_price_money=_money(total, currency),
        gross_sales_money=_money(total, currency),
        total_tax_money=zero,
        total_discount_money=zero,
        total_money=_money(total, currency),
    )
    return line


def _totals(order: dict[str, Any], currency: str) -> None:
    total = sum(line["total_money"]["amount"] for line in order.get("line_items", []))
    zero = _money(0, currency)
    order.update(
        total_money=_money(total, currency),
        total_tax_money=zero,
        total_discount_money=zero,
        total_tip_money=zero,
        total_service_charge_money=zero,
        net_amounts={
            "total_money": _money(total, currency),
            "tax_money": zero,
            "discount_money": zero,
            "tip_money": zero,
            "service_charge_money": zero,
        },
    )


def _build(store: Store, spec: dict[str, Any]) -> dict[str, Any]:
    location_id = require(spec, "location_id", "order")
    if location_id != store.location["id"]:
        raise SquareError(404, "NOT_FOUND", f"Location `{location_id}` not found.", field="order.location_id")
    currency = store.location["currency"]
    state = spec.get("state") or "OPEN"
    if state not in STATES:
        raise SquareError(
            400, "INVALID_ENUM_VALUE", "Expected `order.state` to be an OrderState.", field="order.state"
        )
    order = {k: v for k, v in spec.items() if v is not None and k != "version"}
    order["line_items"] = [
        _line_item(item, i, currency) for i, item in enumerate(spec.get("line_items") or [])
    ]
    order["state"] = state
    _totals(order, currency)
    return order


def _order(store: Store, oid: str) -> dict[str, Any]:
    order = store.orders.get(oid)
    if order is None:
        raise SquareError(404, "NOT_FOUND", f"Order with ID `{oid}` not found.")
    return order


@handler
async def create_order(request: web.Request) -> web.Response:
    """POST /v2/orders: ``order.location_id`` required; replays by ``idempotency_key``."""
    store = store_of(request)
    payload = parse_json(request["body"])
    validate(payload, CREATE)
    key = payload.get("idempotency_key")
    replayed = store.replay("orders.create", key, payload)
    if replayed is not None:
        return replayed
    order = _build(store, require(payload, "order"))
    ts, at = store.stamp()
    order = {
        "id": order_id(),
        **order,
        "created_at": at,
        "updated_at": at,
        "version": 1,
        "_created": ts,
        "_updated": ts,
        "_closed": None,
    }
    if order["state"] in ("COMPLETED", "CANCELED"):
        order["closed_at"], order["_closed"] = at, ts
    store.orders[order["id"]] = order
    return store.remember("orders.create", key, payload, {"order": public(order)})


@handler
async def get_order(request: web.Request) -> web.Response:
    """GET /v2/orders/{id}."""
    order = _order(store_of(request), request.match_info["order_id"])
    return json_response({"order": public(order)})


@handler
async def update_order(request: web.Request) -> web.Response:
    """PUT /v2/orders/{id}: sparse ``order`` with its current ``version``, ``fields_to_clear``."""
    store = store_of(request)
    order = _order(store, request.match_info["order_id"])
    payload = parse_json(request["body"])
    validate(payload, UPDATE)
    key = payload.get("idempotency_key")
    replayed = store.replay(f"orders.update.{order['id']}", key, payload)
    if replayed is not None:
        return replayed
    spec = payload.get("order") or {}
    if spec.get("version") is not None and spec["version"] != order["version"]:
        raise SquareError(
            409,
            "CONFLICT",
            "Version mismatch: the order version does not match the server version.",
            field="order.version",
        )
    merged = {k: v for k, v in public(order).items() if k not in payload.get("fields_to_clear", [])}
    merged.update((k, v) for k, v in spec.items() if k != "version")
    rebuilt = _build(store, merged)
    ts, at = store.stamp()
    rebuilt.update(
        updated_at=at,
        version=order["version"] + 1,
        _created=order["_created"],
        _updated=ts,
        _closed=order["_closed"],
    )
    if rebuilt["state"] in ("COMPLETED", "CANCELED") and order["_closed"] is None:
        rebuilt["closed_at"], rebuilt["_closed"] = at, ts
    store.orders[order["id"]] = rebuilt
    return store.remember(f"orders.update.{order['id']}", key, payload, {"order": public(rebuilt)})


@handler
async def batch_retrieve_orders(request: web.Request) -> web.Response:
    """POST /v2/orders/batch-retrieve: up to 100 ``order_ids``; unknown ids are left out."""
    payload = parse_json(request["body"])
    validate(payload, {"location_id": STR, "order_ids": [STR]})
    ids = require(payload, "order_ids")
    if len(ids) > 100:
        raise SquareError(
            400, "ARRAY_LENGTH_TOO_LONG", "`order_ids` must have at most 100 items.", field="order_ids"
        )
    store = store_of(request)
    orders = [public(store.orders[oid]) for oid in ids if oid in store.orders]
    return json_response({"orders": orders} if orders else {})


def _search_filter(spec: dict[str, Any], sort_field: str) -> Any:
    states = (spec.get("state_filter") or {}).get("states")
    customers = (spec.get("customer_filter") or {}).get("customer_ids")
    sources = (spec.get("source_filter") or {}).get("source_names")
    dates = spec.get("date_time_filter") or {}
    ranges = {}
    for name in ("created_at", "updated_at", "closed_at"):
        if dates.get(name):
            if name.upper() != sort_field:
                raise SquareError(
                    400,
                    "BAD_REQUEST",
                    f"`query.sort.sort_field` must be {name.upper()} "
                    f"when filtering on `date_time_filter.{name}`.",
                    field="query.sort.sort_field",
                )
            ranges[f"_{name[:-3]}"] = time_range(dates[name], f"query.filter.date_time_filter.{name}")

    def matches(order: dict[str, Any]) -> bool:
        if states and order["state"] not in states:
            return False
        if customers and order.get("customer_id") not in customers:
            return False
        if sources and (order.get("source") or {}).get("name") not in sources:
            return False
        for name, bounds in ranges.items():
            if order[name] is None or not in_range(order[name], bounds):
                return False
        return True

    return matches


@handler
async def search_orders(request: web.Request) -> web.Response:
    """POST /v2/orders/search: 1-10 ``location_ids``, filters, sort, ``limit`` up to 1000, cursor."""
    payload = parse_json(request["body"])
    validate(payload, SEARCH)
    locations = require(payload, "location_ids")
    if len(locations) > 10:
        raise SquareError(
            400, "ARRAY_LENGTH_TOO_LONG", "`location_ids` must have at most 10 items.", field="location_ids"
        )
    limit = check_limit(payload.get("limit"), low=1, high=1000, default=500)
    query = payload.get("query") or {}
    sort = query.get("sort") or {}
    sort_field = sort.get("sort_field") or "CREATED_AT"
    if sort_field not in ("CREATED_AT", "UPDATED_AT", "CLOSED_AT"):
        raise SquareError(
            400,
            "INVALID_ENUM_VALUE",
            "Expected `query.sort.sort_field` to be a SearchOrdersSortField.",
            field="query.sort.sort_field",
        )
    matches = _search_filter(query.get("filter") or {}, sort_field)
    store = store_of(request)
    key = f"_{sort_field.lower()[:-3]}"
    rows = [o for o in store.orders.values() if o["location_id"] in locations and matches(o)]
    rows.sort(key=lambda o: (o[key] or 0.0, o["id"]), reverse=sort.get("sort_order", "DESC") != "ASC")
    start = decode_cursor(payload.get("cursor"), "o")
    page = rows[start : start + limit]
    result: dict[str, Any] = {}
    if page:
        if payload.get("return_entries"):
            result["order_entries"] = [
                {"order_id": o["id"], "version": o["version"], "location_id": o["location_id"]} for o in page
            ]
        else:
            result["orders"] = [public(o) for o in page]
    if start + limit < len(rows):
        result["cursor"] = encode_cursor("o", start + limit)
    return json_response(result)
