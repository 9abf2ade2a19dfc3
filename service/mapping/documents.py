"""Mapping documents: validation (one line naming the entry) and merging overrides."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from service.errors import ValidationError
from service.mapping import paths
from service.mapping import transforms as tf
from service.mapping.paths import Path

TRANSFORMS: tuple[str, ...] = tf.TRANSFORMS
NAME_TRANSFORMS = ("split_name", "join_name")
ENTRY_KEYS: tuple[str, ...] = ("platform", "provider", "transform", "default", "required", "direction")
ENTRY_DIRECTIONS: tuple[str, ...] = ("both", "push", "pull")


@dataclass(frozen=True, slots=True)
class MappingEntry:
    """One validated entry of a mapping document."""

    platform: str
    provider: str
    transform: str | None = None
    default: Any = None
    required: bool = False
    direction: str = "both"
    platform_path: Path = field(default=(), compare=False, repr=False)
    provider_path: Path = field(default=(), compare=False, repr=False)

    def applies(self, direction: str) -> bool:
        """True when this entry runs for ``direction`` (push or pull)."""
        return self.direction in ("both", direction)

    def as_json(self) -> dict[str, Any]:
        """The entry as a document entry (every key present)."""
        return {"platform": self.platform, "provider": self.provider, "transform": self.transform,
                "default": self.default, "required": self.required, "direction": self.direction}


def validate_document(doc: Any) -> tuple[MappingEntry, ...]:
    """Check a mapping document; raises ValidationError naming the entry index and field."""
    if not isinstance(doc, list):
        raise ValidationError(f"a mapping document is a JSON list of entries, not {_json_type(doc)}")
    entries = tuple(_validate_entry(raw, index) for index, raw in enumerate(doc))
    for index, entry in enumerate(entries):
        _check_name_roles(entry, index)
    return entries


def _json_type(value: Any) -> str:
    names = {dict: "an object", list: "a list", str: "a string", bool: "a boolean", type(None): "null"}
    return names.get(type(value), "a number")


def _validate_entry(raw: Any, index: int) -> MappingEntry:
    if not isinstance(raw, dict):
        raise ValidationError(f"entry {index} is {_json_type(raw)}, not an object")
    for key in raw:
        if key not in ENTRY_KEYS:
            raise ValidationError(f'unknown key "{key}" at entry {index}')
    platform_path = _path_of(raw, "platform", index)
    provider_path = _path_of(raw, "provider", index)
    transform = raw.get("transform")
    if transform is not None and transform not in TRANSFORMS:
        raise ValidationError(f'unknown transform "{transform}" at entry {index}')
    required = raw.get("required", False)
    if not isinstance(required, bool):
        raise ValidationError(f'"required" must be true or false at entry {index}')
    direction = raw.get("direction", "both")
    if direction not in ENTRY_DIRECTIONS:
        raise ValidationError(f'bad direction "{direction}" at entry {index} (both, push or pull)')
    each_platform, each_provider = paths.each_count(platform_path), paths.each_count(provider_path)
    if each_provider > each_platform:
        raise ValidationError(
            f'provider path "{raw["provider"]}" has a [] the platform path lacks at entry {index}')
    if transform in NAME_TRANSFORMS and each_platform:
        raise ValidationError(f"{transform} cannot apply to list elements at entry {index}")
    return MappingEntry(raw["platform"], raw["provider"], transform, raw.get("default"), required,
                        direction, platform_path, provider_path)


def _path_of(raw: dict[str, Any], key: str, index: int) -> Path:
    if key not in raw or raw[key] is None:
        raise ValidationError(f'missing "{key}" at entry {index}')
    text = raw[key]
    if not isinstance(text, str):
        raise ValidationError(f'"{key}" must be a dot path string at entry {index}')
    try:
        return paths.parse(text)
    except ValueError as exc:
        raise ValidationError(f'bad {key} path "{text}" at entry {index}: {exc}') from None


def _check_name_roles(entry: MappingEntry, index: int) -> None:
    if entry.transform == "split_name" and tf.name_role(entry.platform_path) is None:
        raise ValidationError(
            f'split_name needs a platform path ending in a first or last name field at entry {index}')
    if entry.transform == "join_name" and tf.name_role(entry.provider_path) is None:
        raise ValidationError(
            f'join_name needs a provider path ending in a first or last name field at entry {index}')


def check_platform_paths(entries: Iterable[MappingEntry], model: type[Any]) -> None:
    """Refuse a platform path the entity's model does not have; raises ValidationError."""
    for index, entry in enumerate(entries):
        problem = paths.model_path_problem(entry.platform_path, model)
        if problem:
            raise ValidationError(f'platform path "{entry.platform}" at entry {index}: {problem}')


def merge_entries(
    builtin: Sequence[MappingEntry], override: Sequence[MappingEntry]
) -> tuple[MappingEntry, ...]:
    """Override entries replace every built-in entry of their platform path, in its place."""
    by_path: dict[str, list[MappingEntry]] = {}
    for entry in override:
        by_path.setdefault(entry.platform, []).append(entry)
    merged: list[MappingEntry] = []
    placed: set[str] = set()
    for entry in builtin:
        if entry.platform not in by_path:
            merged.append(entry)
        elif entry.platform not in placed:
            merged.extend(by_path[entry.platform])
            placed.add(entry.platform)
    merged.extend(e for e in override if e.platform not in placed)
    return tuple(merged)
