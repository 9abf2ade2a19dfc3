"""Applying mappings: paths, lists, directions, defaults, required fields and isolation."""

from __future__ import annotations

import copy
import json
import time
from typing import Any

import pytest

from service.errors import ValidationError
from service.mapping import effective_mapping, to_platform, to_provider, validate_document


def doc(*entries: dict[str, Any]) -> Any:
    return validate_document(list(entries))


def test_directions_pick_entries() -> None:
    """pull entries run only in to_platform, push entries only in to_provider."""
    entries = doc(
        {"platform": "id", "provider": "ref", "direction": "push"},
        {"platform": "external_id", "provider": "ref", "direction": "pull"},
        {"platform": "email", "provider": "mail"},
    )
    assert {"external_id": "r1", "email": "e"} == to_platform(entries, {"ref": "r1", "mail": "e"})
    assert {"ref": "p1", "mail": "e"} == to_provider(entries, {"id": "p1", "email": "e", "external_id": "x"})


def test_missing_means_absent_null_or_empty() -> None:
    """Absent, null and empty-string values are left out, not copied."""
    entries = doc(
        {"platform": "first_name", "provider": "merge_fields.FNAME"},
        {"platform": "address.city", "provider": "merge_fields.ADDRESS.city"},
    )
    assert {} == to_platform(entries, {"merge_fields": {"FNAME": "", "ADDRESS": ""}})
    assert {} == to_provider(entries, {"first_name": None, "address": None})


def test_required_field_missing_names_the_field() -> None:
    """A missing required value fails the record naming the platform field, both ways."""
    entries = doc({"platform": "email", "provider": "email_address", "required": True})
    with pytest.raises(ValidationError, match="^missing required field email$"):
        to_platform(entries, {"email_address": ""})
    with pytest.raises(ValidationError, match="^missing required field email$"):
        to_provider(entries, {})


def test_default_is_platform_form() -> None:
    """A default stands in for a missing value: pushed through the transform, pulled as is."""
    entries = doc(
        {"platform": "marketing_consent", "provider": "status", "transform": "bool", "default": False}
    )
    assert {"status": "unsubscribed"} == to_provider(entries, {})
    assert {"marketing_consent": False} == to_platform(entries, {})


def test_lists_map_element_by_element() -> None:
    """[] paths map each element, and errors name the element index."""
    entries = doc(
        {"platform": "line_items[].name", "provider": "line_items[].name"},
        {
            "platform": "line_items[].unit_price.currency",
            "provider": "line_items[].base_price_money.currency",
        },
        {
            "platform": "line_items[].unit_price.amount_minor",
            "provider": "line_items[].base_price_money.amount",
            "required": True,
        },
    )
    square = {
        "line_items": [
            {"name": "Ticket", "base_price_money": {"amount": 2500, "currency": "USD"}},
            {"name": "Parking", "base_price_money": {"amount": 800, "currency": "USD"}},
        ]
    }
    platform = to_platform(entries, square)
    assert {
        "line_items": [
            {"name": "Ticket", "unit_price": {"currency": "USD", "amount_minor": 2500}},
            {"name": "Parking", "unit_price": {"currency": "USD", "amount_minor": 800}},
        ]
    } == platform
    assert square == to_provider(entries, platform)
    broken = copy.deepcopy(square)
    del broken["line_items"][1]["base_price_money"]["amount"]
    with pytest.raises(
        ValidationError, match=r"^missing required field line_items\[1\]\.unit_price\.amount_minor$"
    ):
        to_platform(entries, broken)


def test_a_missing_list_requires_nothing() -> None:
    """A required element field does not fail a record that has no list at all."""
    entries = doc(
        {"platform": "line_items[].quantity", "provider": "line_items[].quantity", "required": True}
    )
    assert {} == to_platform(entries, {})


def test_scalar_copied_into_every_element_and_collapsed_back() -> None:
    """A provider-level currency reaches each line's money on pull and must agree on push."""
    entries = doc(
        {"platform": "lines[].amount.currency", "provider": "CurrencyRef.value"},
        {"platform": "lines[].amount.amount_minor", "provider": "Line[].Amount", "transform": "minor_units"},
        {"platform": "lines[].description", "provider": "Line[].Description"},
    )
    qbo = {"CurrencyRef": {"value": "EUR"}, "Line": [{"Amount": 10.5}, {"Description": "note only"}]}
    platform = to_platform(entries, qbo)
    assert {
        "lines": [{"amount": {"currency": "EUR", "amount_minor": 1050}}, {"description": "note only"}]
    } == platform
    assert {
        "CurrencyRef": {"value": "EUR"},
        "Line": [{"Amount": 10.5}, {"Description": "note only"}],
    } == to_provider(entries, platform)
    mixed = {
        "lines": [
            {"amount": {"currency": "EUR", "amount_minor": 1}},
            {"amount": {"currency": "USD", "amount_minor": 1}},
        ]
    }
    with pytest.raises(ValidationError, match=r"lines\[\]\.amount\.currency: list elements disagree"):
        to_provider(entries, mixed)


