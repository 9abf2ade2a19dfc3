"""Properties: orders, invoices, payments, inventory counts and lists survive a push and a pull."""

from __future__ import annotations

import json
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from service.entities import parse_record
from service.mapping import effective_mapping, to_platform, to_provider

PROPERTY = settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
CURRENCIES = ("USD", "EUR", "GBP", "JPY", "KWD", "CAD")

text = (
    st.text(st.characters(blacklist_categories=("Cs", "Cc")), min_size=1, max_size=30)
    .map(str.strip)
    .filter(bool)
)
ids = st.from_regex(r"[A-Za-z0-9_-]{1,20}", fullmatch=True)
quantities = st.one_of(
    st.integers(min_value=1, max_value=10_000).map(str),
    st.decimals(min_value=0, max_value=1000, places=2).map(lambda d: format(d.normalize(), "f")),
).filter(lambda q: q not in ("0",))
amounts = st.integers(min_value=-(10**10), max_value=10**10)
optional = lambda strategy: st.none() | strategy  # noqa: E731


def money(currency: str) -> Any:
    return st.builds(lambda amount: {"amount_minor": amount, "currency": currency}, amounts)


def _drop_empty(value: Any) -> Any:
    if isinstance(value, dict):
        kept = {k: _drop_empty(v) for k, v in value.items()}
        return {k: v for k, v in kept.items() if v != {}}
    if isinstance(value, list):
        return [_drop_empty(v) for v in value]
    return value


def _round_trip(provider: str, entity: str, record: dict[str, Any], held: tuple[str, ...]) -> None:
    original = _drop_empty(parse_record(provider, entity, record).model_dump(mode="json", exclude_none=True))
    mapping = effective_mapping(provider, entity)
    wire = json.loads(json.dumps(to_provider(mapping, original)))
    platform = to_platform(mapping, wire)
    back = _drop_empty(parse_record(provider, entity, platform).model_dump(mode="json", exclude_none=True))
    assert {k: original[k] for k in held if k in original} == {k: back[k] for k in held if k in back}


@st.composite
def square_orders(draw: Any) -> dict[str, Any]:
    currency = draw(st.sampled_from(CURRENCIES))
    line = st.builds(
        dict,
        name=optional(text),
        quantity=quantities,
        catalog_object_external_id=optional(ids),
        note=optional(text),
        unit_price=optional(money(currency)),
    )
    return {
        "id": draw(optional(ids)),
        "location_external_id": draw(ids),
        "customer_external_id": draw(optional(ids)),
        "line_items": draw(st.lists(line, max_size=4)),
        "metadata": draw(st.dictionaries(st.from_regex(r"[a-z]{1,10}", fullmatch=True), text, max_size=3)),
    }


@PROPERTY
@given(square_orders())
def test_square_order_round_trips(record: dict[str, Any]) -> None:
    """A Square order keeps id, location, customer, line items and metadata."""
    _round_trip(
        "square",
        "orders",
        record,
        ("id", "location_external_id", "customer_external_id", "line_items", "metadata"),
    )


@st.composite
def quickbooks_invoices(draw: Any) -> dict[str, Any]:
    currency = draw(st.sampled_from(CURRENCIES))
    line = st.builds(
        dict,
        kind=st.just("SalesItemLineDetail"),
        description=optional(text),
        quantity=optional(quantities),
        unit_price=optional(money(currency)),
        amount=money(currency),
        item_external_id=optional(ids),
    )
    return {
        "number": draw(optional(st.from_regex(r"[0-9A-Z-]{1,21}", fullmatch=True))),
        "customer_external_id": draw(ids),
        "issue_date": draw(optional(st.dates().map(str))),
        "due_date": draw(optional(st.dates().map(str))),
        "email": draw(optional(st.from_regex(r"[a-z]{1,8}@[a-z]{1,8}\.com", fullmatch=True))),
        "note": draw(optional(text)),
        "lines": draw(st.lists(line, min_size=1, max_size=4)),
    }


@PROPERTY
@given(quickbooks_invoices())
def test_quickbooks_invoice_round_trips(record: dict[str, Any]) -> None:
    """A QuickBooks invoice keeps its number, customer, dates, email, note and every line's money."""
    _round_trip(
        "quickbooks",
        "invoices",
        record,
        ("number", "customer_external_id", "issue_date", "due_date", "email", "note", "lines"),
    )


@st.composite
def quickbooks_payments(draw: Any) -> dict[str, Any]:
    currency = draw(st.sampled_from(CURRENCIES))
    application = st.builds(
        dict, document_external_id=ids, document_type=st.just("Invoice"), amount=money(currency)
    )
    return {
        "customer_external_id": draw(ids),
        "amount": draw(money(currency)),
        "payment_date": draw(optional(st.dates().map(str))),
        "reference": draw(optional(text)),
        "description": draw(optional(text)),
        "applications": draw(st.lists(application, max_size=3)),
    }


@PROPERTY
@given(quickbooks_payments())
def test_quickbooks_payment_round_trips(record: dict[str, Any]) -> None:
    """A QuickBooks payment keeps customer, amount, date, reference, note and what it pays."""
    _round_trip(
        "quickbooks",
        "payments",
        record,
        ("customer_external_id", "amount", "payment_date", "reference", "description", "applications"),
    )


@PROPERTY
@given(
    st.builds(
        dict,
        catalog_object_external_id=ids,
        location_external_id=ids,
        quantity=quantities,
        state=st.sampled_from(["IN_STOCK", "SOLD", "WASTE"]),
        calculated_at=st.datetimes(timezones=st.just(__import__("datetime").UTC)).map(
            lambda t: t.isoformat()
        ),
    )
)
def test_square_inventory_count_round_trips(record: dict[str, Any]) -> None:
    """An inventory count keeps item, location, state, quantity and its time (occurred_at on push)."""
    original = parse_record("square", "inventory", record).model_dump(mode="json")
    mapping = effective_mapping("square", "inventory")
    wire = json.loads(json.dumps(to_provider(mapping, original)))
    wire["calculated_at"] = wire.pop("occurred_at")  # Square answers a count with calculated_at
    assert original == parse_record("square", "inventory", to_platform(mapping, wire)).model_dump(mode="json")


@PROPERTY
@given(
    st.builds(
        dict,
        name=text,
        company=optional(text),
        permission_reminder=optional(text),
        from_name=optional(text),
        from_email=optional(st.from_regex(r"[a-z]{1,8}@[a-z]{1,8}\.org", fullmatch=True)),
        subject=optional(text),
        language=optional(st.sampled_from(["en", "fr", "de"])),
        email_type_option=optional(st.booleans()),
        address=optional(
            st.builds(
                dict,
                line1=optional(text),
                city=optional(text),
                region=optional(text),
                postal_code=optional(text),
                country=optional(st.sampled_from(["US", "GB", "FR"])),
            )
        ),
    )
)
def test_mailchimp_list_round_trips(record: dict[str, Any]) -> None:
    """A Mailchimp audience keeps its name, contact, reminder and campaign defaults."""
    held = (
        "name",
        "company",
        "permission_reminder",
        "from_name",
        "from_email",
        "subject",
        "language",
        "email_type_option",
        "address",
    )
    _round_trip("mailchimp", "lists", record, held)
