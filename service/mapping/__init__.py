"""The field-mapping engine of CONTRACT section 4: pure, no I/O, run once per record.

A mapping document is a JSON list of entries ``{"platform": "dot.path", "provider":
"dot.path", "transform": name | null, "default": any, "required": bool, "direction":
"both" | "push" | "pull"}``. ``to_platform`` applies the ``both``/``pull`` entries to a
provider record, ``to_provider`` the ``both``/``push`` entries to a platform record; each
returns a new dict and never changes its argument. No code is ever read from a mapping: a
transform is one of the fixed names in ``TRANSFORMS``.

Paths. Segments are separated by dots. ``name[]`` means "each element of the list
``name``" (at most one per path); a number indexes a list (``Line[].LinkedTxn.0.TxnId``).
An entry's two paths have the same number of ``[]``, or only the platform path has one:
then the single provider value is copied to every element on pull, and on push the
elements must agree on it. A value that is absent, ``null`` or ``""`` is missing.

Values. ``default`` is in platform form: on push it stands in for a missing platform value
(and is then transformed); on pull it becomes the platform value as is. ``required``
fails the record when the value is still missing. An entry whose provider path holds an
object (``metadata``) leaves out, on pull, the keys that other entries map more precisely
(``metadata.platform_id``); on push the more precise entry wins. Entries may share a
platform path (a name made of two provider fields, or one field per direction). On pull,
a money object left with nothing but its ``currency`` (an amount the record lacks) is
dropped, as is any object holding only a value copied into list elements. When several
entries write one provider field, the later entry in the document wins and a missing value
writes nothing, so a fallback comes before what it stands in for.

Transforms turn a provider value into platform form on pull and back on push:

- ``lower``, ``upper``, ``strip``: the same normalisation both ways (text only).
- ``e164``: a phone number, E.164 both ways (phonenumbers); one without ``+`` is read as
  national to the platform record's ``address.country``.
- ``iso_country``: a country name, alpha-2 or alpha-3 code, to ISO 3166 alpha-2 (pycountry).
- ``minor_units``: a major-unit decimal (``12.5``) on the provider, integer minor units
  (``1250``) on the platform, with the currency's ISO 4217 exponent (JPY 0, USD 2, KWD 3)
  taken from the platform money object's own ``currency`` (the sibling path); rounds half
  up past the exponent. ``major_units`` is its exact inverse.
- ``split_name``: one provider full name, two platform fields; ``join_name``: two provider
  fields, one platform full name. The two fields' roles come from their last path segment
  (``first_name``/``given_name``/``FNAME``/``GivenName``... or ``last_name``/
  ``family_name``/``LNAME``/``FamilyName``...). A full name is written ``"First Last"``
  when the first name is one word without a comma and the last name has no comma, else
  ``"Last, First"``; reading splits at the last comma if there is one, else at the first
  whitespace. So a round trip keeps any pair of names without surrounding whitespace
  whose first name has no comma.
- ``bool``: true/false, 1/0, yes/no, on/off and Mailchimp statuses (subscribed → true;
  unsubscribed, cleaned → false; pending, transactional, archived → unknown) to a bool;
  pushed as ``subscribed``/``unsubscribed`` into a provider field named ``status``
  (Mailchimp's consent), else as true/false.
- ``date``: ``YYYY-MM-DD`` both ways (a date-time keeps its own calendar date; Unix
  seconds are read in UTC). ``datetime``: RFC 3339 UTC (``...Z``) both ways, from ISO 8601
  with any offset (none means UTC) or Unix seconds.

Errors are ``service.errors.ValidationError`` with one line naming the entry (documents)
or the platform field (records), so the engine fails that record alone.
"""

from __future__ import annotations

import copy
import functools
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from service.entities import ENTITY_MODELS, check_supported
from service.errors import ValidationError
from service.mapping import paths
from service.mapping import transforms as tf
from service.mapping.documents import (
    ENTRY_DIRECTIONS,
    ENTRY_KEYS,
    NAME_TRANSFORMS,
    TRANSFORMS,
    MappingEntry,
    check_platform_paths,
    merge_entries,
    validate_document,
)
from service.mapping.paths import MISSING, Each, Path

__all__ = [
    "ENTRY_DIRECTIONS", "ENTRY_KEYS", "TRANSFORMS", "Mapping", "MappingEntry", "builtin_mapping",
    "check_platform_paths", "effective_mapping", "merge_entries", "to_platform", "to_provider",
    "validate_document",
]

_NAME_TRANSFORMS = NAME_TRANSFORMS
_CONTEXT_TRANSFORMS = ("minor_units", "major_units", "e164")
# ---------------------------------------------------------------- compiled mappings


@dataclass(frozen=True, slots=True)
class _Step:
    """One unit of work for one direction: an entry, or a name group of two entries."""

    entry: MappingEntry
    partner: MappingEntry | None = None  # the other half of a split_name / join_name group
    excluded: tuple[Path, ...] = ()      # provider sub-paths other entries map (pull only)
    broadcast: bool = False              # one provider value for every platform list element
    in_list: bool = False                # the platform path has a []


