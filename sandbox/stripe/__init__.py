"""Stripe in the sandbox, under ``/stripe`` (providers.md section 1)."""

from sandbox.stripe.plugin import Plugin

__all__ = ["Plugin"]
