"""Built-in mappings on records shaped as each provider's API answers and accepts them."""

from __future__ import annotations

import json
from typing import Any

import pytest

from service.entities import ENTITY_MODELS, SUPPORTED, parse_record
from service.mapping import effective_mapping, to_platform, to_provider

# One record per (provider, entity) as the provider's API returns it.
PULLED: dict[tuple[str, str], dict[str, Any]] = {
    ("stripe", "customers"): {
        "id": "cus_1",
        "object": "customer",
        "email": "ada@example.com",
        "name": "Ada Lovelace",
        "phone": "+442071838750",
        "created": 1700000000,
        "address": {
            "line1": "1 Main St",
            "line2": None,
            "city": "London",
            "state": None,
            "postal_code": "N1 9GU",
            "country": "GB",
        },
        "metadata": {"platform_id": "cust-1", "tier": "gold"},
    },
    ("stripe", "payment_intents"): {
        "id": "pi_1",
        "object": "payment_intent",
        "amount": 2000,
        "amount_received": 2000,
        "currency": "usd",
        "customer": "cus_1",
        "status": "succeeded",
        "description": "Tickets",
        "latest_charge": "ch_1",
        "created": 1700000000,
        "metadata": {"platform_id": "order-9", "event": "gala"},
    },
    ("stripe", "charges"): {
        "id": "ch_1",
        "object": "charge",
        "amount": 2000,
        "amount_refunded": 500,
        "currency": "jpy",
        "balance_transaction": "txn_1",
        "customer": "cus_1",
        "payment_intent": "pi_1",
        "paid": True,
        "refunded": False,
        "status": "succeeded",
        "created": 1700000000,
        "metadata": {},
    },
    ("stripe", "refunds"): {
        "id": "re_1",
        "object": "refund",
        "amount": 500,
        "charge": "ch_1",
        "currency": "usd",
        "payment_intent": "pi_1",
        "reason": "requested_by_customer",
        "status": "succeeded",
        "created": 1700000100,
        "metadata": {"platform_id": "refund-1"},
    },
    ("stripe", "balance_transactions"): {
        "id": "txn_1",
        "object": "balance_transaction",
        "amount": 1941,
        "available_on": 1700500000,
        "created": 1700000000,
        "currency": "usd",
        "description": None,
        "fee": 59,
        "net": 1882,
        "source": "ch_1",
        "status": "available",
        "type": "charge",
    },
    ("square", "customers"): {
        "id": "SQ1",
        "given_name": "Ada",
        "family_name": "Lovelace",
        "email_address": "ada@example.com",
        "phone_number": "+1 415-555-0132",
        "company_name": "Engines",
        "reference_id": "cust-1",
        "version": 2,
        "address": {
            "address_line_1": "1 Main St",
            "locality": "San Francisco",
            "administrative_district_level_1": "CA",
            "postal_code": "94103",
            "country": "US",
        },
    },
    ("square", "orders"): {
        "id": "ORD1",
        "location_id": "L1",
        "reference_id": "order-7",
        "customer_id": "SQ1",
        "state": "OPEN",
        "line_items": [
            {
                "uid": "u1",
                "name": "Ticket",
                "quantity": "2",
                "base_price_money": {"amount": 2500, "currency": "USD"},
                "total_money": {"amount": 5000, "currency": "USD"},
            }
        ],
        "total_money": {"amount": 5000, "currency": "USD"},
        "total_tax_money": {"amount": 0, "currency": "USD"},
        "created_at": "2024-01-01T10:00:00.123Z",
        "updated_at": "2024-01-01T10:05:00Z",
        "version": 1,
    },
    ("square", "inventory"): {
        "catalog_object_id": "ITEM1",
        "catalog_object_type": "ITEM_VARIATION",
        "state": "IN_STOCK",
        "location_id": "L1",
        "quantity": "12",
        "calculated_at": "2024-01-01T00:00:00.000Z",
    },
    ("square", "locations"): {
        "id": "L1",
        "name": "Main Hall",
        "business_name": "Venue Co",
        "status": "ACTIVE",
        "timezone": "America/New_York",
        "currency": "USD",
        "country": "US",
        "created_at": "2020-01-01T00:00:00Z",
        "address": {
            "address_line_1": "1 Main",
            "locality": "New York",
            "administrative_district_level_1": "NY",
            "postal_code": "10001",
            "country": "US",
        },
    },
    ("quickbooks", "customers"): {
        "Id": "58",
        "SyncToken": "0",
        "GivenName": "Ada",
        "FamilyName": "Lovelace",
        "DisplayName": "Ada Lovelace",
        "CompanyName": "Engines",
        "PrimaryEmailAddr": {"Address": "ada@example.com"},
        "PrimaryPhone": {"FreeFormNumber": "(415) 555-0132"},
        "BillAddr": {
            "Id": "1",
            "Line1": "1 Main St",
            "City": "Mountain View",
            "CountrySubDivisionCode": "CA",
            "PostalCode": "94043",
            "Country": "USA",
        },
    },
    ("quickbooks", "invoices"): {
        "Id": "130",
        "DocNumber": "1037",
        "TxnDate": "2024-09-19",
        "DueDate": "2024-10-19",
        "CurrencyRef": {"value": "USD", "name": "United States Dollar"},
        "CustomerRef": {"value": "58"},
        "TotalAmt": 362.07,
        "Balance": 362.07,
        "PrivateNote": "gala",
        "Line": [
            {
                "Id": "1",
                "LineNum": 1,
                "Amount": 362.07,
                "DetailType": "SalesItemLineDetail",
                "Description": "Rock Fountain",
                "SalesItemLineDetail": {"ItemRef": {"value": "5"}, "UnitPrice": 362.07, "Qty": 1},
            },
            {"Amount": 362.07, "DetailType": "SubTotalLineDetail", "SubTotalLineDetail": {}},
        ],
        "MetaData": {
            "CreateTime": "2024-09-19T13:16:17-07:00",
            "LastUpdatedTime": "2024-09-19T13:16:17-07:00",
        },
    },
    ("quickbooks", "payments"): {
        "Id": "7",
        "CustomerRef": {"value": "58"},
        "TotalAmt": 55.0,
        "CurrencyRef": {"value": "USD"},
        "TxnDate": "2024-10-01",
        "PaymentRefNum": "CHK-1",
        "Line": [{"Amount": 55.0, "LinkedTxn": [{"TxnId": "130", "TxnType": "Invoice"}]}],
        "MetaData": {"CreateTime": "2024-10-01T09:00:00-07:00"},
    },
    ("quickbooks", "company_info"): {
        "Id": "1",
        "CompanyName": "Venue Co",
        "LegalName": "Venue Co LLC",
        "Country": "US",
        "CompanyAddr": {
            "Line1": "1 Main",
            "City": "Mountain View",
            "CountrySubDivisionCode": "CA",
            "PostalCode": "94043",
            "Country": "US",
        },
        "Email": {"Address": "books@venue.example"},
        "PrimaryPhone": {"FreeFormNumber": "(650) 944-4444"},
        "WebAddr": {"URI": "https://venue.example"},
        "MetaData": {"CreateTime": "2015-06-05T13:55:54-07:00"},
    },
    ("mailchimp", "contacts"): {
        "id": "0cba00ca3da1b283a57287bcceb17e35",
        "email_address": "Jane.Doe@Example.com",
        "status": "subscribed",
        "merge_fields": {"FNAME": "Jane", "LNAME": "", "ADDRESS": "", "PHONE": "", "BIRTHDAY": ""},
        "tags": [{"id": 1, "name": "vip"}],
        "last_changed": "2024-01-01T00:00:00+00:00",
    },
    ("mailchimp", "lists"): {
        "id": "abc123",
        "name": "Newsletter",
        "permission_reminder": "You signed up at our box office",
        "contact": {
            "company": "Venue",
            "address1": "1 Main",
            "address2": "",
            "city": "Atlanta",
            "state": "GA",
            "zip": "30308",
            "country": "US",
            "phone": "",
        },
        "campaign_defaults": {
            "from_name": "Venue",
            "from_email": "news@venue.example",
            "subject": "",
            "language": "en",
        },
        "email_type_option": False,
        "date_created": "2020-01-01T00:00:00+00:00",
        "stats": {"member_count": 42},
    },
}

