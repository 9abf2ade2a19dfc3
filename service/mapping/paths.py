"""Dot paths into JSON-like records: parse, read, write. Pure and small on purpose.

``a.b`` walks objects, ``items[]`` fans out over each element of a list (reads return an
``Each`` of per-element values), and a number indexes a list (``LinkedTxn.0``).
"""

from __future__ import annotations

import re
import types
import typing
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel


class _Missing:
    """The absence of a value (absent key, null or empty string)."""

    _instance: _Missing | None = None

    def __new__(cls) -> _Missing:
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __repr__(self) -> str:
        return "MISSING"

    def __bool__(self) -> bool:
        return False


MISSING: Any = _Missing()


class Each(list[Any]):
    """Per-element values read through a ``[]`` segment, in list order."""


@dataclass(frozen=True, slots=True)
class Segment:
    name: str
    each: bool = False
    index: int | None = None


Path = tuple[Segment, ...]
_NAME = re.compile(r"^[^.\[\]\s]+$")


def parse(text: str) -> Path:
    """Parse a dot path; raises ValueError saying what is wrong."""
    if not text:
        raise ValueError("empty path")
    segments: list[Segment] = []
    for part in text.split("."):
        each = part.endswith("[]")
        name = part[:-2] if each else part
        if not name:
            raise ValueError("empty segment")
        if not _NAME.match(name):
            raise ValueError(f'bad segment "{part}"')
        if name.isdigit():
            if each or not segments:
                raise ValueError(f'bad segment "{part}"')
            segments.append(Segment(name, index=int(name)))
        else:
            segments.append(Segment(name, each=each))
    path = tuple(segments)
    if each_count(path) > 1:
        raise ValueError("at most one [] per path")
    return path


def each_count(path: Path) -> int:
    return sum(1 for segment in path if segment.each)


def show(path: Path, index: int | None = None) -> str:
    """The path as text, with the element index in place of ``[]`` when known."""
    parts = []
    for segment in path:
        if segment.each:
            parts.append(f"{segment.name}[{'' if index is None else index}]")
        else:
            parts.append(segment.name)
    return ".".join(parts)


def _present(value: Any) -> Any:
    return MISSING if value is None or value == "" else value


def _step(current: Any, segment: Segment) -> Any:
    if segment.index is not None:
        if isinstance(current, list) and segment.index < len(current):
            return _present(current[segment.index])
        return MISSING
    if isinstance(current, dict):
        return _present(current.get(segment.name))
    return MISSING


def read(record: Any, path: Path) -> Any:
    """The value at ``path``: MISSING, a value, or an Each for a ``[]`` path."""
    current = record
    for position, segment in enumerate(path):
        current = _step(current, segment)
        if current is MISSING:
            return MISSING
        if segment.each:
            if not isinstance(current, list):
                return MISSING
            rest = path[position + 1:]
            return Each(read(item, rest) if rest else _present(item) for item in current)
    return current


def list_length(record: Any, path: Path) -> int:
    """How many elements the list at the ``[]`` segment of ``path`` has (0 when none)."""
    prefix: list[Segment] = []
    for segment in path:
        if segment.each:
            value = read(record, (*prefix, Segment(segment.name)))
            return len(value) if isinstance(value, list) else 0
        prefix.append(segment)
    return 0


def clone(value: Any) -> Any:
    """A copy of a JSON-like value that shares no list or dict with the original."""
    if isinstance(value, dict):
        return {key: clone(item) for key, item in value.items()}
    if isinstance(value, list):
        return [clone(item) for item in value]
    return value


def _container_for(segment: Segment) -> Any:
    return [] if segment.index is not None else {}


def _slot(container: Any, segment: Segment, make: Any) -> Any:
    """The child container at ``segment``, created (or replaced, if not one) as needed."""
    kind = type(make)
    if segment.index is not None:
        while len(container) <= segment.index:
            container.append(None)
        if not isinstance(container[segment.index], kind):
            container[segment.index] = make
        return container[segment.index]
    if not isinstance(container.get(segment.name), kind):
        container[segment.name] = make
    return container[segment.name]


