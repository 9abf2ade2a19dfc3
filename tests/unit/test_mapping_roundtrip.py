"""Properties: a customer survives platform -> provider -> platform for each provider's fields."""

from __future__ import annotations

import json
from typing import Any

import phonenumbers
import pycountry
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from service.entities import Customer
from service.mapping import effective_mapping, to_platform, to_provider
from service.mapping.paths import MISSING
from service.mapping.transforms import currency_exponent, join_name, split_name

# The fields each provider can hold (CONTRACT section 4; see service/builtin_mappings.py).
HELD = {
    ("stripe", "customers"): (
        "id",
        "email",
        "first_name",
        "last_name",
        "phone",
        "company",
        "address",
        "metadata",
    ),
    ("square", "customers"): ("id", "email", "first_name", "last_name", "phone", "company", "address"),
    ("quickbooks", "customers"): ("email", "first_name", "last_name", "phone", "company", "address"),
    ("mailchimp", "contacts"): (
        "email",
        "first_name",
        "last_name",
        "phone",
        "address",
        "tags",
        "marketing_consent",
    ),
}


def _example_phones() -> list[str]:
    numbers = set()
    for region in sorted(phonenumbers.SUPPORTED_REGIONS):
        for kind in (phonenumbers.PhoneNumberType.MOBILE, phonenumbers.PhoneNumberType.FIXED_LINE):
            example = phonenumbers.example_number_for_type(region, kind)
            if example is not None:
                numbers.add(phonenumbers.format_number(example, phonenumbers.PhoneNumberFormat.E164))
    return sorted(numbers)


PHONES = _example_phones()
COUNTRIES = sorted(country.alpha_2 for country in pycountry.countries)

# Any printable text without surrounding whitespace: names and places people type.
text = (
    st.text(st.characters(blacklist_categories=("Cs", "Cc")), min_size=1, max_size=30)
    .map(str.strip)
    .filter(bool)
)
first_names = text.filter(lambda s: "," not in s)
optional = lambda strategy: st.none() | strategy  # noqa: E731

addresses = st.builds(
    dict,
    line1=optional(text),
    line2=optional(text),
    city=optional(text),
    region=optional(text),
    postal_code=optional(st.from_regex(r"[A-Z0-9]{2,5}( [A-Z0-9]{3})?", fullmatch=True)),
    country=optional(st.sampled_from(COUNTRIES)),
)
metadata = st.dictionaries(
    st.from_regex(r"[a-z][a-z0-9_]{0,19}", fullmatch=True).filter(
        lambda k: k not in ("platform_id", "company")
    ),
    text,
    max_size=5,
)
customers = st.builds(
    dict,
    id=optional(st.from_regex(r"cust-[a-z0-9]{1,12}", fullmatch=True)),
    email=optional(st.from_regex(r"[a-z0-9][a-z0-9._+-]{0,15}@[a-z0-9-]{1,12}\.[a-z]{2,6}", fullmatch=True)),
    first_name=optional(first_names),
    last_name=optional(text),
    phone=optional(st.sampled_from(PHONES)),
    company=optional(text),
    address=optional(addresses),
    tags=st.lists(text, max_size=4, unique=True),
    marketing_consent=optional(st.booleans()),
    metadata=metadata,
)


def _held(customer: Customer, fields: tuple[str, ...]) -> dict[str, Any]:
    shown = customer.model_dump(mode="json")
    if shown["address"] is not None and all(v is None for v in shown["address"].values()):
        shown["address"] = None  # an address with nothing in it is no address
    return {name: shown[name] for name in fields}


def _round_trip(provider: str, entity: str, record: dict[str, Any]) -> None:
    original = Customer.model_validate(record)
    mapping = effective_mapping(provider, entity)
    sent = to_provider(mapping, original.model_dump(mode="json", exclude_none=True))
    wire = json.loads(json.dumps(sent))  # what the provider stores and answers with
    back = Customer.model_validate(to_platform(mapping, wire))
    fields = HELD[(provider, entity)]
    assert _held(original, fields) == _held(back, fields)


PROPERTY = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@PROPERTY
@given(customers)
def test_stripe_customer_round_trips(record: dict[str, Any]) -> None:
    """Stripe keeps id (metadata.platform_id), names (one name), company (metadata), address, metadata."""
    _round_trip("stripe", "customers", record)


@PROPERTY
@given(customers)
def test_square_customer_round_trips(record: dict[str, Any]) -> None:
    """Square keeps id (reference_id), names, email, phone, company and address."""
    _round_trip("square", "customers", record)


@PROPERTY
@given(customers)
def test_quickbooks_customer_round_trips(record: dict[str, Any]) -> None:
    """QuickBooks keeps names, email, phone, company and the billing address."""
    _round_trip("quickbooks", "customers", record)


@PROPERTY
@given(customers.filter(lambda record: record["email"] is not None))
def test_mailchimp_contact_round_trips(record: dict[str, Any]) -> None:
    """Mailchimp keeps email (required: the member's key), names, phone, address, tags, consent."""
    _round_trip("mailchimp", "contacts", record)


@settings(max_examples=300, deadline=None)
@given(optional(first_names), optional(text))
def test_split_name_inverts_join_name(first: str | None, last: str | None) -> None:
    """split_name(join_name(first, last)) gives back both parts for any comma-free first name."""
    joined = join_name(MISSING if first is None else first, MISSING if last is None else last, "name")
    if first is None and last is None:
        assert joined is None
    else:
        assert (first, last) == split_name(joined, "name")


CURRENCIES = ("USD", "EUR", "GBP", "JPY", "KRW", "KWD", "BHD", "CLF", "INR")


@settings(max_examples=300, deadline=None)
@given(st.integers(min_value=-(10**12), max_value=10**12), st.sampled_from(CURRENCIES))
def test_minor_units_round_trip_through_major_units(amount_minor: int, currency: str) -> None:
    """Minor units pushed as a major-unit JSON number come back the same, for every exponent."""
    mapping = effective_mapping("quickbooks", "payments")
    platform = {"customer_external_id": "1", "amount": {"amount_minor": amount_minor, "currency": currency}}
    wire = json.loads(json.dumps(to_provider(mapping, platform)))
    if currency_exponent(currency) == 0:
        assert isinstance(wire["TotalAmt"], int)
    assert platform["amount"] == to_platform(mapping, wire)["amount"]
