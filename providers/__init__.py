"""Provider clients, one module per provider behind one interface (providers/base.py).

``REGISTRY`` maps a provider name to its client class (``"module:Class"``, imported on first
use so that one provider's import cost or failure never touches the others). Adding a fifth
provider is one module plus one line here. Every client is built as ``Client(http,
settings=settings)`` over the process's one shared :class:`providers.http.ProviderHttp`.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from service.errors import UnknownEntityError

if TYPE_CHECKING:
    from providers.base import ProviderClient
    from providers.http import ProviderHttp
    from service.config import Settings

REGISTRY: dict[str, str] = {
    "stripe": "providers.stripe:StripeClient",
    "square": "providers.square:SquareClient",
    "quickbooks": "providers.quickbooks:QuickBooksClient",
    "mailchimp": "providers.mailchimp:MailchimpClient",
}


def client_class(name: str) -> type[Any]:
    """The client class registered for ``name``; raises UnknownEntityError for an unknown one."""
    target = REGISTRY.get(name)
    if target is None:
        raise UnknownEntityError(f"unknown provider {name!r} (one of {', '.join(REGISTRY)})")
    module_name, _, class_name = target.partition(":")
    cls: type[Any] = getattr(importlib.import_module(module_name), class_name)
    return cls


def build_client(name: str, *, settings: Settings, http: ProviderHttp) -> ProviderClient:
    """One provider's client over the shared HTTP helper."""
    client: ProviderClient = client_class(name)(http, settings=settings)
    return client


def build_clients(*, settings: Settings, http: ProviderHttp) -> dict[str, ProviderClient]:
    """Every registered provider's client, keyed by name (lifecycle.build_clients calls this)."""
    return {name: build_client(name, settings=settings, http=http) for name in REGISTRY}
