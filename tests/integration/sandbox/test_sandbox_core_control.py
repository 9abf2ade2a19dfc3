"""The sandbox's control endpoints: calls log, faults, reset and accounts (CONTRACT section 7)."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import requests
import stripe

from tests.integration.sandbox.stripe_helpers import stripe_account, stripe_client


@pytest.fixture
def faults(sandbox_server: Any) -> Iterator[Any]:
    """Add faults through the control API; all are cleared afterwards."""

    def add(**fault: Any) -> Any:
        return sandbox_server.control("POST", "/_sandbox/faults", {"provider": "stripe", **fault})

    try:
        yield add
    finally:
        sandbox_server.control("DELETE", "/_sandbox/faults")


def _calls(sandbox: Any, account: str) -> list[dict[str, Any]]:
    return sandbox.control("GET", f"/_sandbox/calls?provider=stripe&account={account}")["calls"]  # type: ignore[no-any-return]


def test_calls_log_records_each_call_in_arrival_order(sandbox_server: Any) -> None:
    """Each call is logged with path (no prefix, no query), key, status and a float time."""
    name, key = stripe_account(sandbox_server)
    client = stripe_client(sandbox_server, key)
    started = time.time()
    customer = client.v1.customers.create(
        params={"email": "l@example.com"}, options={"idempotency_key": "k-1"}
    )
    client.v1.customers.list(params={"limit": 2})
    with pytest.raises(stripe.InvalidRequestError):
        client.v1.customers.retrieve("cus_missing")
    calls = _calls(sandbox_server, name)
    assert [
        ("stripe", name, "POST", "/v1/customers", "k-1", 200),
        ("stripe", name, "GET", "/v1/customers", None, 200),
        ("stripe", name, "GET", "/v1/customers/cus_missing", None, 404),
    ] == [
        (c["provider"], c["account"], c["method"], c["path"], c["idempotency_key"], c["status"])
        for c in calls
    ]
    assert all(started - 1 <= c["at"] <= time.time() + 1 for c in calls)
    assert [c["at"] for c in calls] == sorted(c["at"] for c in calls)
    assert customer.id


def test_calls_log_includes_unauthorized_calls(sandbox_server: Any) -> None:
    """A call with an unknown key is logged with no account and status 401."""
    stranger = f"sk_test_{uuid.uuid4().hex}"
    with pytest.raises(stripe.AuthenticationError):
        stripe_client(sandbox_server, stranger).v1.customers.list()
    calls = sandbox_server.control("GET", "/_sandbox/calls?provider=stripe")["calls"]
    assert (None, 401) == (calls[-1]["account"], calls[-1]["status"])


def test_status_fault_answers_before_the_call_takes_effect(sandbox_server: Any, faults: Any) -> None:
    """A 503 fault stores nothing for the idempotency key: the retry creates the customer once."""
    name, key = stripe_account(sandbox_server)
    client = stripe_client(sandbox_server, key)
    faults(account=name, status=503, count=1)
    with pytest.raises(stripe.APIError) as caught:
        client.v1.customers.create(params={"email": "f@example.com"}, options={"idempotency_key": "k-503"})
    assert 503 == caught.value.http_status
    created = client.v1.customers.create(
        params={"email": "f@example.com"}, options={"idempotency_key": "k-503"}
    )
    assert created.last_response.headers.get("Idempotent-Replayed") is None
    assert [created.id] == [c.id for c in client.v1.customers.list().data]
    assert [(503, "status"), (200, None), (200, None)] == [
        (c["status"], c["fault"]) for c in _calls(sandbox_server, name)
    ]


def test_fault_count_rate_path_and_account_scope(sandbox_server: Any, faults: Any) -> None:
    """count limits how often a fault fires; rate 0 never fires; path and account narrow it."""
    name, key = stripe_account(sandbox_server)
    other_name, other_key = stripe_account(sandbox_server)
    faults(account=name, path_prefix="/v1/customers", status=500, count=2)
    faults(account=name, status=502, rate=0.0)
    client = stripe_client(sandbox_server, key)
    outcomes = []
    for _ in range(3):
        try:
            client.v1.customers.list()
            outcomes.append(200)
        except stripe.APIError as error:
            outcomes.append(error.http_status)
    client.v1.events.list()
    stripe_client(sandbox_server, other_key).v1.customers.list()
    assert [500, 500, 200] == outcomes
    assert [200] == [c["status"] for c in _calls(sandbox_server, other_name)]
    listed = sandbox_server.control("GET", "/_sandbox/faults")["faults"]
    assert [2, 0] == [f["fired"] for f in listed]


def test_latency_fault_only_waits(sandbox_server: Any, faults: Any) -> None:
    """A latency fault without status delays the call, which then succeeds."""
    name, key = stripe_account(sandbox_server)
    faults(account=name, latency_ms=300)
    started = time.monotonic()
    stripe_client(sandbox_server, key).v1.customers.list()
    assert time.monotonic() - started >= 0.3


def test_timeout_fault_takes_effect_and_never_answers(sandbox_server: Any, faults: Any) -> None:
    """Under a timeout fault the customer is created but no answer comes: the outcome is unknown."""
    name, key = stripe_account(sandbox_server)
    faults(account=name, status="timeout", count=1)
    with pytest.raises(requests.exceptions.ReadTimeout):
        requests.post(
            f"{sandbox_server.url}/stripe/v1/customers",
            data={"email": "t@example.com"},
            timeout=0.5,
            headers={"Authorization": f"Bearer {key}", "Idempotency-Key": "k-timeout"},
        )
    client = stripe_client(sandbox_server, key)
    [created] = client.v1.customers.list().data
    replay = client.v1.customers.create(
        params={"email": "t@example.com"}, options={"idempotency_key": "k-timeout"}
    )
    assert (created.id, "true") == (replay.id, replay.last_response.headers.get("Idempotent-Replayed"))
    assert (200, "timeout") == (
        _calls(sandbox_server, name)[0]["status"],
        _calls(sandbox_server, name)[0]["fault"],
    )


def test_bad_fault_is_refused(sandbox_server: Any) -> None:
    """A fault with an unknown field or a bad status is a 400."""
    for fault in (
        {"provider": "stripe", "colour": "red"},
        {"provider": "stripe", "status": "slow"},
        {"provider": "nowhere"},
    ):
        answer = requests.post(f"{sandbox_server.url}/_sandbox/faults", json=fault, timeout=5)
        assert 400 == answer.status_code


def test_accounts_are_listed_and_reregistering_keeps_their_data(sandbox_server: Any) -> None:
    """Registering an account again swaps its key but keeps its records."""
    name, key = stripe_account(sandbox_server)
    created = stripe_client(sandbox_server, key).v1.customers.create().id
    new_key = f"sk_live_{uuid.uuid4().hex}"
    sandbox_server.control(
        "POST", "/_sandbox/accounts", {"provider": "stripe", "account": name, "api_key": new_key}
    )
    assert [created] == [c.id for c in stripe_client(sandbox_server, new_key).v1.customers.list().data]
    with pytest.raises(stripe.AuthenticationError):
        stripe_client(sandbox_server, key).v1.customers.list()
    accounts = sandbox_server.control("GET", "/_sandbox/accounts?provider=stripe")["accounts"]
    assert new_key in {a["api_key"] for a in accounts if a["account"] == name}


def test_webhook_sender_refuses_unknown_account(sandbox_server: Any) -> None:
    """Sending a webhook for an account the sandbox does not know is a 404."""
    answer = requests.post(
        f"{sandbox_server.url}/_sandbox/webhooks/stripe",
        timeout=5,
        json={"account": "nobody", "event": {}, "url": "http://127.0.0.1:9/"},
    )
    assert 404 == answer.status_code


def test_reset_empties_accounts_calls_and_faults(sandbox_server: Any) -> None:
    """After a reset the old key is unknown (401) and no call, fault or account is left."""
    _, key = stripe_account(sandbox_server)
    sandbox_server.control("POST", "/_sandbox/faults", {"provider": "stripe", "latency_ms": 1})
    sandbox_server.reset()
    assert ({"accounts": []}, {"faults": []}, {"calls": []}) == (
        sandbox_server.control("GET", "/_sandbox/accounts"),
        sandbox_server.control("GET", "/_sandbox/faults"),
        sandbox_server.control("GET", "/_sandbox/calls"),
    )
    with pytest.raises(stripe.AuthenticationError):
        stripe_client(sandbox_server, key).v1.customers.list()
