"""Every named transform, both ways, and the one-line errors its bad values raise."""

from __future__ import annotations

from typing import Any

import pytest

from service.errors import ValidationError
from service.mapping import effective_mapping, to_platform, to_provider, validate_document
from service.mapping.transforms import currency_exponent, join_name, split_name


def one(platform: str, provider: str, transform: str, **extra: Any) -> tuple[Any, ...]:
    return validate_document([{"platform": platform, "provider": provider, "transform": transform, **extra}])


def pull(entries: Any, record: dict[str, Any]) -> dict[str, Any]:
    return to_platform(entries, record)


def push(entries: Any, record: dict[str, Any]) -> dict[str, Any]:
    return to_provider(entries, record)


def assert_fails(call: Any, *needles: str) -> None:
    with pytest.raises(ValidationError) as caught:
        call()
    message = str(caught.value)
    assert "\n" not in message
    for needle in needles:
        assert needle in message, message


@pytest.mark.parametrize(
    ("transform", "given", "expected"),
    [("lower", "Ada@Example.COM", "ada@example.com"), ("upper", "usd", "USD"), ("strip", "  Ada \t", "Ada")],
)
def test_text_transforms_normalise_both_ways(transform: str, given: str, expected: str) -> None:
    """lower, upper and strip apply the same normalisation on pull and on push."""
    entries = one("email", "mail", transform)
    assert {"email": expected} == pull(entries, {"mail": given})
    assert {"mail": expected} == push(entries, {"email": given})


@pytest.mark.parametrize("transform", ["lower", "upper", "strip"])
def test_text_transforms_refuse_non_text(transform: str) -> None:
    """A number where text belongs fails naming the platform field."""
    assert_fails(lambda: pull(one("company", "name", transform), {"name": 42}), "company: expected text")


@pytest.mark.parametrize(
    ("given", "record", "expected"),
    [
        ("+44 20 7183 8750", {}, "+442071838750"),
        ("(415) 555-0132", {"country": "US"}, "+14155550132"),
        ("020 7183 8750", {"country": "GB"}, "+442071838750"),
    ],
)
def test_e164_reads_international_and_national_numbers(
    given: str, record: dict[str, Any], expected: str
) -> None:
    """e164 formats a number as E.164; one without + is national to the record's country."""
    entries = validate_document(
        [
            {"platform": "address.country", "provider": "country"},
            {"platform": "phone", "provider": "tel", "transform": "e164"},
        ]
    )
    assert expected == pull(entries, {"tel": given, **record})["phone"]
    assert {"tel": expected} == push(entries[1:], {"phone": expected})


@pytest.mark.parametrize("bad", ["not a phone", "+1 23", "555-0132"])
def test_e164_refuses_bad_numbers(bad: str) -> None:
    """A junk, impossible or region-less national number fails naming the field."""
    assert_fails(lambda: pull(one("phone", "tel", "e164"), {"tel": bad}), "phone:", bad)


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("US", "US"),
        ("gb", "GB"),
        ("DEU", "DE"),
        ("Germany", "DE"),
        ("united states", "US"),
        ("UK", "GB"),
        ("Viet Nam", "VN"),
    ],
)
def test_iso_country_reads_codes_and_names(given: str, expected: str) -> None:
    """iso_country turns alpha-2, alpha-3 and names into alpha-2, both ways."""
    entries = one("address.country", "country", "iso_country")
    assert {"address": {"country": expected}} == pull(entries, {"country": given})
    assert {"country": expected} == push(entries, {"address": {"country": given}})


def test_iso_country_refuses_unknown_countries() -> None:
    """An unknown country fails naming the platform field and the value."""
    entries = one("address.country", "country", "iso_country")
    assert_fails(lambda: pull(entries, {"country": "Narnia"}), "address.country:", '"Narnia"')


MONEY = validate_document(
    [
        {"platform": "total.currency", "provider": "Currency"},
        {"platform": "total.amount_minor", "provider": "Amount", "transform": "minor_units"},
    ]
)


@pytest.mark.parametrize(
    ("currency", "major", "minor"),
    [
        ("USD", 12.5, 1250),
        ("USD", "0.1", 10),
        ("JPY", 1250, 1250),
        ("KWD", 1.234, 1234),
        ("EUR", 19.99, 1999),
        ("USD", 0, 0),
        ("USD", 2.005, 201),
    ],
)
def test_minor_units_follow_the_currency_exponent(currency: str, major: Any, minor: int) -> None:
    """minor_units scales by the ISO 4217 exponent (JPY 0, USD 2, KWD 3), half up."""
    platform = pull(MONEY, {"Currency": currency, "Amount": major})
    assert {"total": {"currency": currency, "amount_minor": minor}} == platform


