"""`integration-service asyncapi`: print (or write) the AsyncAPI document of CONTRACT section 3."""

from __future__ import annotations

from pathlib import Path

import click

from service.cli import CommandError


@click.command()
@click.option("--output", "-o", type=click.Path(dir_okay=False, path_type=Path),
              help="Write the document to this file instead of stdout.")
def asyncapi(output: Path | None) -> None:
    """Print the AsyncAPI 3.0 JSON document generated from the message and entity models."""
    from service.asyncapi import render_document

    text = render_document()
    if output is None:
        click.echo(text, nl=False)
        return
    try:
        output.write_text(text, encoding="utf-8")
    except OSError as exc:
        raise CommandError(f"cannot write {output}: {exc.strerror or exc}", 1) from None


COMMANDS = [asyncapi]
