"""`integration-service mappings show/set`: a venue's field mapping (CONTRACT section 4).

`set` reads a JSON mapping document from --file or stdin, validates it (entry keys, the
fixed transforms, platform fields of the entity's shape) and stores it as the venue's
override; `show` prints the effective mapping: the built-in one with the override merged.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import click

from service.cli import CommandError, load, run_async
from service.entities import check_supported
from service.mapping import effective_mapping, validate_document


def _venue_options(function: Any) -> Any:
    function = click.option("--entity", required=True, help="The entity id, e.g. customers.")(function)
    function = click.option("--provider", required=True, help="stripe, square, quickbooks or mailchimp.")(
        function)
    return click.option("--venue", required=True, help="The venue id.")(function)


def _read_document(file: Path | None) -> Any:
    where = f"--file {file}" if file else "stdin"
    try:
        text = file.read_text(encoding="utf-8") if file else sys.stdin.read()
    except OSError as exc:
        raise CommandError(f"--file: cannot read {file}: {exc.strerror}", 2) from None
    except UnicodeDecodeError:
        raise CommandError(f"{where}: not UTF-8 text", 2) from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        problem = f"{exc.msg} at line {exc.lineno} column {exc.colno}"
        raise CommandError(f"{where}: not JSON: {problem}", 2) from None


@click.group()
def mappings() -> None:
    """Show or set a venue's field mapping of one provider entity."""


@mappings.command("show")
@_venue_options
def show_mapping(venue: str, provider: str, entity: str) -> None:
    """Print the effective mapping (built-in merged with the venue's override) as JSON."""
    check_supported(provider, entity)
    settings = load()

    async def fetch() -> list[dict[str, Any]] | None:
        from service.database import open_pool
        from service.database.mappings import get_override

        async with open_pool(settings.database_url.get_secret_value(), min_size=1, max_size=1) as pool:
            stored = await get_override(pool, venue, provider, entity)
        return stored.document if stored else None

    mapping = effective_mapping(provider, entity, run_async(fetch()))
    click.echo(json.dumps(mapping.as_json(), indent=2))


@mappings.command("set")
@_venue_options
@click.option("--file", "file", type=click.Path(path_type=Path, dir_okay=False),
              help="Read the mapping document from this file (default: stdin).")
def set_mapping(venue: str, provider: str, entity: str, file: Path | None) -> None:
    """Validate a mapping document (a JSON list of entries) and store it as the override.

    Entries: {"platform": "dot.path", "provider": "dot.path", "transform": name or null,
    "default": any, "required": bool, "direction": "both"/"push"/"pull"}; an entry replaces
    the built-in entries with the same platform path. An empty list restores the built-in.
    """
    check_supported(provider, entity)
    document = _read_document(file)
    entries = validate_document(document)
    effective_mapping(provider, entity, document)  # platform fields checked against the shape
    normalized = [entry.as_json() for entry in entries]
    settings = load()

    async def store() -> int:
        from service.database import open_pool
        from service.database.mappings import put_override

        async with open_pool(settings.database_url.get_secret_value(), min_size=1, max_size=1) as pool:
            stored = await put_override(pool, venue, provider, entity, normalized)
        return stored.version

    version = run_async(store())
    count = len(normalized)
    click.echo(f"stored {provider} {entity} mapping for {venue}: {count} entr{'y' if count == 1 else 'ies'}, "
               f"version {version}")


COMMANDS = [mappings]
