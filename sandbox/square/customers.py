"""Square Customers API: create, retrieve, update (sparse, ``version``), delete, list, search.

Listing order is creation order for both ``DEFAULT`` and ``CREATED_AT`` (Square's DEFAULT
order is not documented precisely); cursors point after the last customer returned, so
pages stay stable while customers are added.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

from aiohttp import web

from sandbox.square.common import (
    ANY,
    BOOL,
    INT,
    STR,
    SquareError,
    check_limit,
    check_query,
    decode_cursor,
    encode_cursor,
    handler,
    in_range,
    json_response,
    new_id,
    parse_json,
    time_range,
    validate,
)
from sandbox.square.store import Store, public

ADDRESS = {
    name: STR
    for name in (
        "address_line_1",
        "address_line_2",
        "address_line_3",
        "locality",
        "sublocality",
        "sublocality_2",
        "sublocality_3",
        "administrative_district_level_1",
        "administrative_district_level_2",
        "administrative_district_level_3",
        "postal_code",
        "country",
        "first_name",
        "last_name",
    )
}
FIELDS: dict[str, Any] = {
    "given_name": STR,
    "family_name": STR,
    "company_name": STR,
    "nickname": STR,
    "email_address": STR,
    "address": ADDRESS,
    "phone_number": STR,
    "reference_id": STR,
    "note": STR,
    "birthday": STR,
    "tax_ids": {"eu_vat": STR},
}
CREATE = {**FIELDS, "idempotency_key": STR}
UPDATE = {**FIELDS, "version": INT}
NAME_FIELDS = ("given_name", "family_name", "company_name", "email_address", "phone_number")
MAX_LENGTHS = {
    "given_name": 300,
    "family_name": 300,
    "company_name": 500,
    "nickname": 100,
    "email_address": 254,
    "note": 4096,
    "reference_id": 100,
}
TEXT_FILTER = {"exact": STR, "fuzzy": STR}
RANGE = {"start_at": STR, "end_at": STR}
SEARCH = {
    "cursor": STR,
    "limit": INT,
    "count": BOOL,
    "query": {
        "filter": {
            "creation_source": {"values": [STR], "rule": STR},
            "created_at": RANGE,
            "updated_at": RANGE,
            "email_address": TEXT_FILTER,
            "phone_number": TEXT_FILTER,
            "reference_id": TEXT_FILTER,
            "group_ids": {"all": [STR], "any": [STR], "none": [STR]},
            "custom_attribute": ANY,
            "segment_ids": ANY,
        },
        "sort": {"field": STR, "order": STR},
    },
}
LIST_QUERY = frozenset({"cursor", "limit", "sort_field", "sort_order", "count"})
EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
COUNTRY = re.compile(r"^[A-Z]{2}$")


def add_routes(app: web.Application, prefix: str) -> None:
    app.router.add_post(f"{prefix}/v2/customers", create_customer)
    app.router.add_get(f"{prefix}/v2/customers", list_customers)
    app.router.add_post(f"{prefix}/v2/customers/search", search_customers)
    app.router.add_get(f"{prefix}/v2/customers/{{customer_id}}", get_customer)
    app.router.add_put(f"{prefix}/v2/customers/{{customer_id}}", update_customer)
    app.router.add_delete(f"{prefix}/v2/customers/{{customer_id}}", delete_customer)


def store_of(request: web.Request) -> Store:
    store: Store = request["account"].data["store"]
    return store


def _check_values(payload: dict[str, Any]) -> None:
    """Square's value checks: lengths, e-mail and phone shapes, country codes."""
    for name, limit in MAX_LENGTHS.items():
        value = payload.get(name)
        if isinstance(value, str) and len(value) > limit:
            raise SquareError(
                400, "VALUE_TOO_LONG", f"`{name}` must be at most {limit} characters.", field=name
            )
    email = payload.get("email_address")
    if email and not EMAIL.match(email):
        raise SquareError(
            400,
            "INVALID_EMAIL_ADDRESS",
            "Expected email_address to be a valid email address.",
            field="email_address",
        )
    phone = payload.get("phone_number")
    if phone:
        digits = sum(ch.isdigit() for ch in phone)
        if not 9 <= digits <= 16 or not re.fullmatch(r"\+?[\d\s().-]+", phone):
            raise SquareError(
                400,
                "INVALID_PHONE_NUMBER",
                "Expected phone_number to be a valid phone number.",
                field="phone_number",
            )
    country = (payload.get("address") or {}).get("country")
    if country and not COUNTRY.match(country):
        raise SquareError(
            400,
            "INVALID_ENUM_VALUE",
            f"Expected address.country to be a Country, got `{country}`.",
            field="address.country",
        )


