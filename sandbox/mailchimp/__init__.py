"""Mailchimp Marketing API 3.0 in the sandbox, under ``/mailchimp`` (providers.md section 4)."""

from sandbox.mailchimp.plugin import Plugin

__all__ = ["Plugin"]