def test_numeric_segments_index_lists() -> None:
    """A number in a path indexes a list, on read and on write."""
    entries = doc({"platform": "applications[].document_external_id", "provider": "Line[].LinkedTxn.0.TxnId"})
    qbo = {"Line": [{"LinkedTxn": [{"TxnId": "130"}]}, {"LinkedTxn": []}]}
    platform = to_platform(entries, qbo)
    assert {"applications": [{"document_external_id": "130"}, {}]} == platform
    assert {"Line": [{"LinkedTxn": [{"TxnId": "130"}]}, {}]} == to_provider(entries, platform)


def test_object_entry_leaves_out_keys_mapped_more_precisely() -> None:
    """metadata on pull omits metadata.platform_id (mapped to id); on push the precise entry wins."""
    mapping = effective_mapping("stripe", "customers")
    stripe = {"metadata": {"platform_id": "cust-1", "company": "Acme", "tier": "gold"}}
    assert {"id": "cust-1", "company": "Acme", "metadata": {"tier": "gold"}} == to_platform(mapping, stripe)
    pushed = to_provider(mapping, {"id": "cust-1", "metadata": {"platform_id": "forged", "tier": "gold"}})
    assert {"metadata": {"platform_id": "cust-1", "tier": "gold"}} == pushed


def test_records_are_never_changed() -> None:
    """Neither function changes its argument, and outputs share nothing with it."""
    mapping = effective_mapping("stripe", "customers")
    record = {"id": "c1", "metadata": {"tier": "gold", "nested": {"a": [1]}}, "first_name": "Ada"}
    frozen = copy.deepcopy(record)
    out = to_provider(mapping, record)
    out["metadata"]["nested"]["a"].append(2)
    assert frozen == record
    back = to_platform(mapping, out)
    back["metadata"]["tier"] = "lead"
    assert "gold" == out["metadata"]["tier"]


def test_bad_values_fail_naming_the_field() -> None:
    """A bad value in a built-in mapping raises one line naming the platform field."""
    mapping = effective_mapping("square", "customers")
    with pytest.raises(ValidationError) as caught:
        to_platform(mapping, {"phone_number": "call me", "email_address": "a@example.com"})
    assert str(caught.value).startswith("phone: not a phone number")


def test_output_is_json() -> None:
    """What the mapping produces serialises as JSON (no Decimal, no datetime)."""
    mapping = effective_mapping("quickbooks", "invoices")
    record = {
        "lines": [
            {
                "amount": {"amount_minor": 1999, "currency": "USD"},
                "quantity": "2",
                "unit_price": {"amount_minor": 1000, "currency": "USD"},
            }
        ],
        "customer_external_id": "3",
        "issue_date": "2024-01-02",
    }
    json.dumps(to_provider(mapping, record))


def test_mapping_is_fast_enough_to_run_per_record() -> None:
    """A customer maps both ways well within a millisecond (measured over 2,000 records)."""
    mapping = effective_mapping("stripe", "customers")
    record = {
        "id": "cust-1",
        "email": "ada@example.com",
        "first_name": "Ada",
        "last_name": "Lovelace",
        "phone": "+442071838750",
        "company": "Analytical Engines",
        "address": {"line1": "1 Main St", "city": "London", "postal_code": "N1", "country": "GB"},
        "metadata": {"tier": "gold"},
    }
    started = time.perf_counter()
    for _ in range(2000):
        to_platform(mapping, to_provider(mapping, record))
    per_record_s = (time.perf_counter() - started) / 2000
    assert per_record_s < 0.001, f"{per_record_s * 1e6:.0f} µs per round trip"


def test_the_engine_loads_no_io_library() -> None:
    """Importing service.mapping (and its built-in documents) pulls in no I/O library."""
    import subprocess
    import sys

    code = (
        "import sys, service.mapping as m; m.builtin_mapping('stripe', 'customers');"
        "print(sorted({n.split('.')[0] for n in sys.modules} & "
        "{'aiohttp', 'asyncpg', 'aio_pika', 'boto3', 'providers', 'consumers', 'stripe', 'click'}))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    assert "[]" == result.stdout.strip()
