"""`integration-service credentials set/show/delete/rotate`: the vault from the shell.

A secret is read only from a file or stdin, never from argv; `show` never prints one.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import click

from service.cli import CommandError, format_table, load, run_async
from service.config import PROVIDERS
from service.vault import KINDS, Vault

PROVIDER = click.Choice(PROVIDERS)
KIND = click.Choice(KINDS)


def _read_secret(secret_file: Path | None, secret_stdin: bool) -> str:
    if (secret_file is None) == (not secret_stdin):
        raise CommandError("give exactly one of --secret-file or --secret-stdin", 2)
    try:
        raw = secret_file.read_text(encoding="utf-8") if secret_file else sys.stdin.read()
    except OSError as exc:
        # the reason first: "...secret: reason" would read as a secret pair to the log redaction
        raise CommandError(f"{exc.strerror} (--secret-file {secret_file})", 2) from None
    except UnicodeDecodeError:
        raise CommandError("the secret is not UTF-8 text", 2) from None
    secret = raw.rstrip("\r\n")  # a trailing newline from `echo` or an editor is not part of it
    if not secret:
        raise CommandError("the secret is empty", 2)
    return secret


async def _has_refresh_token(vault: Vault, venue: str, provider: str) -> bool:
    """Only an oauth credential with a refresh token is refreshed by `rotate` (CONTRACT 1)."""
    token_set = (await vault.get(venue, provider, "oauth")).oauth()
    return bool(token_set.get("refresh_token"))


@click.group()
def credentials() -> None:
    """Store, inspect, rotate and delete a venue's provider credentials (encrypted)."""


@credentials.command("set")
@click.option("--venue", required=True, help="The venue id.")
@click.option("--provider", required=True, type=PROVIDER)
@click.option("--kind", required=True, type=KIND,
              help="api_key (the key), oauth (JSON token set) or webhook_secret.")
@click.option("--secret-file", type=click.Path(path_type=Path, dir_okay=False),
              help="Read the secret from this file.")
@click.option("--secret-stdin", is_flag=True, help="Read the secret from standard input.")
def set_credential(venue: str, provider: str, kind: str, secret_file: Path | None,
                   secret_stdin: bool) -> None:
    """Store a credential encrypted; an existing one is replaced and its version bumped.

    oauth secrets are JSON: access_token, refresh_token, expires_at (RFC 3339; the last two
    null where the provider has none), plus realm_id (QuickBooks), merchant_id (Square) or
    server_prefix (Mailchimp).
    """
    secret = _read_secret(secret_file, secret_stdin)
    settings = load()

    async def store() -> dict[str, Any]:
        from service.lifecycle import learn_square_merchant, open_vault

        async with open_vault(settings) as vault:
            info = await vault.set(venue, provider, kind, secret)
            if provider == "square" and kind == "api_key":
                info = await learn_square_merchant(settings, vault, info, secret)
            return info.as_json()

    shown = run_async(store())
    click.echo(f"stored {provider} {kind} for {venue}: version {shown['version']}, "
               f"status {shown['status']}")


@credentials.command("show")
@click.option("--venue", help="Only this venue.")
@click.option("--provider", type=PROVIDER, help="Only this provider.")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line.")
def show_credentials(venue: str | None, provider: str | None, as_json: bool) -> None:
    """List credentials' metadata (versions, status, times); never a secret."""
    settings = load()

    async def fetch() -> list[dict[str, Any]]:
        from service.lifecycle import open_vault

        async with open_vault(settings) as vault:
            return [info.as_json() for info in await vault.show(venue, provider)]

    rows = run_async(fetch())
    if not rows and venue is not None:  # a venue is known to a provider by its credentials
        at = f" at {provider}" if provider else ""
        raise CommandError(f"unknown venue {venue!r}{at}: it has no credentials", 2)
    if as_json:
        for row in rows:
            click.echo(json.dumps(row, sort_keys=True))
        return
    if not rows:
        click.echo("no credentials", err=True)
        return
    header = ("VENUE", "PROVIDER", "KIND", "VERSION", "STATUS", "EXPIRES", "LAST USED")
    for line in format_table(header, [
        (r["venue_id"], r["provider"], r["kind"], str(r["version"]), r["status"],
         r["expires_at"] or "-", r["last_used_at"] or "-") for r in rows
    ]):
        click.echo(line)


@credentials.command("delete")
@click.option("--venue", required=True)
@click.option("--provider", required=True, type=PROVIDER)
@click.option("--kind", type=KIND, help="Only this kind; without it, every kind of the provider.")
def delete_credential(venue: str, provider: str, kind: str | None) -> None:
    """Delete credentials for good (the rows, not a flag)."""
    settings = load()

    async def remove() -> int:
        from service.lifecycle import open_vault

        async with open_vault(settings) as vault:
            return await vault.delete(venue, provider, kind)

    count = run_async(remove())
    click.echo(f"deleted {count} credential{'s' if count != 1 else ''} of {venue} at {provider}")


@credentials.command("rotate")
@click.option("--venue", required=True)
@click.option("--provider", required=True, type=PROVIDER)
@click.option("--kind", required=True, type=KIND)
def rotate_credential(venue: str, provider: str, kind: str) -> None:
    """Re-encrypt under a fresh data key and bump the version (oauth: also refresh now)."""
    settings = load()

    async def rotate() -> dict[str, Any]:
        from service.lifecycle import open_vault, refresh_now

        async with open_vault(settings) as vault:
            info = await vault.rotate(venue, provider, kind)
            if kind == "oauth" and await _has_refresh_token(vault, venue, provider):
                info = await refresh_now(settings, vault, info)
            return info.as_json()

    shown = run_async(rotate())
    click.echo(f"rotated {provider} {kind} for {venue}: version {shown['version']}, "
               f"status {shown['status']}")


COMMANDS = [credentials]
