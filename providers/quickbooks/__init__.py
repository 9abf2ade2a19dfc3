"""QuickBooks Online (providers.md section 3): customers, invoices, payments, company_info.

``QuickBooksClient`` is the ProviderClient the registry names; ``MINOR_VERSION`` is the one
pinned ``minorversion``.
"""

from providers.quickbooks.api import MINOR_VERSION
from providers.quickbooks.client import QuickBooksClient

__all__ = ["MINOR_VERSION", "QuickBooksClient"]
