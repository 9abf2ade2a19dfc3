"""`integration-service sandbox`: the local provider sandbox (CONTRACT section 7)."""

from __future__ import annotations

import click

from service.cli import load


@click.command()
@click.option("--port", type=click.IntRange(1, 65535), help="Port to serve on [SANDBOX_PORT, 8090].")
def sandbox(port: int | None) -> None:
    """Run the local provider sandbox (Stripe, Square, QuickBooks, Mailchimp)."""
    settings = load()
    from sandbox.server import serve

    serve(
        host=settings.http_host,
        port=port or settings.sandbox_port,
        token_ttl_seconds=settings.sandbox_token_ttl_seconds,
        square_webhook_signature_key=_secret(settings.square_webhook_signature_key),
        quickbooks_webhook_verifier_token=_secret(settings.quickbooks_webhook_verifier_token),
        clients={
            "square": (settings.square_client_id, _secret(settings.square_client_secret)),
            "quickbooks": (settings.quickbooks_client_id, _secret(settings.quickbooks_client_secret)),
            "mailchimp": (settings.mailchimp_client_id, _secret(settings.mailchimp_client_secret)),
        },
    )


def _secret(value: object) -> str | None:
    return None if value is None else value.get_secret_value()  # type: ignore[attr-defined]


COMMANDS = [sandbox]