def _customer(store: Store, customer_id: str) -> dict[str, Any]:
    customer = store.customers.get(customer_id)
    if customer is None:
        raise SquareError(404, "NOT_FOUND", f"Customer with ID `{customer_id}` not found.")
    return customer


@handler
async def create_customer(request: web.Request) -> web.Response:
    """POST /v2/customers: at least one name-like field; replays by ``idempotency_key``."""
    store = store_of(request)
    payload = parse_json(request["body"])
    validate(payload, CREATE)
    key = payload.get("idempotency_key")
    replayed = store.replay("customers.create", key, payload)
    if replayed is not None:
        return replayed
    if not any(payload.get(name) for name in NAME_FIELDS):
        raise SquareError(
            400,
            "MISSING_REQUIRED_PARAMETER",
            "At least one of `given_name`, `family_name`, `company_name`, `email_address`, "
            "or `phone_number` is required.",
            field="given_name",
        )
    _check_values(payload)
    ts, at = store.stamp()
    customer: dict[str, Any] = {"id": new_id(26), "created_at": at, "updated_at": at}
    customer.update((k, v) for k, v in payload.items() if k in FIELDS and v is not None)
    customer.update(preferences={"email_unsubscribed": False}, creation_source="THIRD_PARTY", version=0)
    store.add_customer(customer, ts)
    return store.remember("customers.create", key, payload, {"customer": public(customer)})


@handler
async def get_customer(request: web.Request) -> web.Response:
    """GET /v2/customers/{id}."""
    customer = _customer(store_of(request), request.match_info["customer_id"])
    return json_response({"customer": public(customer)})


def _check_version(customer: dict[str, Any], version: Any) -> None:
    if version is not None and int(version) != customer["version"]:
        raise SquareError(
            409,
            "CONFLICT",
            "Version mismatch: the customer has been updated since you read it.",
            field="version",
        )


@handler
async def update_customer(request: web.Request) -> web.Response:
    """PUT /v2/customers/{id}: sparse; ``null`` clears a field; ``version`` must be current."""
    store = store_of(request)
    customer = _customer(store, request.match_info["customer_id"])
    payload = parse_json(request["body"])
    validate(payload, UPDATE)
    _check_version(customer, payload.get("version"))
    _check_values(payload)
    for name, value in payload.items():
        if name == "version":
            continue
        if value is None:
            customer.pop(name, None)
        elif name == "address" and isinstance(customer.get("address"), dict):
            merged = {**customer["address"], **value}
            customer["address"] = {k: v for k, v in merged.items() if v is not None}
        else:
            customer[name] = value
    ts, at = store.stamp()
    customer["updated_at"], customer["_updated"] = at, ts
    customer["version"] += 1
    return json_response({"customer": public(customer)})


@handler
async def delete_customer(request: web.Request) -> web.Response:
    """DELETE /v2/customers/{id}[?version=]."""
    check_query(request, frozenset({"version"}))
    store = store_of(request)
    customer = _customer(store, request.match_info["customer_id"])
    version = request.query.get("version")
    if version is not None:
        if not version.lstrip("-").isdigit():
            raise SquareError(
                400, "EXPECTED_INTEGER", "Expected integer value for `version`.", field="version"
            )
        _check_version(customer, version)
    del store.customers[customer["id"]]
    return json_response({})


