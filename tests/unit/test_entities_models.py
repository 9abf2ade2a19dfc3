"""The platform shapes and the supported (provider, entity, direction) table."""

from __future__ import annotations

import pydantic
import pytest

from service import entities
from service.entities import (
    ENTITY_MODELS,
    SUPPORTED,
    Customer,
    InventoryCount,
    Invoice,
    Money,
    Order,
    check_supported,
    parse_record,
)
from service.errors import UnknownEntityError, ValidationError

CONTRACT_TABLE = {
    "stripe": (
        ("customers", "payment_intents", "charges", "refunds", "balance_transactions"),
        ("customers", "refunds"),
    ),
    "square": (("customers", "orders", "inventory", "locations"), ("customers", "orders", "inventory")),
    "quickbooks": (
        ("customers", "invoices", "payments", "company_info"),
        ("customers", "invoices", "payments"),
    ),
    "mailchimp": (("contacts", "lists"), ("contacts", "lists")),
}


def test_supported_is_contract_section_4_exactly() -> None:
    """SUPPORTED lists every pull of CONTRACT section 4 and exactly its pushes."""
    expected = {
        (provider, entity, direction)
        for provider, (pulls, pushes) in CONTRACT_TABLE.items()
        for direction, names in (("pull", pulls), ("push", pushes))
        for entity in names
    }
    assert expected == set(SUPPORTED)
    assert {(p, e) for p, e, _ in expected} == set(ENTITY_MODELS)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("paypal", "customers", "pull"), 'unknown provider "paypal"'),
        (("stripe", "invoices", "pull"), 'unknown entity "invoices" for stripe'),
        (("stripe", "charges", "push"), "stripe charges cannot be pushed"),
        (("square", "orders", "sideways"), 'unknown direction "sideways"'),
    ],
)
def test_check_supported_names_what_is_unknown(args: tuple[str, str, str], message: str) -> None:
    """An unknown provider, entity or direction raises UnknownEntityError naming it, on one line."""
    with pytest.raises(UnknownEntityError) as caught:
        check_supported(*args)
    assert message in str(caught.value)
    assert "\n" not in str(caught.value)


def test_check_supported_accepts_every_supported_triple() -> None:
    """Every row of SUPPORTED passes check_supported."""
    for provider, entity, direction in SUPPORTED:
        check_supported(provider, entity, direction)


def test_customer_is_the_contract_shape() -> None:
    """The customer's fields are the contract's, in its order."""
    expected = [
        "id",
        "email",
        "first_name",
        "last_name",
        "phone",
        "company",
        "address",
        "tags",
        "marketing_consent",
        "metadata",
    ]
    assert expected == list(Customer.model_fields)
    assert ["line1", "line2", "city", "region", "postal_code", "country"] == list(
        entities.Address.model_fields
    )


def test_customer_refuses_unknown_fields_and_is_frozen() -> None:
    """extra=forbid and frozen: a typo is an error, a model never changes."""
    with pytest.raises(pydantic.ValidationError):
        Customer.model_validate({"emial": "a@example.com"})
    customer = Customer(email="a@example.com")
    with pytest.raises(pydantic.ValidationError):
        customer.email = "b@example.com"  # type: ignore[misc]


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("phone", "0207 183 8750"),
        ("phone", "+0123"),
        ("email", "not-an-email"),
        ("address", {"country": "GBR"}),
        ("address", {"country": "gb"}),
        ("marketing_consent", "yes"),
    ],
)
def test_customer_refuses_bad_values(field: str, value: object) -> None:
    """Phones are E.164, countries alpha-2 upper case, consent a real boolean."""
    with pytest.raises(pydantic.ValidationError):
        Customer.model_validate({field: value})


def test_money_is_minor_units_and_upper_case_currency() -> None:
    """Money takes an integer amount and an upper-case ISO 4217 code only."""
    assert {"amount_minor": 1250, "currency": "USD"} == Money(amount_minor=1250, currency="USD").model_dump()
    for bad in (
        {"amount_minor": 12.5, "currency": "USD"},
        {"amount_minor": 1, "currency": "usd"},
        {"amount_minor": True, "currency": "USD"},
    ):
        with pytest.raises(pydantic.ValidationError):
            Money.model_validate(bad)


def test_times_are_rfc3339_utc() -> None:
    """An offset time is stored and serialised in UTC with a Z; a naive time is refused."""
    order = Order.model_validate({"created_at": "2024-03-01T10:00:00+02:00"})
    assert "2024-03-01T08:00:00Z" == order.model_dump(mode="json")["created_at"]
    with pytest.raises(pydantic.ValidationError):
        Order.model_validate({"created_at": "2024-03-01T10:00:00"})


def test_quantities_are_decimal_text() -> None:
    """A numeric quantity becomes its decimal text; junk is refused."""
    count = InventoryCount(catalog_object_external_id="c", location_external_id="l", quantity=1.5)  # type: ignore[arg-type]
    assert "1.5" == count.quantity
    assert (
        "2"
        == InventoryCount.model_validate(
            {"catalog_object_external_id": "c", "location_external_id": "l", "quantity": 2}
        ).quantity
    )
    with pytest.raises(pydantic.ValidationError):
        InventoryCount.model_validate(
            {"catalog_object_external_id": "c", "location_external_id": "l", "quantity": "lots"}
        )


def test_invoice_lines_nest_money() -> None:
    """An invoice holds lines with their own money objects."""
    invoice = Invoice.model_validate(
        {"lines": [{"amount": {"amount_minor": 500, "currency": "EUR"}, "quantity": "2"}]}
    )
    assert 500 == invoice.lines[0].amount.amount_minor  # type: ignore[union-attr]


def test_parse_record_raises_one_line_naming_the_field() -> None:
    """parse_record turns a pydantic error into our ValidationError naming the first bad field."""
    with pytest.raises(ValidationError) as caught:
        parse_record("square", "customers", {"phone": "12", "address": {"country": "XXX"}})
    assert str(caught.value).startswith("phone: ")
    assert "(and 1 more)" in str(caught.value)
    assert "\n" not in str(caught.value)


def test_every_model_publishes_a_json_schema() -> None:
    """Every entity model yields a JSON schema (for the AsyncAPI document)."""
    for model in set(ENTITY_MODELS.values()):
        schema = model.model_json_schema()
        assert "properties" in schema
