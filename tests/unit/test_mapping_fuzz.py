"""Property: any JSON at all maps to a dict or fails with one ValidationError line, never a crash."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from service.builtin_mappings import BUILTIN_MAPPINGS
from service.errors import ValidationError
from service.mapping import builtin_mapping, to_platform, to_provider

SCALARS = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(10**30), max_value=10**30)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=12)
    | st.sampled_from(
        ["USD", "jpy", "2024-01-01", "2024-01-01T00:00:00Z", "+442071838750", "GB", "subscribed"]
    )
)


def _names(key: tuple[str, str], side: str) -> list[str]:
    found = {"x"}
    for entry in BUILTIN_MAPPINGS[key]:
        found.update(part.removesuffix("[]") for part in entry[side].split("."))
    return sorted(found)


def json_like(names: list[str]) -> Any:
    return st.recursive(
        SCALARS,
        lambda children: (
            st.lists(children, max_size=3) | st.dictionaries(st.sampled_from(names), children, max_size=6)
        ),
        max_leaves=25,
    )


def _maps_or_refuses(function: Any, mapping: Any, record: Any) -> None:
    try:
        result = function(mapping, record)
    except ValidationError as exc:
        assert "\n" not in str(exc)
        return
    assert isinstance(result, dict)


@pytest.mark.parametrize("key", sorted(BUILTIN_MAPPINGS), ids=lambda k: "-".join(k))
def test_any_record_maps_or_fails_cleanly(key: tuple[str, str]) -> None:
    """Random JSON shaped with the mapping's own field names never raises anything but ValidationError."""
    mapping = builtin_mapping(*key)

    @settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(json_like(_names(key, "provider")), json_like(_names(key, "platform")))
    def check(provider_record: Any, platform_record: Any) -> None:
        _maps_or_refuses(to_platform, mapping, provider_record)
        _maps_or_refuses(to_provider, mapping, platform_record)

    check()