def _sort(field: Any, order: Any, field_name: str, order_name: str) -> bool:
    """True for descending; Square's enum errors for anything else."""
    if field not in (None, "DEFAULT", "CREATED_AT"):
        raise SquareError(
            400,
            "INVALID_ENUM_VALUE",
            f"Expected `{field_name}` to be DEFAULT or CREATED_AT.",
            field=field_name,
        )
    if order not in (None, "ASC", "DESC"):
        raise SquareError(
            400, "INVALID_ENUM_VALUE", f"Expected `{order_name}` to be ASC or DESC.", field=order_name
        )
    return bool(order == "DESC")


def _page(
    store: Store,
    rows: Iterator[dict[str, Any]],
    limit: int,
    kind: str,
) -> tuple[list[dict[str, Any]], str | None]:
    page: list[dict[str, Any]] = []
    for customer in rows:
        if len(page) == limit:
            return page, encode_cursor(kind, page[-1]["_seq"])
        page.append(customer)
    return page, None


@handler
async def list_customers(request: web.Request) -> web.Response:
    """GET /v2/customers: ``cursor``, ``limit`` 1-100, ``sort_field``, ``sort_order``, ``count``."""
    query = request.query
    check_query(request, LIST_QUERY)
    limit = check_limit(query.get("limit"), low=1, high=100, default=100)
    descending = _sort(query.get("sort_field"), query.get("sort_order"), "sort_field", "sort_order")
    kind = "cld" if descending else "cla"
    store = store_of(request)
    rows = store.customers_after(decode_cursor(query.get("cursor"), kind), descending=descending)
    page, cursor = _page(store, rows, limit, kind)
    count = len(store.customers) if query.get("count") == "true" else None
    return json_response(_answer(page, cursor, count))


def _answer(page: list[dict[str, Any]], cursor: str | None, count: int | None) -> dict[str, Any]:
    result: dict[str, Any] = {}
    if page:
        result["customers"] = [public(c) for c in page]
    if cursor:
        result["cursor"] = cursor
    if count is not None:
        result["count"] = count
    return result


def _matcher(spec: dict[str, Any]) -> Any:
    """A predicate for Square's customer filter (exact / fuzzy text, time ranges, sources)."""
    created = time_range(spec.get("created_at"), "query.filter.created_at")
    updated = time_range(spec.get("updated_at"), "query.filter.updated_at")
    texts = [
        (name, spec[name]) for name in ("email_address", "phone_number", "reference_id") if spec.get(name)
    ]
    sources = (spec.get("creation_source") or {}).get("values")
    exclude = (spec.get("creation_source") or {}).get("rule") == "EXCLUDE"

    def matches(customer: dict[str, Any]) -> bool:
        if not in_range(customer["_created"], created) or not in_range(customer["_updated"], updated):
            return False
        for name, text in texts:
            value = str(customer.get(name) or "")
            if "exact" in text and text["exact"] is not None and value.lower() != text["exact"].lower():
                return False
            if text.get("fuzzy") and text["fuzzy"].lower() not in value.lower():
                return False
        return not sources or ((customer.get("creation_source") in sources) != exclude)

    return matches


@handler
async def search_customers(request: web.Request) -> web.Response:
    """POST /v2/customers/search: filters incl. ``updated_at`` so incremental pulls work."""
    payload = parse_json(request["body"])
    validate(payload, SEARCH)
    limit = check_limit(payload.get("limit"), low=1, high=100, default=100)
    query = payload.get("query") or {}
    sort = query.get("sort") or {}
    descending = _sort(sort.get("field"), sort.get("order"), "query.sort.field", "query.sort.order")
    matches = _matcher(query.get("filter") or {})
    kind = "csd" if descending else "csa"
    store = store_of(request)
    rows = store.customers_after(decode_cursor(payload.get("cursor"), kind), descending=descending)
    page, cursor = _page(store, (c for c in rows if matches(c)), limit, kind)
    count = sum(1 for c in store.customers.values() if matches(c)) if payload.get("count") else None
    return json_response(_answer(page, cursor, count))
