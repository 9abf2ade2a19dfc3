"""Crash safety of the real daemon: kill -9 mid-push, SIGTERM mid-push, a flaky provider."""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

import pytest

from service.messages import idempotency_key
from tests.e2e.daemon_process import (
    DaemonProcess,
    customers_at_sandbox,
    job_status,
    module_env,
    query,
    sandbox_env,
    sync_cli,
    wait_until,
)
from tests.e2e.daemon_process import (
    stripe_account as shared_stripe_account,
)

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def env(services: Any, sandbox_server: Any, tmp_path_factory: Any) -> dict[str, str]:
    return sandbox_env(module_env(services, tmp_path_factory.mktemp("crash")), sandbox_server)


def stripe_account(sandbox: Any, env: dict[str, str], venue: str, **fault: Any) -> str:
    """A live-mode Stripe account (100/s) at the sandbox and in the vault, with a fault."""
    return shared_stripe_account(sandbox, env, venue, live=True, **fault)


def publish_push(env: dict[str, str], venue: str, n: int, tmp: Path) -> str:
    records = [
        {"id": f"r{i}", "email": f"r{i}@example.com", "first_name": "R", "last_name": str(i)}
        for i in range(n)
    ]
    path = tmp / f"{venue}.json"
    path.write_text(json.dumps(records))
    job_id = str(uuid.uuid4())
    result = sync_cli(env, venue, "--direction", "push", "--records", str(path), "--job-id", job_id)
    assert 0 == result.returncode and job_id == json.loads(result.stdout)["job_id"], result.stderr
    return job_id


def customer_calls(sandbox: Any, venue: str) -> list[dict[str, Any]]:
    calls = sandbox.control("GET", "/_sandbox/calls?provider=stripe")["calls"]
    return [
        c for c in calls if c["account"] == venue and c["method"] == "POST" and c["path"] == "/v1/customers"
    ]


def finished(database_url: str, job_id: str) -> dict[str, Any] | None:
    row = job_status(database_url, job_id)
    return row if row and row["status"] in ("succeeded", "partial", "failed") else None


def assert_exactly_once(sandbox: Any, key: str, venue: str, job_id: str, n: int) -> None:
    """n objects, one per record, and every successful key made exactly one object."""
    customers = customers_at_sandbox(sandbox, key)
    emails = sorted(c["email"] for c in customers)
    assert sorted(f"r{i}@example.com" for i in range(n)) == emails
    ok_keys = {c["idempotency_key"] for c in customer_calls(sandbox, venue) if c["status"] == 200}
    assert {idempotency_key(job_id, f"r{i}", "create") for i in range(n)} == ok_keys


def test_kill_9_mid_push_then_restart_loses_and_doubles_nothing(
    env: dict[str, str], sandbox_server: Any, services: Any, tmp_path: Path
) -> None:
    """Five times: SIGKILL the daemon during a 300-record push, restart it, count at the sandbox."""
    for loop in range(5):
        venue = f"crash-{loop}-{uuid.uuid4().hex[:8]}"
        key = stripe_account(sandbox_server, env, venue, latency_ms=5)
        first = DaemonProcess(env, tmp_path / f"daemon-{loop}-a.log").start()
        job_id = publish_push(env, venue, 300, tmp_path)
        threshold = 40 + 40 * loop
        wait_until(
            lambda venue=venue, threshold=threshold: len(customer_calls(sandbox_server, venue)) >= threshold,
            timeout=60,
            what=f"{threshold} calls in flight",
        )
        first.kill()
        assert finished(services.database_url, job_id) is None  # it really died mid-job
        second = DaemonProcess(env, tmp_path / f"daemon-{loop}-b.log").start()
        try:
            row = wait_until(
                lambda job_id=job_id: finished(services.database_url, job_id), timeout=90, what="job finished"
            )
        finally:
            assert 0 == second.terminate()
        assert ("succeeded", 300) == (row["status"], row["counts"]["processed"])
        assert_exactly_once(sandbox_server, key, venue, job_id, 300)
        dead = query(
            services.database_url, "SELECT count(*) AS n FROM dead_letters WHERE job_id = $1", job_id
        )
        assert 0 == dead[0]["n"]


def test_sigterm_mid_push_exits_0_and_the_rest_finishes_after_restart(
    env: dict[str, str], sandbox_server: Any, services: Any, tmp_path: Path
) -> None:
    """SIGTERM stops consuming, finishes or hands back in-flight work, exits 0; nothing is lost."""
    venue = f"term-{uuid.uuid4().hex[:8]}"
    key = stripe_account(sandbox_server, env, venue, latency_ms=5)
    first = DaemonProcess(env, tmp_path / "term-a.log").start()
    job_id = publish_push(env, venue, 200, tmp_path)
    wait_until(lambda: len(customer_calls(sandbox_server, venue)) >= 20, timeout=60, what="push in flight")
    assert 0 == first.terminate(timeout=60)
    log = (tmp_path / "term-a.log").read_text()
    assert "daemon_stopped" in log and "Traceback" not in log
    held = query(  # the limiter let go of the accounts it owned: the next daemon need not wait
        services.database_url,
        "SELECT count(*) AS n FROM rate_limit_buckets WHERE owner IS NOT NULL"
        " AND owner_until > extract(epoch FROM clock_timestamp())",
    )
    assert 0 == held[0]["n"]
    if finished(services.database_url, job_id) is None:
        second = DaemonProcess(env, tmp_path / "term-b.log").start()
        try:
            wait_until(lambda: finished(services.database_url, job_id), timeout=90, what="job finished")
        finally:
            assert 0 == second.terminate()
    assert "succeeded" == job_status(services.database_url, job_id)["status"]  # type: ignore[index]
    assert_exactly_once(sandbox_server, key, venue, job_id, 200)


def test_provider_failing_30_percent_still_succeeds_with_original_keys(
    env: dict[str, str], sandbox_server: Any, services: Any, tmp_path: Path
) -> None:
    """A 503 on 30% of calls: the job still succeeds, and every retry reuses its record's key."""
    venue = f"flaky-{uuid.uuid4().hex[:8]}"
    key = stripe_account(sandbox_server, env, venue, status=503, rate=0.3, path_prefix="/v1/customers")
    process = DaemonProcess(env, tmp_path / "flaky.log").start()
    try:
        job_id = publish_push(env, venue, 40, tmp_path)
        row = wait_until(lambda: finished(services.database_url, job_id), timeout=120, what="job finished")
    finally:
        assert 0 == process.terminate()
    assert ("succeeded", 40) == (row["status"], row["counts"]["processed"])
    calls = customer_calls(sandbox_server, venue)
    assert any(c["status"] == 503 for c in calls), "the fault never fired"
    expected = {idempotency_key(job_id, f"r{i}", "create") for i in range(40)}
    assert expected == {c["idempotency_key"] for c in calls}
    sandbox_server.control("DELETE", "/_sandbox/faults")  # our own check must not meet the fault
    assert_exactly_once(sandbox_server, key, venue, job_id, 40)