EXPECTED: dict[tuple[str, str], dict[str, Any]] = {
    ("stripe", "customers"): {
        "id": "cust-1",
        "first_name": "Ada",
        "last_name": "Lovelace",
        "metadata": {"tier": "gold"},
    },
    ("stripe", "payment_intents"): {
        "id": "order-9",
        "external_id": "pi_1",
        "amount": {"amount_minor": 2000, "currency": "USD"},
        "created_at": "2023-11-14T22:13:20Z",
        "metadata": {"event": "gala"},
    },
    ("stripe", "charges"): {
        "amount_refunded": {"amount_minor": 500, "currency": "JPY"},
        "paid": True,
        "refunded": False,
    },
    ("stripe", "refunds"): {
        "id": "refund-1",
        "charge_external_id": "ch_1",
        "amount": {"amount_minor": 500, "currency": "USD"},
    },
    ("stripe", "balance_transactions"): {
        "fee": {"amount_minor": 59, "currency": "USD"},
        "available_on": "2023-11-20T17:06:40Z",
    },
    ("square", "customers"): {
        "id": "cust-1",
        "phone": "+14155550132",
        "company": "Engines",
        "address": {
            "line1": "1 Main St",
            "line2": None,
            "city": "San Francisco",
            "region": "CA",
            "postal_code": "94103",
            "country": "US",
        },
    },
    ("square", "orders"): {
        "id": "order-7",
        "external_id": "ORD1",
        "state": "open",
        "created_at": "2024-01-01T10:00:00.123000Z",
        "discount_total": None,
        "tax_total": {"amount_minor": 0, "currency": "USD"},
    },
    ("square", "inventory"): {"catalog_object_external_id": "ITEM1", "quantity": "12", "state": "IN_STOCK"},
    ("square", "locations"): {"external_id": "L1", "currency": "USD", "country": "US"},
    ("quickbooks", "customers"): {"id": None, "phone": "+14155550132", "first_name": "Ada"},
    ("quickbooks", "invoices"): {
        "total": {"amount_minor": 36207, "currency": "USD"},
        "issue_date": "2024-09-19",
        "created_at": "2024-09-19T20:16:17Z",
        "note": "gala",
    },
    ("quickbooks", "payments"): {
        "amount": {"amount_minor": 5500, "currency": "USD"},
        "reference": "CHK-1",
        "applications": [
            {
                "document_external_id": "130",
                "document_type": "Invoice",
                "amount": {"amount_minor": 5500, "currency": "USD"},
            }
        ],
    },
    ("quickbooks", "company_info"): {
        "name": "Venue Co",
        "phone": "(650) 944-4444",
        "country": "US",
        "email": "books@venue.example",
    },
    ("mailchimp", "contacts"): {
        "email": "Jane.Doe@Example.com",
        "first_name": "Jane",
        "last_name": None,
        "address": None,
        "phone": None,
        "tags": ["vip"],
        "marketing_consent": True,
    },
    ("mailchimp", "lists"): {
        "external_id": "abc123",
        "member_count": 42,
        "email_type_option": False,
        "subject": None,
        "created_at": "2020-01-01T00:00:00Z",
    },
}