def test_major_units_is_the_inverse_on_push() -> None:
    """Pushing minor units gives the provider a major-unit number (an int for JPY)."""
    assert {"Currency": "USD", "Amount": 12.5} == push(
        MONEY, {"total": {"amount_minor": 1250, "currency": "USD"}}
    )
    assert {"Currency": "JPY", "Amount": 1250} == push(
        MONEY, {"total": {"amount_minor": 1250, "currency": "JPY"}}
    )
    entries = one("fee.amount_minor", "fee_minor", "major_units")
    assert {"fee": {"amount_minor": 12.5, "currency": "USD"}} == pull(
        [*validate_document([{"platform": "fee.currency", "provider": "c"}]), *entries],
        {"fee_minor": 1250, "c": "USD"},
    )
    assert {"fee_minor": 1250} == push(entries, {"fee": {"amount_minor": 12.5, "currency": "USD"}})


def test_currency_exponents() -> None:
    """The exponent table covers the zero- and three-decimal currencies."""
    assert (0, 2, 3, 2) == tuple(currency_exponent(c) for c in ("JPY", "USD", "BHD", "GBP"))


@pytest.mark.parametrize(
    ("record", "needles"),
    [
        ({"Currency": "USD", "Amount": "twelve"}, ("total.amount_minor:", "not a number")),
        ({"Currency": "USD", "Amount": True}, ("total.amount_minor:", "expected a number")),
        ({"Currency": "XYZ", "Amount": 1}, ("total.amount_minor:", 'unknown currency "XYZ"')),
        ({"Amount": 1}, ("total.amount_minor:", "no currency at total.currency")),
    ],
)
def test_minor_units_bad_values(record: dict[str, Any], needles: tuple[str, ...]) -> None:
    """A bad amount or currency fails naming the field."""
    assert_fails(lambda: pull(MONEY, record), *needles)


def test_major_units_refuses_fractional_minor_units() -> None:
    """Pushing 12.5 minor units is a bad value."""
    assert_fails(
        lambda: push(MONEY, {"total": {"amount_minor": 12.5, "currency": "USD"}}),
        "total.amount_minor:",
        "whole minor units",
    )


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        (True, True),
        (False, False),
        ("true", True),
        ("No", False),
        (1, True),
        (0, False),
        ("subscribed", True),
        ("unsubscribed", False),
        ("cleaned", False),
    ],
)
def test_bool_reads_yes_no_words(given: Any, expected: bool) -> None:
    """bool reads booleans, 1/0, yes/no words and Mailchimp statuses."""
    assert {"marketing_consent": expected} == pull(one("marketing_consent", "flag", "bool"), {"flag": given})


def test_bool_treats_pending_as_unknown() -> None:
    """A pending or archived Mailchimp member has no known consent."""
    assert {} == pull(one("marketing_consent", "status", "bool"), {"status": "pending"})


def test_bool_pushes_status_words_only_into_status() -> None:
    """A consent flag becomes subscribed/unsubscribed in a field named status, else a boolean."""
    assert {"status": "subscribed"} == push(
        one("marketing_consent", "status", "bool"), {"marketing_consent": True}
    )
    assert {"status": "unsubscribed"} == push(
        one("marketing_consent", "status", "bool"), {"marketing_consent": False}
    )
    assert {"opted_in": False} == push(
        one("marketing_consent", "opted_in", "bool"), {"marketing_consent": "no"}
    )


def test_bool_refuses_other_words() -> None:
    """maybe is not a yes/no value."""
    assert_fails(
        lambda: pull(one("marketing_consent", "flag", "bool"), {"flag": "maybe"}),
        "marketing_consent:",
        "not a yes/no value",
    )


