"""Stripe customers (with search), events and webhook endpoints (providers.md 1.3-1.4)."""

from __future__ import annotations

import base64
import re
import secrets
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from sandbox.stripe import forms
from sandbox.stripe.forms import StripeError, check_known, created_filter, in_range, text
from sandbox.stripe.store import API_VERSION, Collection, new_id, require, too_old

if TYPE_CHECKING:
    from sandbox.stripe.plugin import Call

ADDRESS = frozenset({"city", "country", "line1", "line2", "postal_code", "state"})
_CUSTOMER_WRITE = frozenset(
    {
        "address",
        "balance",
        "description",
        "email",
        "expand",
        "invoice_prefix",
        "metadata",
        "name",
        "payment_method",
        "phone",
        "preferred_locales",
        "shipping",
        "source",
        "tax_exempt",
        "test_clock",
    }
)
_CUSTOMER_NESTED = {"address": ADDRESS, "shipping": frozenset({"address", "name", "phone"})}
_CUSTOMER_FIELDS = ("address", "description", "email", "name", "phone", "shipping", "tax_exempt")
PAGING = frozenset({"limit", "starting_after", "ending_before", "expand"})
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+$")


def list_page(
    call: Call,
    collection: Collection,
    url: str,
    allowed: frozenset[str],
    match: Callable[[dict[str, Any]], bool] | None = None,
) -> tuple[int, dict[str, Any]]:
    """A Stripe list reply for ``collection`` (limit 1-100, default 10, newest first)."""
    check_known(call.params, allowed | PAGING, {})
    limit = forms.as_int(call.params, "limit", low=1, high=100) or 10
    data, has_more = collection.page(
        limit=limit,
        starting_after=text(call.params, "starting_after"),
        ending_before=text(call.params, "ending_before"),
        match=match,
    )
    return 200, {"object": "list", "data": data, "has_more": has_more, "url": url}


def created_match(call: Call, extra: dict[str, str] | None = None) -> Callable[[dict[str, Any]], bool] | None:
    """A filter on ``created`` bounds and exact field values (e.g. customer=cus_...)."""
    bounds = created_filter(call.params)
    wanted = {field: call.params[name] for name, field in (extra or {}).items() if name in call.params}
    if bounds == (None, None, None, None) and not wanted:
        return None
    return lambda obj: in_range(obj["created"], bounds) and all(obj.get(f) == v for f, v in wanted.items())


# Customers -----------------------------------------------------------------------------


def _email(params: dict[str, Any]) -> str | None:
    email = text(params, "email")
    if email is not None and (len(email) > 512 or not _EMAIL.match(email)):
        raise StripeError(400, message=f"Invalid email address: {email}", code="email_invalid", param="email")
    return email


def _apply_customer(customer: dict[str, Any], params: dict[str, Any]) -> dict[str, Any]:
    """Write the given fields (an empty value unsets) and return the previous values."""
    previous: dict[str, Any] = {}
    values: dict[str, Any] = {
        name: text(params, name) for name in _CUSTOMER_FIELDS if name in params and name != "address"
    }
    if "email" in params:
        values["email"] = _email(params)
    if "address" in params:
        address = params["address"]
        values["address"] = None if address == "" else {k: address.get(k) for k in sorted(ADDRESS)}
    if "metadata" in params:
        values["metadata"] = forms.metadata_update(customer["metadata"], params["metadata"])
    if "balance" in params:
        values["balance"] = forms.as_int(params, "balance")
    for name, value in values.items():
        if customer.get(name) != value:
            previous[name] = customer.get(name)
            customer[name] = value
    return previous


def create_customer(call: Call) -> tuple[int, dict[str, Any]]:
    check_known(call.params, _CUSTOMER_WRITE, _CUSTOMER_NESTED)
    customer: dict[str, Any] = {
        "id": new_id("cus_")[:18],
        "object": "customer",
        "address": None,
        "balance": 0,
        "created": call.now,
        "currency": None,
        "default_source": None,
        "delinquent": False,
        "description": None,
        "discount": None,
        "email": None,
        "invoice_prefix": secrets.token_hex(4).upper(),
        "invoice_settings": {
            "custom_fields": None,
            "default_payment_method": None,
            "footer": None,
            "rendering_options": None,
        },
        "livemode": call.store.livemode,
        "metadata": {},
        "name": None,
        "next_invoice_sequence": 1,
        "phone": None,
        "preferred_locales": [],
        "shipping": None,
        "tax_exempt": "none",
        "test_clock": None,
    }
    _apply_customer(customer, call.params)
    call.store.customers.add(customer)
    call.store.emit("customer.created", customer, now=call.now, request=call.request_ref)
    return 200, customer