def test_every_entity_has_a_sample() -> None:
    """This file covers every (provider, entity) of the contract."""
    assert set(ENTITY_MODELS) == set(PULLED) == set(EXPECTED)


@pytest.mark.parametrize("key", sorted(PULLED), ids=lambda k: "-".join(k))
def test_pulled_record_becomes_a_valid_platform_record(key: tuple[str, str]) -> None:
    """Each provider's own record maps to a valid platform shape with the expected values."""
    platform = to_platform(effective_mapping(*key), PULLED[key])
    shown = parse_record(*key, platform).model_dump(mode="json")
    assert EXPECTED[key] == {name: shown[name] for name in EXPECTED[key]}


def test_quickbooks_invoice_lines() -> None:
    """QuickBooks lines keep description, quantity, unit price and amount; a subtotal line only its amount."""
    platform = to_platform(effective_mapping("quickbooks", "invoices"), PULLED[("quickbooks", "invoices")])
    lines = parse_record("quickbooks", "invoices", platform).model_dump(mode="json", exclude_none=True)[
        "lines"
    ]
    assert [
        {
            "external_id": "1",
            "kind": "SalesItemLineDetail",
            "description": "Rock Fountain",
            "quantity": "1",
            "unit_price": {"amount_minor": 36207, "currency": "USD"},
            "amount": {"amount_minor": 36207, "currency": "USD"},
            "item_external_id": "5",
        },
        {"kind": "SubTotalLineDetail", "amount": {"amount_minor": 36207, "currency": "USD"}},
    ] == lines


