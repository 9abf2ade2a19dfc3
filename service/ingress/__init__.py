"""The webhook ingress (CONTRACT section 6): ``create_app`` builds the aiohttp app.

- ``app``: routes and the verify → publish → confirm pipeline;
- ``body``: the size-limited body reader;
- ``directory``: venue existence and webhook secrets, cached briefly.
"""

from service.ingress.app import INGRESS_KEY, Ingress, IngressConfig, create_app
from service.ingress.directory import TtlCache, VaultDirectory, WebhookDirectory

__all__ = [
    "INGRESS_KEY", "Ingress", "IngressConfig", "TtlCache", "VaultDirectory", "WebhookDirectory",
    "create_app",
]