def update_customer(call: Call) -> tuple[int, dict[str, Any]]:
    check_known(call.params, (_CUSTOMER_WRITE - {"test_clock"}) | {"default_source"}, _CUSTOMER_NESTED)
    customer = call.store.customers.get(call.ids["id"])
    previous = _apply_customer(customer, call.params)
    if previous:
        call.store.emit(
            "customer.updated", customer, now=call.now, request=call.request_ref, previous=previous
        )
    return 200, customer


def retrieve_customer(call: Call) -> tuple[int, dict[str, Any]]:
    check_known(call.params, frozenset({"expand"}), {})
    customer_id = call.ids["id"]
    if customer_id in call.store.customers.deleted:
        return 200, {"id": customer_id, "object": "customer", "deleted": True}
    return 200, call.store.customers.get(customer_id)


def delete_customer(call: Call) -> tuple[int, dict[str, Any]]:
    check_known(call.params, frozenset(), {})
    customer = call.store.customers.get(call.ids["id"])
    call.store.customers.delete(customer["id"])
    call.store.emit("customer.deleted", customer, now=call.now, request=call.request_ref)
    return 200, {"id": customer["id"], "object": "customer", "deleted": True}


def list_customers(call: Call) -> tuple[int, dict[str, Any]]:
    email = call.params.get("email")
    base = created_match(call)
    match = base if email is None else (lambda c: c["email"] == email and (base is None or base(c)))
    return list_page(
        call, call.store.customers, "/v1/customers", frozenset({"created", "email", "test_clock"}), match
    )


_CLAUSE = re.compile(
    r"""^\s*(email|name|phone|description|metadata\['([^']+)'\])\s*([:~])\s*["'](.*)["']\s*$"""
)


def _search_clause(clause: str) -> Callable[[dict[str, Any]], bool]:
    match = _CLAUSE.match(clause)
    if match is None:
        raise StripeError(400, message=f"Invalid search query: {clause.strip()}", param="query")
    field, meta_key, operator, value = match.groups()

    def get(customer: dict[str, Any]) -> str:
        found = customer["metadata"].get(meta_key) if meta_key else customer.get(field)
        return found or ""

    if operator == ":":
        return lambda c: get(c).lower() == value.lower()
    return lambda c: value.lower() in get(c).lower()


def search_customers(call: Call) -> tuple[int, dict[str, Any]]:
    """A minimal Search: ``field:'v'`` / ``field~'v'`` clauses joined by AND."""
    check_known(call.params, frozenset({"query", "limit", "page", "expand"}), {})
    clauses = [_search_clause(c) for c in re.split(r"\s+AND\s+", require(call.params, "query"))]
    limit = forms.as_int(call.params, "limit", low=1, high=100) or 10
    page = text(call.params, "page")
    offset = int(base64.urlsafe_b64decode(page).decode()) if page else 0
    found = [
        c
        for c in reversed(call.store.customers.order)
        if (obj := call.store.customers.objects.get(c)) is not None and all(f(obj) for f in clauses)
    ]
    data = [call.store.customers.objects[c] for c in found[offset : offset + limit]]
    has_more = offset + limit < len(found)
    next_page = base64.urlsafe_b64encode(str(offset + limit).encode()).decode() if has_more else None
    return 200, {
        "object": "search_result",
        "data": data,
        "has_more": has_more,
        "next_page": next_page,
        "url": "/v1/customers/search",
    }


# Events ---------------------------------------------------------------------------------


def list_events(call: Call) -> tuple[int, dict[str, Any]]:
    """Events of the last 30 days, filtered by type (``*`` wildcard), types[] and created."""
    kinds = call.params.get("types") or ([call.params["type"]] if "type" in call.params else None)
    if kinds is not None and not isinstance(kinds, list):
        raise StripeError(400, message="Invalid array", param="types")
    patterns = None if kinds is None else [re.compile(re.escape(k).replace(r"\*", ".*") + "$") for k in kinds]
    bounds, now = created_filter(call.params), call.state.clock()

    def match(event: dict[str, Any]) -> bool:
        return (
            not too_old(event, now)
            and in_range(event["created"], bounds)
            and (patterns is None or any(p.match(event["type"]) for p in patterns))
        )

    return list_page(
        call,
        call.store.events,
        "/v1/events",
        frozenset({"created", "delivery_success", "type", "types"}),
        match,
    )