@dataclass(frozen=True)
class Mapping:
    """The effective mapping of one (provider, entity), compiled for both directions."""

    provider: str
    entity: str
    entries: tuple[MappingEntry, ...]
    pull_steps: tuple[_Step, ...] = field(init=False, repr=False, compare=False)
    push_steps: tuple[_Step, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "pull_steps", _compile(self.entries, "pull"))
        object.__setattr__(self, "push_steps", _compile(self.entries, "push"))

    def as_json(self) -> list[dict[str, Any]]:
        """The mapping as a document (what `mappings show` prints)."""
        return [entry.as_json() for entry in self.entries]


def _compile(entries: Sequence[MappingEntry], direction: str) -> tuple[_Step, ...]:
    active = [e for e in entries if e.applies(direction)]
    steps: list[_Step] = []
    grouped: set[int] = set()
    for i, entry in enumerate(active):
        if i in grouped:
            continue
        if entry.transform in _NAME_TRANSFORMS:
            partner_index = _find_partner(active, i)
            if partner_index is not None:
                grouped.add(partner_index)
            partner = active[partner_index] if partner_index is not None else None
            steps.append(_Step(entry, partner))
            continue
        excluded = _excluded_subpaths(active, entry) if direction == "pull" else ()
        steps.append(_Step(entry, None, excluded, _is_broadcast(entry),
                           bool(paths.each_count(entry.platform_path))))
    return tuple(sorted(steps, key=lambda step: _order(step, direction)))


def _find_partner(active: list[MappingEntry], i: int) -> int | None:
    """The other half of a name group: same transform and shared single-field path."""
    entry = active[i]
    shared = "provider_path" if entry.transform == "split_name" else "platform_path"
    for j in range(i + 1, len(active)):
        other = active[j]
        if other.transform == entry.transform and getattr(other, shared) == getattr(entry, shared):
            return j
    return None


def _excluded_subpaths(active: list[MappingEntry], entry: MappingEntry) -> tuple[Path, ...]:
    own = entry.provider_path
    return tuple(
        other.provider_path[len(own):] for other in active
        if other is not entry and len(other.provider_path) > len(own)
        and other.provider_path[:len(own)] == own and not paths.each_count(other.provider_path)
    )


def _order(step: _Step, direction: str) -> tuple[int, int]:
    """Pull: plain values, then copies into list elements, then those needing the record."""
    entry = step.entry
    if direction == "pull":
        phase = 2 if entry.transform in _CONTEXT_TRANSFORMS else 1 if _is_broadcast(entry) else 0
        return phase, len(entry.platform_path)
    return 0, len(entry.provider_path)


def _is_broadcast(entry: MappingEntry) -> bool:
    return paths.each_count(entry.platform_path) > paths.each_count(entry.provider_path)


@functools.cache
def builtin_mapping(provider: str, entity: str) -> Mapping:
    """The compiled built-in mapping of (provider, entity); raises UnknownEntityError."""
    from service.builtin_mappings import BUILTIN_MAPPINGS

    check_supported(provider, entity)
    return Mapping(provider, entity, validate_document(BUILTIN_MAPPINGS[(provider, entity)]))


def effective_mapping(
    provider: str, entity: str, override: list[dict[str, Any]] | None = None
) -> Mapping:
    """The built-in mapping of (provider, entity) merged with a venue's override document.

    Raises UnknownEntityError for an unknown provider or entity, ValidationError for a bad
    override (naming the entry).
    """
    base = builtin_mapping(provider, entity)
    if not override:
        return base
    entries = validate_document(override)
    check_platform_paths(entries, ENTITY_MODELS[(provider, entity)])
    return Mapping(provider, entity, merge_entries(base.entries, entries))


# ---------------------------------------------------------------- applying a mapping


def _as_mapping(mapping: Mapping | Sequence[MappingEntry]) -> Mapping:
    return mapping if isinstance(mapping, Mapping) else Mapping("", "", tuple(mapping))


def to_platform(mapping: Mapping | Sequence[MappingEntry], provider_record: dict[str, Any]) -> dict[str, Any]:
    """Map a provider record to platform shape; raises ValidationError naming the field."""
    compiled = _as_mapping(mapping)
    out: dict[str, Any] = {}
    for step in compiled.pull_steps:
        if step.entry.transform in _NAME_TRANSFORMS:
            _pull_name(step, provider_record, out)
        else:
            _pull_value(step, provider_record, out)
    for step in compiled.pull_steps:
        if step.broadcast or step.entry.platform_path[-1].name == "currency":
            paths.prune_lone(out, step.entry.platform_path)
    return out


def to_provider(mapping: Mapping | Sequence[MappingEntry], platform_record: dict[str, Any]) -> dict[str, Any]:
    """Map a platform record to the provider's fields; raises ValidationError naming the field."""
    compiled = _as_mapping(mapping)
    out: dict[str, Any] = {}
    for step in compiled.push_steps:
        if step.entry.transform in _NAME_TRANSFORMS:
            _push_name(step, platform_record, out)
        else:
            _push_value(step, platform_record, out)
    return out


