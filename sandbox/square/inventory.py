"""Square Inventory (batch changes, batch counts), Locations and Merchants.

Counts are kept per (catalog object, location, state) for the tracked states; ``NONE``,
``SOLD`` and ``UNLINKED_RETURN`` are untracked, as in Square. A batch is checked whole
before any change applies, so a bad change leaves every count untouched.
"""

from __future__ import annotations

import re
from decimal import Decimal
from typing import Any

from aiohttp import web

from sandbox.square.common import (
    ANY,
    BOOL,
    INT,
    STR,
    SquareError,
    check_limit,
    decode_cursor,
    encode_cursor,
    handler,
    json_response,
    new_id,
    order_id,
    parse_json,
    parse_rfc3339,
    require,
    validate,
)
from sandbox.square.customers import store_of
from sandbox.square.store import Store, merchant_view, public

MONEY = {"amount": INT, "currency": STR}
COMMON = {
    "id": STR,
    "reference_id": STR,
    "catalog_object_id": STR,
    "catalog_object_type": STR,
    "quantity": STR,
    "occurred_at": STR,
    "created_at": STR,
    "source": ANY,
    "employee_id": STR,
    "team_member_id": STR,
}
PHYSICAL_COUNT = {**COMMON, "state": STR, "location_id": STR}
ADJUSTMENT = {
    **COMMON,
    "from_state": STR,
    "to_state": STR,
    "location_id": STR,
    "from_location_id": STR,
    "to_location_id": STR,
    "total_price_money": MONEY,
    "transaction_id": STR,
    "refund_id": STR,
    "purchase_order_id": STR,
    "goods_receipt_id": STR,
    "adjustment_group": ANY,
}
CHANGE = {
    "type": STR,
    "physical_count": PHYSICAL_COUNT,
    "adjustment": ADJUSTMENT,
    "transfer": ANY,
    "measurement_unit": ANY,
    "measurement_unit_id": STR,
}
BATCH_CHANGE = {"idempotency_key": STR, "changes": [CHANGE], "ignore_unchanged_counts": BOOL}
BATCH_RETRIEVE = {
    "catalog_object_ids": [STR],
    "location_ids": [STR],
    "updated_after": STR,
    "cursor": STR,
    "states": [STR],
    "limit": INT,
}
STATES = frozenset(
    {
        "CUSTOM",
        "IN_STOCK",
        "SOLD",
        "RETURNED_BY_CUSTOMER",
        "RESERVED_FOR_SALE",
        "SOLD_ONLINE",
        "ORDERED_FROM_VENDOR",
        "RECEIVED_FROM_VENDOR",
        "IN_TRANSIT_TO",
        "NONE",
        "WASTE",
        "UNLINKED_RETURN",
        "COMPOSED",
        "DECOMPOSED",
        "SUPPORTED_BY_NEWER_VERSION",
        "IN_TRANSIT",
    }
)
UNTRACKED = frozenset({"NONE", "SOLD", "UNLINKED_RETURN"})
QUANTITY = re.compile(r"^-?\d{1,12}(\.\d{1,5})?$")
MAX_CHANGES = 100


def add_routes(app: web.Application, prefix: str) -> None:
    for path in ("/v2/inventory/changes/batch-create", "/v2/inventory/batch-change"):
        app.router.add_post(prefix + path, batch_change)
    for path in ("/v2/inventory/counts/batch-retrieve", "/v2/inventory/batch-retrieve-counts"):
        app.router.add_post(prefix + path, batch_retrieve_counts)
    app.router.add_get(f"{prefix}/v2/locations", list_locations)
    app.router.add_get(f"{prefix}/v2/locations/{{location_id}}", get_location)
    app.router.add_get(f"{prefix}/v2/merchants", list_merchants)
    app.router.add_get(f"{prefix}/v2/merchants/{{merchant_id}}", get_merchant)


def _decimal_text(value: Decimal) -> str:
    return format(value.normalize(), "f") if value else "0"


def _quantity(change: dict[str, Any], path: str, *, positive: bool) -> Decimal:
    text = require(change, "quantity", path)
    if not QUANTITY.match(text):
        raise SquareError(
            400, "INVALID_VALUE", f"`{path}.quantity` must be a decimal string.", field=f"{path}.quantity"
        )
    value = Decimal(text)
    if value < 0 or (positive and value == 0):
        raise SquareError(400, "VALUE_TOO_LOW", f"`{path}.quantity` is too low.", field=f"{path}.quantity")
    return value


def _state(change: dict[str, Any], name: str, path: str) -> str:
    state = str(require(change, name, path))
    if state not in STATES:
        raise SquareError(
            400,
            "INVALID_ENUM_VALUE",
            f"Expected `{path}.{name}` to be an InventoryState.",
            field=f"{path}.{name}",
        )
    return state


def _location(store: Store, change: dict[str, Any], name: str, path: str) -> str:
    location = str(require(change, name, path))
    if location != store.location["id"]:
        raise SquareError(400, "INVALID_VALUE", f"Location `{location}` not found.", field=f"{path}.{name}")
    return location