def _assign(container: Any, segment: Segment, value: Any) -> None:
    """Set a leaf; an object written over an object keeps the keys already there."""
    value = clone(value)
    if segment.index is not None:
        while len(container) <= segment.index:
            container.append(None)
        container[segment.index] = value
        return
    existing = container.get(segment.name)
    if isinstance(existing, dict) and isinstance(value, dict):
        value.update(existing)  # entries that map a sub-path more precisely win
    container[segment.name] = value


def write(record: Any, path: Path, value: Any) -> None:
    """Write ``value`` (an Each for a ``[]`` path) at ``path``, creating what is missing."""
    segment, rest = path[0], path[1:]
    if segment.each and not rest:  # a list of plain values: the present ones, in order
        _assign(record, Segment(segment.name), [item for item in value if item is not MISSING])
        return
    if segment.each:
        items = _slot(record, Segment(segment.name), [])
        while len(items) < len(value):
            items.append(_container_for(rest[0]))
        for position, item in enumerate(value):
            if item is MISSING:
                continue
            if not isinstance(items[position], dict | list):
                items[position] = _container_for(rest[0])
            write(items[position], rest, item)
        return
    if not rest:
        _assign(record, segment, value)
        return
    write(_slot(record, segment, _container_for(rest[0])), rest, value)


def without(value: Any, excluded: tuple[Path, ...]) -> Any:
    """A copy of an object value without the sub-paths other entries map."""
    if not isinstance(value, dict):
        return value
    result = clone(value)
    for path in excluded:
        _remove(result, path)
    return result if result else MISSING


def _remove(record: Any, path: Path) -> None:
    current = record
    for segment in path[:-1]:
        current = _step(current, segment)
        if current is MISSING:
            return
    last = path[-1]
    if isinstance(current, dict):
        current.pop(last.name, None)


# ---------------------------------------------------------------- checking against models


def model_path_problem(path: Path, model: type[BaseModel]) -> str | None:
    """Why ``path`` is not a field of ``model`` (None when it is)."""
    annotation: Any = model
    for position, segment in enumerate(path):
        annotation = _unwrap_optional(annotation)
        if _is_open_object(annotation):
            return None  # metadata: any key goes
        if segment.index is not None:
            return f'"{segment.name}": index only a list'
        if not (isinstance(annotation, type) and issubclass(annotation, BaseModel)):
            return f'"{show(path[:position])}" has no fields'
        info = annotation.model_fields.get(segment.name)
        if info is None:
            return f'no field "{segment.name}" in {annotation.__name__}'
        annotation = _unwrap_optional(info.annotation)
        is_list = typing.get_origin(annotation) is list
        if segment.each != is_list and segment.each:
            return f'"{segment.name}" is not a list'
        if segment.each:
            annotation = typing.get_args(annotation)[0]
    return None


def _unwrap_optional(annotation: Any) -> Any:
    origin = typing.get_origin(annotation)
    if origin is typing.Union or origin is types.UnionType:
        others = [arg for arg in typing.get_args(annotation) if arg is not type(None)]
        return others[0] if len(others) == 1 else annotation
    if origin is typing.Annotated:
        return _unwrap_optional(typing.get_args(annotation)[0])
    return annotation


def _is_open_object(annotation: Any) -> bool:
    return typing.get_origin(annotation) is dict or annotation is dict


def prune_lone(record: Any, path: Path) -> None:
    """Drop the object holding the value at ``path`` where that value is all it holds.

    A currency copied into every line's ``amount``, or read for a total the record lacks,
    must not leave a bare ``{"currency": ...}`` behind.
    """
    position = next((i for i, segment in enumerate(path) if segment.each), None)
    if position is None:
        _prune_in(record, path)
        return
    items = read(record, (*path[:position], Segment(path[position].name)))
    if isinstance(items, list):
        for item in items:
            _prune_in(item, path[position + 1:])


def _prune_in(record: Any, path: Path) -> None:
    if len(path) < 2:
        return  # the value sits in the record or element itself: nothing to drop
    parent_path, leaf = path[:-1], path[-1]
    parent = read(record, parent_path)
    if isinstance(parent, dict) and set(parent) == {leaf.name}:
        holder = read(record, parent_path[:-1]) if len(parent_path) > 1 else record
        if isinstance(holder, dict):
            holder.pop(parent_path[-1].name, None)