@pytest.mark.parametrize(
    ("given", "expected"),
    [("2024-02-29", "2024-02-29"), ("2024-02-29T23:30:00-08:00", "2024-02-29"), (1709251200, "2024-03-01")],
)
def test_date(given: Any, expected: str) -> None:
    """date keeps a calendar date; a date-time keeps its own date; Unix seconds are UTC."""
    entries = one("issue_date", "TxnDate", "date")
    assert {"issue_date": expected} == pull(entries, {"TxnDate": given})
    assert {"TxnDate": expected} == push(entries, {"issue_date": expected})


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("2014-09-19T13:16:17-07:00", "2014-09-19T20:16:17Z"),
        ("2024-01-01T00:00:00Z", "2024-01-01T00:00:00Z"),
        ("2009-03-26 21:35:57", "2009-03-26T21:35:57Z"),
        (1700000000, "2023-11-14T22:13:20Z"),
        ("2024-01-01T00:00:00.250+00:00", "2024-01-01T00:00:00.250000Z"),
    ],
)
def test_datetime_is_rfc3339_utc(given: Any, expected: str) -> None:
    """datetime turns ISO 8601 with any offset, naive (UTC) or Unix seconds into RFC 3339 UTC."""
    entries = one("created_at", "created", "datetime")
    assert {"created_at": expected} == pull(entries, {"created": given})
    assert {"created": expected} == push(entries, {"created_at": given})


@pytest.mark.parametrize(
    ("transform", "bad"), [("date", "2024-02-30"), ("date", "soon"), ("datetime", "noon")]
)
def test_dates_refuse_bad_values(transform: str, bad: str) -> None:
    """An impossible or unreadable date fails naming the field."""
    assert_fails(lambda: pull(one("created_at", "created", transform), {"created": bad}), "created_at:", bad)


@pytest.mark.parametrize(
    ("first", "last", "full"),
    [
        ("Ada", "Lovelace", "Ada Lovelace"),
        ("Ada", "King Lovelace", "Ada King Lovelace"),
        ("Mary Ann", "Evans", "Evans, Mary Ann"),
        ("Martin", "King, Jr.", "King, Jr., Martin"),
        ("Ada", None, "Ada"),
        (None, "Lovelace", "Lovelace,"),
    ],
)
def test_split_and_join_name(first: str | None, last: str | None, full: str) -> None:
    """join_name writes "First Last" or "Last, First"; split_name reads either back."""
    from service.mapping.paths import MISSING

    assert full == join_name(first or MISSING, last or MISSING, "name")
    assert (first, last) == split_name(full, "name")


def test_split_name_reads_names_people_typed() -> None:
    """A provider-typed name splits at the first space, or at the comma."""
    assert ("Ada", "Lovelace") == split_name("  Ada   Lovelace ", "name")
    assert ("Ada", "Lovelace") == split_name("Lovelace, Ada", "name")
    assert ("Prince", None) == split_name("Prince", "name")


def test_split_name_on_an_entry_pair() -> None:
    """Two split_name entries share one provider field: first and last by their platform names."""
    entries = validate_document(
        [
            {"platform": "first_name", "provider": "name", "transform": "split_name"},
            {"platform": "last_name", "provider": "name", "transform": "split_name"},
        ]
    )
    assert {"first_name": "Ada", "last_name": "Lovelace"} == pull(entries, {"name": "Ada Lovelace"})
    assert {"name": "Evans, Mary Ann"} == push(entries, {"first_name": "Mary Ann", "last_name": "Evans"})
    assert_fails(lambda: pull(entries, {"name": 7}), "expected text")


def test_join_name_on_an_entry_pair() -> None:
    """Two join_name entries share one platform field: the provider's given and family names."""
    entries = validate_document(
        [
            {"platform": "name", "provider": "GivenName", "transform": "join_name"},
            {"platform": "name", "provider": "FamilyName", "transform": "join_name"},
        ]
    )
    assert {"name": "Ada Lovelace"} == pull(entries, {"GivenName": "Ada", "FamilyName": "Lovelace"})
    assert {"GivenName": "Mary Ann", "FamilyName": "Evans"} == push(entries, {"name": "Evans, Mary Ann"})


def test_builtin_stripe_name_uses_split_name() -> None:
    """The built-in Stripe customer mapping keeps first and last through Stripe's single name."""
    mapping = effective_mapping("stripe", "customers")
    assert "Evans, Mary Ann" == to_provider(mapping, {"first_name": "Mary Ann", "last_name": "Evans"})["name"]


def test_e164_region_comes_from_a_country_name_too() -> None:
    """A national number pushed with the country spelled out still finds its region."""
    mapping = effective_mapping("square", "customers")
    pushed = to_provider(mapping, {"phone": "020 7183 8750", "address": {"country": "United Kingdom"}})
    assert {"phone_number": "+442071838750", "address": {"country": "GB"}} == pushed