# Records the platform sends for every pushable entity, and what the provider receives.
PUSHED: dict[tuple[str, str], tuple[dict[str, Any], dict[str, Any]]] = {
    ("stripe", "refunds"): (
        {
            "id": "refund-1",
            "payment_intent_external_id": "pi_1",
            "amount": {"amount_minor": 500, "currency": "USD"},
            "reason": "requested_by_customer",
        },
        {
            "metadata": {"platform_id": "refund-1"},
            "payment_intent": "pi_1",
            "amount": 500,
            "reason": "requested_by_customer",
        },
    ),
    ("square", "orders"): (
        {
            "id": "order-7",
            "location_external_id": "L1",
            "customer_external_id": "SQ1",
            "line_items": [
                {"name": "Ticket", "quantity": "2", "unit_price": {"amount_minor": 2500, "currency": "USD"}}
            ],
        },
        {
            "reference_id": "order-7",
            "location_id": "L1",
            "customer_id": "SQ1",
            "line_items": [
                {"name": "Ticket", "quantity": "2", "base_price_money": {"amount": 2500, "currency": "USD"}}
            ],
        },
    ),
    ("square", "inventory"): (
        {
            "catalog_object_external_id": "ITEM1",
            "location_external_id": "L1",
            "quantity": "12",
            "calculated_at": "2024-01-01T00:00:00Z",
        },
        {
            "catalog_object_id": "ITEM1",
            "location_id": "L1",
            "state": "IN_STOCK",
            "quantity": "12",
            "occurred_at": "2024-01-01T00:00:00Z",
        },
    ),
    ("quickbooks", "customers"): (
        {
            "id": "cust-1",
            "first_name": "Ada",
            "last_name": "Lovelace",
            "email": "ada@example.com",
            "address": {"country": "US", "region": "CA"},
        },
        {
            "GivenName": "Ada",
            "FamilyName": "Lovelace",
            "DisplayName": "Ada Lovelace",
            "PrimaryEmailAddr": {"Address": "ada@example.com"},
            "BillAddr": {"Country": "US", "CountrySubDivisionCode": "CA"},
        },
    ),
    ("quickbooks", "invoices"): (
        {
            "customer_external_id": "58",
            "issue_date": "2024-09-19",
            "lines": [
                {
                    "description": "Gala ticket",
                    "quantity": "2",
                    "item_external_id": "5",
                    "unit_price": {"amount_minor": 5000, "currency": "USD"},
                    "amount": {"amount_minor": 10000, "currency": "USD"},
                }
            ],
        },
        {
            "CustomerRef": {"value": "58"},
            "TxnDate": "2024-09-19",
            "CurrencyRef": {"value": "USD"},
            "Line": [
                {
                    "DetailType": "SalesItemLineDetail",
                    "Description": "Gala ticket",
                    "Amount": 100.0,
                    "SalesItemLineDetail": {"Qty": "2", "UnitPrice": 50.0, "ItemRef": {"value": "5"}},
                }
            ],
        },
    ),
    ("quickbooks", "payments"): (
        {
            "customer_external_id": "58",
            "amount": {"amount_minor": 10000, "currency": "USD"},
            "applications": [
                {"document_external_id": "130", "amount": {"amount_minor": 10000, "currency": "USD"}}
            ],
        },
        {
            "CustomerRef": {"value": "58"},
            "TotalAmt": 100.0,
            "CurrencyRef": {"value": "USD"},
            "Line": [{"Amount": 100.0, "LinkedTxn": [{"TxnId": "130", "TxnType": "Invoice"}]}],
        },
    ),
    ("mailchimp", "lists"): (
        {
            "name": "Newsletter",
            "company": "Venue",
            "permission_reminder": "You bought a ticket",
            "address": {
                "line1": "1 Main",
                "city": "Atlanta",
                "region": "GA",
                "postal_code": "30308",
                "country": "US",
            },
            "from_name": "Venue",
            "from_email": "news@venue.example",
            "subject": "News",
            "language": "en",
            "email_type_option": False,
        },
        {
            "name": "Newsletter",
            "permission_reminder": "You bought a ticket",
            "email_type_option": False,
            "contact": {
                "company": "Venue",
                "address1": "1 Main",
                "city": "Atlanta",
                "state": "GA",
                "zip": "30308",
                "country": "US",
            },
            "campaign_defaults": {
                "from_name": "Venue",
                "from_email": "news@venue.example",
                "subject": "News",
                "language": "en",
            },
        },
    ),
}


@pytest.mark.parametrize("key", sorted(PUSHED), ids=lambda k: "-".join(k))
def test_pushed_record_uses_the_providers_field_names(key: tuple[str, str]) -> None:
    """A platform record becomes exactly the provider's request fields."""
    record, expected = PUSHED[key]
    parse_record(*key, record)  # the sample itself is a valid platform record
    assert expected == json.loads(json.dumps(to_provider(effective_mapping(*key), record)))


def test_every_pushable_entity_maps_a_record() -> None:
    """Every (provider, entity) that can be pushed has a push sample here or a customer round trip."""
    pushable = {(p, e) for p, e, d in SUPPORTED if d == "push"}
    customers = {("stripe", "customers"), ("square", "customers"), ("mailchimp", "contacts")}
    assert pushable == set(PUSHED) | customers


@pytest.mark.parametrize(
    ("record", "display_name"),
    [
        ({"email": "ada@example.com"}, "ada@example.com"),
        ({"email": "ada@example.com", "company": "Engines"}, "Engines"),
        ({"email": "ada@example.com", "company": "Engines", "first_name": "Ada"}, "Ada"),
        ({"company": "Engines", "first_name": "Mary Ann", "last_name": "Evans"}, "Evans, Mary Ann"),
    ],
)
def test_quickbooks_display_name_falls_back(record: dict[str, Any], display_name: str) -> None:
    """QuickBooks DisplayName is the name, else the company, else the email."""
    assert display_name == to_provider(effective_mapping("quickbooks", "customers"), record)["DisplayName"]
