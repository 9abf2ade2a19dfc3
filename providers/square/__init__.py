"""Square (providers.md section 2): customers, orders, inventory counts and locations.

``SquareClient`` is the ProviderClient the registry names; ``fetch_merchant_id`` is called
by ``credentials set`` (service/lifecycle.learn_square_merchant); ``SQUARE_VERSION`` is the
one pinned ``Square-Version``.
"""

from providers.square.api import SQUARE_VERSION
from providers.square.client import SquareClient, fetch_merchant_id

__all__ = ["SQUARE_VERSION", "SquareClient", "fetch_merchant_id"]
