"""Mapping documents: validation errors, override merging and the effective mapping."""

from __future__ import annotations

from typing import Any

import pytest

from service.builtin_mappings import BUILTIN_MAPPINGS
from service.entities import ENTITY_MODELS
from service.errors import UnknownEntityError, ValidationError
from service.mapping import (
    TRANSFORMS,
    builtin_mapping,
    check_platform_paths,
    effective_mapping,
    merge_entries,
    to_platform,
    to_provider,
    validate_document,
)

EXPECTED_TRANSFORMS = (
    "lower",
    "upper",
    "strip",
    "e164",
    "iso_country",
    "minor_units",
    "major_units",
    "split_name",
    "join_name",
    "bool",
    "date",
    "datetime",
)


def test_the_transform_set_is_exactly_the_contracts() -> None:
    """Exactly the twelve named transforms exist."""
    assert EXPECTED_TRANSFORMS == TRANSFORMS


@pytest.mark.parametrize(
    ("doc", "message"),
    [
        ({"platform": "email"}, "a mapping document is a JSON list of entries, not an object"),
        (["email"], "entry 0 is a string, not an object"),
        ([{"provider": "email"}], 'missing "platform" at entry 0'),
        (
            [{"platform": "email", "provider": "email"}, {"platform": "phone"}],
            'missing "provider" at entry 1',
        ),
        (
            [
                {"platform": "email", "provider": "e"},
                {"platform": "email", "provider": "e"},
                {"platform": "email", "provider": "e", "transform": "foo"},
            ],
            'unknown transform "foo" at entry 2',
        ),
        (
            [{"platform": "email", "provider": "e", "transform": "eval"}],
            'unknown transform "eval" at entry 0',
        ),
        (
            [{"platform": "email", "provider": "e", "direction": "sideways"}],
            'bad direction "sideways" at entry 0',
        ),
        (
            [{"platform": "email", "provider": "e", "required": "yes"}],
            '"required" must be true or false at entry 0',
        ),
        ([{"platform": "email", "provider": "e", "code": "import os"}], 'unknown key "code" at entry 0'),
        ([{"platform": "a..b", "provider": "e"}], 'bad platform path "a..b" at entry 0: empty segment'),
        ([{"platform": "email", "provider": 5}], '"provider" must be a dot path string at entry 0'),
        ([{"platform": "a[].b[].c", "provider": "e"}], "at most one [] per path"),
        ([{"platform": "tags", "provider": "tags[].name"}], "has a [] the platform path lacks at entry 0"),
        (
            [{"platform": "company", "provider": "name", "transform": "split_name"}],
            "split_name needs a platform path ending in a first or last name field at entry 0",
        ),
        (
            [{"platform": "first_name", "provider": "name", "transform": "join_name"}],
            "join_name needs a provider path ending in a first or last name field at entry 0",
        ),
    ],
)
def test_validate_document_errors_name_entry_and_field(doc: Any, message: str) -> None:
    """Each refusal is one line naming the entry index and what is wrong with it."""
    with pytest.raises(ValidationError) as caught:
        validate_document(doc)
    assert message in str(caught.value)
    assert "\n" not in str(caught.value)


def test_validate_document_fills_defaults() -> None:
    """transform null, default null, required false and direction both when left out."""
    (entry,) = validate_document([{"platform": "email", "provider": "email_address"}])
    assert {
        "platform": "email",
        "provider": "email_address",
        "transform": None,
        "default": None,
        "required": False,
        "direction": "both",
    } == entry.as_json()


def test_every_builtin_document_is_valid_for_its_model() -> None:
    """Every built-in document validates and names only fields of its platform shape."""
    assert set(ENTITY_MODELS) == set(BUILTIN_MAPPINGS)
    for key, document in BUILTIN_MAPPINGS.items():
        entries = validate_document(document)
        check_platform_paths(entries, ENTITY_MODELS[key])
        assert entries == builtin_mapping(*key).entries


def test_check_platform_paths_refuses_fields_the_shape_lacks() -> None:
    """A platform path outside the entity's model is refused, naming it."""
    with pytest.raises(ValidationError) as caught:
        effective_mapping("square", "customers", [{"platform": "emial", "provider": "email_address"}])
    assert 'platform path "emial" at entry 0: no field "emial" in Customer' == str(caught.value)
    with pytest.raises(ValidationError, match='"email" is not a list'):
        effective_mapping("square", "customers", [{"platform": "email[]", "provider": "x[]"}])
    effective_mapping("stripe", "customers", [{"platform": "metadata.anything.deep", "provider": "x"}])


def test_effective_mapping_refuses_unknown_provider_or_entity() -> None:
    """An unknown provider or entity raises UnknownEntityError."""
    with pytest.raises(UnknownEntityError, match='unknown entity "widgets"'):
        effective_mapping("square", "widgets", None)
    with pytest.raises(UnknownEntityError, match='unknown provider "paypal"'):
        effective_mapping("paypal", "customers", [])


def test_without_override_the_builtin_mapping_is_used() -> None:
    """None or an empty override gives the built-in mapping itself."""
    assert builtin_mapping("square", "customers") is effective_mapping("square", "customers", None)
    assert builtin_mapping("square", "customers") is effective_mapping("square", "customers", [])


def test_override_replaces_the_entry_with_the_same_platform_path_in_place() -> None:
    """An override entry takes the built-in entry's place; new paths are appended."""
    override = [
        {"platform": "company", "provider": "note"},
        {"platform": "metadata.source", "provider": "reference_id", "direction": "pull"},
    ]
    mapping = effective_mapping("square", "customers", override)
    builtin = builtin_mapping("square", "customers").entries
    platforms = [entry.platform for entry in mapping.entries]
    assert [entry.platform for entry in builtin] + ["metadata.source"] == platforms
    company = next(entry for entry in mapping.entries if entry.platform == "company")
    assert "note" == company.provider
    record = to_provider(mapping, {"company": "Acme", "email": "a@example.com"})
    assert {"note": "Acme", "email_address": "a@example.com"} == record


def test_override_replaces_every_builtin_entry_of_a_path() -> None:
    """QuickBooks maps first_name twice (GivenName, DisplayName); one override entry replaces both."""
    builtin = builtin_mapping("quickbooks", "customers").entries
    assert 2 == sum(1 for entry in builtin if entry.platform == "first_name")
    override = validate_document([{"platform": "first_name", "provider": "Title"}])
    merged = merge_entries(builtin, override)
    assert [override[0]] == [entry for entry in merged if entry.platform == "first_name"]
    assert len(builtin) - 1 == len(merged)


def test_override_can_make_a_field_required_or_defaulted() -> None:
    """Overrides change required and default, and the mapping then enforces them."""
    mapping = effective_mapping(
        "square",
        "customers",
        [
            {"platform": "email", "provider": "email_address", "required": True},
            {"platform": "company", "provider": "company_name", "default": "Walk-in"},
        ],
    )
    with pytest.raises(ValidationError, match="missing required field email"):
        to_provider(mapping, {"first_name": "Ada"})
    assert {"email": "a@example.com", "company": "Walk-in"} == to_platform(
        mapping, {"email_address": "a@example.com"}
    )


def test_mapping_as_json_round_trips_through_validate_document() -> None:
    """What `mappings show` prints is itself a valid document giving the same mapping."""
    for key in BUILTIN_MAPPINGS:
        shown = builtin_mapping(*key).as_json()
        assert builtin_mapping(*key).entries == validate_document(shown)
