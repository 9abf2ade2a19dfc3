"""The local provider sandbox (CONTRACT section 7): Stripe, Square, QuickBooks and Mailchimp.

Engineers: read sandbox/INTERFACE.md first (working rules, git rules, plug-in interface).

Layout: ``core`` (accounts, tokens, limits, faults, calls log, the middleware every
provider call passes through), ``control`` (``/_sandbox/...``), ``server`` (``create_app``,
``serve``), one plug-in per provider (``stripe``, ``square``, ``quickbooks``, ``mailchimp``).
It imports nothing from the service: it is built from providers.md and the providers' docs.

Beyond CONTRACT section 7 (additive, for tests and the demo):

- ``POST /_sandbox/clock`` ``{"advance_seconds": N}`` moves sandbox time (token expiry,
  Stripe's 30-day event window, incremental cursors); ``POST /_sandbox/reset`` resets it.
- ``GET /_sandbox/faults`` lists faults with how often each ``fired``; ``GET
  /_sandbox/accounts``; ``GET /_sandbox/calls`` also filters on ``account``.
- Calls log entries carry ``fault`` (null, ``"status"`` or ``"timeout"``); a ``timeout``
  entry's ``status`` is what the handler produced but never sent. The log keeps the last
  500,000 calls.
- A latency fault's wait counts as in flight (a slow provider holds a connection slot).
- Stripe webhooks: ``event`` may be an event object or the id of one the account recorded;
  ``timestamp`` overrides ``t``. Stripe test cards: ``pm_card_chargeDeclined`` /
  ``tok_chargeDeclined`` decline with 402; any other payment method succeeds.
- Mailchimp OAuth: the authorization code is the account's registered ``oauth.code``
  (single use). Mailchimp tokens never expire, whatever SANDBOX_TOKEN_TTL_SECONDS says.

Sandbox choices where the real API is undocumented: Stripe answers 429 without
Retry-After; a Mailchimp body property the resource lacks is a 400 "Invalid Resource"
naming it, and ``count`` over 1000 is a 400 (not clamped), so client mistakes show;
Mailchimp does not GET-check a list webhook's URL on creation.
"""