def retrieve_event(call: Call) -> tuple[int, dict[str, Any]]:
    check_known(call.params, frozenset({"expand"}), {})
    event = call.store.events.get(call.ids["id"])
    if too_old(event, call.state.clock()):
        raise forms.no_such("event", event["id"])
    return 200, event


# Webhook endpoints -----------------------------------------------------------------------

_ENDPOINT_WRITE = frozenset(
    {"url", "enabled_events", "api_version", "connect", "description", "metadata", "expand"}
)


def _enabled_events(params: dict[str, Any]) -> list[str]:
    events = require(params, "enabled_events")
    if not isinstance(events, list) or not all(isinstance(e, str) for e in events):
        raise StripeError(400, message="Invalid array", param="enabled_events")
    return events


def _url(params: dict[str, Any]) -> str:
    url = require(params, "url")
    if not isinstance(url, str) or not url.startswith(("http://", "https://")):
        raise StripeError(400, message=f"Invalid URL: {url}", code="url_invalid", param="url")
    return url


def create_webhook_endpoint(call: Call) -> tuple[int, dict[str, Any]]:
    """A new endpoint; its ``secret`` shows once and becomes the account's newest secret."""
    check_known(call.params, _ENDPOINT_WRITE, {})
    secret = "whsec_" + secrets.token_urlsafe(24)
    endpoint = {
        "id": new_id("we_")[:27],
        "object": "webhook_endpoint",
        "api_version": text(call.params, "api_version") or API_VERSION,
        "application": None,
        "created": call.now,
        "description": text(call.params, "description"),
        "enabled_events": _enabled_events(call.params),
        "livemode": call.store.livemode,
        "metadata": forms.metadata_update({}, call.params.get("metadata")),
        "status": "enabled",
        "url": _url(call.params),
    }
    call.store.webhook_endpoints.add(endpoint)
    call.account.webhook_secrets.append(secret)
    return 200, {**endpoint, "secret": secret}


def update_webhook_endpoint(call: Call) -> tuple[int, dict[str, Any]]:
    check_known(
        call.params, frozenset({"url", "enabled_events", "description", "disabled", "metadata", "expand"}), {}
    )
    endpoint = call.store.webhook_endpoints.get(call.ids["id"])
    if "url" in call.params:
        endpoint["url"] = _url(call.params)
    if "enabled_events" in call.params:
        endpoint["enabled_events"] = _enabled_events(call.params)
    if "disabled" in call.params:
        endpoint["status"] = "disabled" if forms.as_bool(call.params, "disabled") else "enabled"
    if "description" in call.params:
        endpoint["description"] = text(call.params, "description")
    endpoint["metadata"] = forms.metadata_update(endpoint["metadata"], call.params.get("metadata"))
    return 200, endpoint


def retrieve_webhook_endpoint(call: Call) -> tuple[int, dict[str, Any]]:
    check_known(call.params, frozenset({"expand"}), {})
    return 200, call.store.webhook_endpoints.get(call.ids["id"])


def delete_webhook_endpoint(call: Call) -> tuple[int, dict[str, Any]]:
    check_known(call.params, frozenset(), {})
    call.store.webhook_endpoints.delete(call.ids["id"])
    return 200, {"id": call.ids["id"], "object": "webhook_endpoint", "deleted": True}


def list_webhook_endpoints(call: Call) -> tuple[int, dict[str, Any]]:
    return list_page(call, call.store.webhook_endpoints, "/v1/webhook_endpoints", frozenset())


ROUTES: tuple[tuple[str, str, Callable[[Call], tuple[int, dict[str, Any]]]], ...] = (
    ("POST", "/v1/customers", create_customer),
    ("GET", "/v1/customers", list_customers),
    ("GET", "/v1/customers/search", search_customers),
    ("GET", "/v1/customers/{id}", retrieve_customer),
    ("POST", "/v1/customers/{id}", update_customer),
    ("DELETE", "/v1/customers/{id}", delete_customer),
    ("GET", "/v1/events", list_events),
    ("GET", "/v1/events/{id}", retrieve_event),
    ("POST", "/v1/webhook_endpoints", create_webhook_endpoint),
    ("GET", "/v1/webhook_endpoints", list_webhook_endpoints),
    ("GET", "/v1/webhook_endpoints/{id}", retrieve_webhook_endpoint),
    ("POST", "/v1/webhook_endpoints/{id}", update_webhook_endpoint),
    ("DELETE", "/v1/webhook_endpoints/{id}", delete_webhook_endpoint),
)
