"""Stripe's per-account state: objects by type, newest-first pagination, events, idempotency."""

from __future__ import annotations

import random
import string
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from sandbox.stripe.forms import StripeError, no_such

_ALPHABET = string.ascii_letters + string.digits
EVENT_RETENTION_S = 30 * 86400  # /v1/events shows the last 30 days (providers.md 1.3)
IDEMPOTENCY_RETENTION_S = 24 * 3600  # keys may be pruned after 24 h (providers.md 1.7)


def new_id(prefix: str) -> str:
    return prefix + "".join(random.choices(_ALPHABET, k=24))


class Collection:
    """Objects of one type in creation order; pages read newest first."""

    def __init__(self, kind: str) -> None:
        self.kind = kind  # as in "No such customer: ..."
        self.objects: dict[str, dict[str, Any]] = {}
        self.order: list[str] = []
        self.position: dict[str, int] = {}
        self.deleted: set[str] = set()

    def add(self, obj: dict[str, Any]) -> dict[str, Any]:
        self.position[obj["id"]] = len(self.order)
        self.order.append(obj["id"])
        self.objects[obj["id"]] = obj
        return obj

    def get(self, object_id: str) -> dict[str, Any]:
        obj = self.objects.get(object_id)
        if obj is None:
            raise no_such(self.kind, object_id)
        return obj

    def delete(self, object_id: str) -> None:
        self.get(object_id)
        del self.objects[object_id]
        self.deleted.add(object_id)

    def page(
        self,
        *,
        limit: int,
        starting_after: str | None,
        ending_before: str | None,
        match: Callable[[dict[str, Any]], bool] | None = None,
    ) -> tuple[list[dict[str, Any]], bool]:
        """One page newest first after/before a cursor id, and whether more lie beyond it."""
        if ending_before is not None:
            start, step, stop = self._cursor(ending_before, "ending_before") + 1, 1, len(self.order)
        else:
            start = (
                len(self.order) - 1
                if starting_after is None
                else self._cursor(starting_after, "starting_after") - 1
            )
            step, stop = -1, -1
        found: list[dict[str, Any]] = []
        objects, order = self.objects, self.order
        for i in range(start, stop, step):
            obj = objects.get(order[i])
            if obj is not None and (match is None or match(obj)):
                found.append(obj)
                if len(found) > limit:
                    break
        has_more = len(found) > limit
        found = found[:limit]
        if ending_before is not None:
            found.reverse()
        return found, has_more

    def _cursor(self, object_id: str, param: str) -> int:
        position = self.position.get(object_id)
        if position is None:
            raise no_such(self.kind, object_id, status=400, param=param)
        return position


@dataclass
class IdempotentResult:
    """The first answer for an Idempotency-Key, replayed to every later use."""

    method: str
    path: str
    params: dict[str, Any]
    status: int
    body: bytes
    at: float


@dataclass
class StripeStore:
    """Everything one Stripe account holds."""

    customers: Collection = field(default_factory=lambda: Collection("customer"))
    payment_intents: Collection = field(default_factory=lambda: Collection("payment_intent"))
    charges: Collection = field(default_factory=lambda: Collection("charge"))
    refunds: Collection = field(default_factory=lambda: Collection("refund"))
    balance_transactions: Collection = field(default_factory=lambda: Collection("balance_transaction"))
    events: Collection = field(default_factory=lambda: Collection("event"))
    webhook_endpoints: Collection = field(default_factory=lambda: Collection("webhook_endpoint"))
    idempotency: dict[str, IdempotentResult] = field(default_factory=dict)
    livemode: bool = False

    def emit(
        self,
        type_: str,
        obj: dict[str, Any],
        *,
        now: int,
        request: dict[str, Any],
        previous: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        """Record an Event (as /v1/events and webhooks show it) for a change to ``obj``."""
        data: dict[str, Any] = {"object": _snapshot(obj)}
        if previous:
            data["previous_attributes"] = previous
        return self.events.add(
            {
                "id": new_id("evt_"),
                "object": "event",
                "api_version": API_VERSION,
                "created": now,
                "data": data,
                "livemode": self.livemode,
                "pending_webhooks": 0,
                "request": request,
                "type": type_,
            }
        )


API_VERSION = "2026-06-24.dahlia"  # the version the stripe SDK pins (providers.md 1.1)


def _snapshot(obj: dict[str, Any]) -> dict[str, Any]:
    """A deep-enough copy: nested dicts are copied so later updates don't rewrite history."""
    return {k: (dict(v) if isinstance(v, dict) else v) for k, v in obj.items()}


def store_of(account: Any) -> StripeStore:
    """The account's Stripe store, created on first use."""
    store = account.data.get("stripe")
    if store is None:
        key = account.api_key or ""
        store = account.data["stripe"] = StripeStore(livemode=key.startswith(("sk_live_", "rk_live_")))
    return store  # type: ignore[no-any-return]


def too_old(event: dict[str, Any], now: float) -> bool:
    return bool(event["created"] < now - EVENT_RETENTION_S)


def require(params: dict[str, Any], name: str) -> Any:
    value = params.get(name)
    if value is None or value == "":
        raise StripeError(
            400, message=f"Missing required param: {name}.", code="parameter_missing", param=name
        )
    return value