def _pull_value(step: _Step, source: dict[str, Any], out: dict[str, Any]) -> None:
    entry = step.entry
    value = paths.read(source, entry.provider_path)
    if step.excluded and value is not MISSING:
        value = paths.without(value, step.excluded)
    if step.broadcast:
        count = paths.list_length(out, entry.platform_path)
        if not count:
            return
        value = Each([value] * count)
    convert = _converter(entry, "pull", out)
    result = _each_or_one(step, value, convert, "pull")
    if result is not MISSING:
        paths.write(out, entry.platform_path, result)


def _push_value(step: _Step, source: dict[str, Any], out: dict[str, Any]) -> None:
    entry = step.entry
    value = paths.read(source, entry.platform_path)
    convert = _converter(entry, "push", source)
    result = _each_or_one(step, value, convert, "push")
    if isinstance(result, Each) and step.broadcast:
        result = _collapse(entry, result)
    if result is not MISSING:
        paths.write(out, entry.provider_path, result)


Converter = Callable[[Any, int | None], Any]


def _each_or_one(step: _Step, value: Any, convert: Converter, direction: str) -> Any:
    entry = step.entry
    if isinstance(value, Each):
        return Each([_one(entry, item, convert, direction, i) for i, item in enumerate(value)])
    if value is MISSING and step.in_list:
        return MISSING  # no list at all: no element to fill or require
    return _one(entry, value, convert, direction, None)


def _one(entry: MappingEntry, value: Any, convert: Converter, direction: str, index: int | None) -> Any:
    if value is MISSING and entry.default is not None:
        if direction == "pull":
            return copy.deepcopy(entry.default)
        value = copy.deepcopy(entry.default)
    if value is MISSING:
        if entry.required:
            raise ValidationError(f"missing required field {paths.show(entry.platform_path, index)}")
        return MISSING
    return convert(value, index)


def _converter(entry: MappingEntry, direction: str, platform_record: dict[str, Any]) -> Converter:
    if entry.transform is None:
        return lambda value, index: paths.clone(value)
    context = tf.Context(entry.platform_path, entry.provider_path, platform_record)
    function = tf.pull_function(entry.transform) if direction == "pull" else tf.push_function(entry.transform)
    return lambda value, index: function(value, context.at(index))


def _collapse(entry: MappingEntry, values: Each) -> Any:
    distinct: list[Any] = []
    for value in values:
        if value is not MISSING and value not in distinct:
            distinct.append(value)
    if len(distinct) > 1:
        shown = ", ".join(str(v) for v in distinct[:3])
        raise ValidationError(f"{entry.platform}: list elements disagree ({shown})")
    return distinct[0] if distinct else MISSING


def _name_parts(step: _Step) -> tuple[MappingEntry | None, MappingEntry | None]:
    """(given-name entry, family-name entry) of a name group."""
    side = "platform_path" if step.entry.transform == "split_name" else "provider_path"
    given = family = None
    for member in (step.entry, step.partner):
        if member is None:
            continue
        if tf.name_role(getattr(member, side)) == "given":
            given = member
        else:
            family = member
    return given, family


def _pull_name(step: _Step, source: dict[str, Any], out: dict[str, Any]) -> None:
    given, family = _name_parts(step)
    if step.entry.transform == "split_name":
        full = paths.read(source, step.entry.provider_path)
        field_name = paths.show(step.entry.platform_path)
        parts = tf.split_name(full, field_name) if full is not MISSING else (None, None)
        for member, part in ((given, parts[0]), (family, parts[1])):
            if member is not None:
                _write_name(member, MISSING if part is None else part, out)
        return
    given_value = paths.read(source, given.provider_path) if given else MISSING
    family_value = paths.read(source, family.provider_path) if family else MISSING
    joined = tf.join_name(given_value, family_value, paths.show(step.entry.platform_path))
    _write_name(step.entry, MISSING if joined is None else joined, out)


def _write_name(member: MappingEntry, value: Any, out: dict[str, Any]) -> None:
    value = _one(member, value, lambda v, i: v, "pull", None)
    if value is not MISSING:
        paths.write(out, member.platform_path, value)


def _push_name(step: _Step, source: dict[str, Any], out: dict[str, Any]) -> None:
    given, family = _name_parts(step)
    if step.entry.transform == "split_name":
        values = [_read_pushed(member, source) for member in (given, family)]
        joined = tf.join_name(values[0], values[1], paths.show(step.entry.platform_path))
        if joined is not None:
            paths.write(out, step.entry.provider_path, joined)
        return
    full = _read_pushed(step.entry, source)
    if full is MISSING:
        return
    first, last = tf.split_name(full, paths.show(step.entry.platform_path))
    for member, part in ((given, first), (family, last)):
        if member is not None and part is not None:
            paths.write(out, member.provider_path, part)


def _read_pushed(member: MappingEntry | None, source: dict[str, Any]) -> Any:
    if member is None:
        return MISSING
    value = paths.read(source, member.platform_path)
    return _one(member, value, lambda v, i: v, "push", None)