def _plan(
    store: Store, index: int, change: dict[str, Any]
) -> tuple[str, dict[str, Any], list[tuple[Any, ...]]]:
    """Check one change; return its type, body and the count moves (key, delta or set)."""
    kind = require(change, "type", f"changes[{index}]")
    if kind == "PHYSICAL_COUNT":
        path = f"changes[{index}].physical_count"
        body = require(change, "physical_count", f"changes[{index}]")
        item, state = require(body, "catalog_object_id", path), _state(body, "state", path)
        location = _location(store, body, "location_id", path)
        parse_rfc3339(require(body, "occurred_at", path), f"{path}.occurred_at")
        return kind, body, [((item, location, state), "set", _quantity(body, path, positive=False))]
    if kind == "ADJUSTMENT":
        path = f"changes[{index}].adjustment"
        body = require(change, "adjustment", f"changes[{index}]")
        item, quantity = require(body, "catalog_object_id", path), _quantity(body, path, positive=True)
        source, target = _state(body, "from_state", path), _state(body, "to_state", path)
        name = "location_id" if body.get("location_id") else "from_location_id"
        location = _location(store, body, name, path)
        if body.get("occurred_at"):
            parse_rfc3339(body["occurred_at"], f"{path}.occurred_at")
        return (
            kind,
            body,
            [((item, location, source), "add", -quantity), ((item, location, target), "add", quantity)],
        )
    raise SquareError(
        400,
        "INVALID_ENUM_VALUE",
        f"Expected `changes[{index}].type` to be PHYSICAL_COUNT or ADJUSTMENT.",
        field=f"changes[{index}].type",
    )


def _apply(store: Store, moves: list[tuple[Any, ...]], ts: float, at: str, touched: dict[Any, None]) -> None:
    for key, how, amount in moves:
        if key[2] in UNTRACKED:
            continue
        count = store.counts.get(key)
        if count is None:
            count = store.counts[key] = {
                "catalog_object_id": key[0],
                "catalog_object_type": "ITEM_VARIATION",
                "state": key[2],
                "location_id": key[1],
                "quantity": "0",
                "_q": Decimal(0),
            }
        count["_q"] = amount if how == "set" else count["_q"] + amount
        count.update(quantity=_decimal_text(count["_q"]), calculated_at=at, _calc=ts)
        touched[key] = None


@handler
async def batch_change(request: web.Request) -> web.Response:
    """POST /v2/inventory/changes/batch-create: ``idempotency_key`` 1-128, 1-100 changes."""
    store = store_of(request)
    payload = parse_json(request["body"])
    validate(payload, BATCH_CHANGE)
    key = require(payload, "idempotency_key")
    if len(key) > 128:
        raise SquareError(
            400,
            "VALUE_TOO_LONG",
            "`idempotency_key` must be at most 128 characters.",
            field="idempotency_key",
        )
    replayed = store.replay("inventory.changes", key, payload)
    if replayed is not None:
        return replayed
    changes = require(payload, "changes")
    if len(changes) > MAX_CHANGES:
        raise SquareError(
            400, "ARRAY_LENGTH_TOO_LONG", f"`changes` must have at most {MAX_CHANGES} items.", field="changes"
        )
    plans = [_plan(store, i, change) for i, change in enumerate(changes)]
    ts, at = store.stamp()
    touched: dict[Any, None] = {}
    out = []
    for kind, body, moves in plans:
        _apply(store, moves, ts, at, touched)
        record = {**{k: v for k, v in body.items() if v is not None}, "id": order_id()[:26], "created_at": at}
        if kind == "ADJUSTMENT" and "location_id" not in record:
            record["location_id"] = record.get("from_location_id")
        out.append({"type": kind, kind.lower(): record})
    store.changes.extend(out)
    counts = [public(store.counts[k]) for k in touched]
    return store.remember("inventory.changes", key, payload, {"counts": counts, "changes": out})


@handler
async def batch_retrieve_counts(request: web.Request) -> web.Response:
    """POST /v2/inventory/counts/batch-retrieve: filters, ``updated_after``, ``limit`` 1-1000, cursor."""
    payload = parse_json(request["body"])
    validate(payload, BATCH_RETRIEVE)
    limit = check_limit(payload.get("limit"), low=1, high=1000, default=1000)
    after = parse_rfc3339(payload["updated_after"], "updated_after") if payload.get("updated_after") else None
    items, locations = payload.get("catalog_object_ids"), payload.get("location_ids")
    states = payload.get("states")
    store = store_of(request)
    rows = [
        c
        for c in store.counts.values()
        if (not items or c["catalog_object_id"] in items)
        and (not locations or c["location_id"] in locations)
        and (not states or c["state"] in states)
        and (after is None or c["_calc"] > after)
    ]
    rows.sort(key=lambda c: (c["_calc"], c["catalog_object_id"], c["state"]))
    start = decode_cursor(payload.get("cursor"), "n")
    page = rows[start : start + limit]
    result: dict[str, Any] = {}
    if page:
        result["counts"] = [public(c) for c in page]
    if start + limit < len(rows):
        result["cursor"] = encode_cursor("n", start + limit)
    return json_response(result)


@handler
async def list_locations(request: web.Request) -> web.Response:
    """GET /v2/locations: the account's one location."""
    return json_response({"locations": [store_of(request).location]})


@handler
async def get_location(request: web.Request) -> web.Response:
    """GET /v2/locations/{id} (``main`` is the main location)."""
    store = store_of(request)
    location_id = request.match_info["location_id"]
    if location_id not in ("main", store.location["id"]):
        raise SquareError(404, "NOT_FOUND", f"Location `{location_id}` not found.")
    return json_response({"location": store.location})


@handler
async def list_merchants(request: web.Request) -> web.Response:
    """GET /v2/merchants: the one merchant the token can see."""
    return json_response({"merchant": [merchant_view(store_of(request))]})


@handler
async def get_merchant(request: web.Request) -> web.Response:
    """GET /v2/merchants/{id}; ``me`` is the token's own merchant."""
    store = store_of(request)
    merchant_id = request.match_info["merchant_id"]
    if merchant_id not in ("me", store.merchant_id):
        raise SquareError(404, "NOT_FOUND", f"Merchant `{merchant_id}` not found.")
    return json_response({"merchant": merchant_view(store)})


__all__ = ["add_routes", "new_id"]
