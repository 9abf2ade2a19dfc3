"""End to end: the real `integration-service run` and CLI against the sandbox, per provider."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.daemon_process import DaemonProcess, cli, daemon, module_env, sandbox_env, sync_cli

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def env(services: Any, sandbox_server: Any, tmp_path_factory: Any) -> dict[str, str]:
    return sandbox_env(module_env(services, tmp_path_factory.mktemp("e2e")), sandbox_server)


@pytest.fixture(scope="module")
def running(env: dict[str, str], tmp_path_factory: Any) -> Any:
    """One daemon for the module: each test uses its own venue."""
    with daemon(env, tmp_path_factory.mktemp("daemon") / "daemon.log") as process:
        yield process


def store(env: dict[str, str], venue: str, provider: str, kind: str, secret: str) -> None:
    result = cli(
        env,
        "credentials",
        "set",
        "--venue",
        venue,
        "--provider",
        provider,
        "--kind",
        kind,
        "--secret-stdin",
        stdin=secret,
    )
    assert 0 == result.returncode, result.stderr


def sync(
    env: dict[str, str],
    venue: str,
    provider: str,
    entity: str,
    *args: str,
    records: list[dict[str, Any]] | None = None,
    tmp: Path | None = None,
) -> dict[str, Any]:
    extra = list(args)
    if records is not None:
        assert tmp is not None
        path = tmp / f"records-{uuid.uuid4().hex}.json"
        path.write_text(json.dumps(records))
        extra += ["--direction", "push", "--records", str(path)]
    result = sync_cli(env, venue, *extra, "--wait", "--timeout", "90", provider=provider, entity=entity)
    lines = result.stdout.strip().splitlines()
    assert 1 == len(lines), f"stdout must be one line: {result.stdout!r} stderr: {result.stderr}"
    outcome = dict(json.loads(lines[0]))
    assert (0 if outcome["status"] == "succeeded" else 1) == result.returncode  # CONTRACT section 1
    return outcome


def people(prefix: str, n: int) -> list[dict[str, Any]]:
    return [
        {
            "id": f"{prefix}-{i}",
            "email": f"{prefix}{i}@example.com",
            "first_name": f"First{i}",
            "last_name": "Person",
        }
        for i in range(n)
    ]


def test_stripe_push_then_pull(
    env: dict[str, str], running: DaemonProcess, sandbox_server: Any, venue_id: str, tmp_path: Path
) -> None:
    """Stripe: a customer push creates them at the sandbox; a full pull reads them back."""
    key = f"sk_test_{uuid.uuid4().hex}"
    sandbox_server.control(
        "POST", "/_sandbox/accounts", {"provider": "stripe", "account": venue_id, "api_key": key}
    )
    store(env, venue_id, "stripe", "api_key", key)
    pushed = sync(env, venue_id, "stripe", "customers", records=people("s", 3), tmp=tmp_path)
    assert ("succeeded", 3) == (pushed["status"], pushed["counts"]["created"])
    pulled = sync(env, venue_id, "stripe", "customers", "--mode", "full")
    assert ("succeeded", 3) == (pulled["status"], pulled["counts"]["processed"])


def test_sync_wait_exits_1_unless_the_job_succeeded(
    env: dict[str, str], running: DaemonProcess, sandbox_server: Any, venue_id: str, tmp_path: Path
) -> None:
    """`sync --wait` prints the result line whatever it says, and exits 0 only for
    `succeeded`: a job whose every record failed exits 1 (it exited 0)."""
    key = f"sk_test_{uuid.uuid4().hex}"
    sandbox_server.control(
        "POST", "/_sandbox/accounts", {"provider": "stripe", "account": venue_id, "api_key": key}
    )
    store(env, venue_id, "stripe", "api_key", key)
    outcome = sync(env, venue_id, "stripe", "customers", records=[{"email": "no-id@example.com"}], tmp=tmp_path)
    assert ("failed", 1) == (outcome["status"], outcome["counts"]["failed"])  # and sync() saw exit 1


def test_square_push_then_pull(
    env: dict[str, str], running: DaemonProcess, sandbox_server: Any, venue_id: str, tmp_path: Path
) -> None:
    """Square: customers pushed one per request, then pulled."""
    key = f"EAAA{uuid.uuid4().hex}"
    sandbox_server.control(
        "POST", "/_sandbox/accounts", {"provider": "square", "account": venue_id, "api_key": key}
    )
    store(env, venue_id, "square", "api_key", key)
    pushed = sync(env, venue_id, "square", "customers", records=people("q", 2), tmp=tmp_path)
    assert ("succeeded", 2) == (pushed["status"], pushed["counts"]["created"])
    pulled = sync(env, venue_id, "square", "customers", "--mode", "full")
    assert ("succeeded", 2) == (pulled["status"], pulled["counts"]["processed"])
    locations = sync(env, venue_id, "square", "locations", "--mode", "full")
    assert "succeeded" == locations["status"] and locations["counts"]["processed"] >= 1


def test_square_merchant_id_is_learned_on_first_use(
    env: dict[str, str], running: DaemonProcess, sandbox_server: Any, venue_id: str
) -> None:
    """Square away at `credentials set`: the daemon learns the merchant id on first use."""
    key = f"EAAA{uuid.uuid4().hex}"
    sandbox_server.control(
        "POST", "/_sandbox/accounts", {"provider": "square", "account": venue_id, "api_key": key}
    )
    away = {**env, "SQUARE_API_BASE": "http://127.0.0.1:9"}
    store(away, venue_id, "square", "api_key", key)

    def merchant() -> Any:
        shown = cli(env, "credentials", "show", "--venue", venue_id, "--json").stdout.splitlines()
        return json.loads(shown[0]).get("merchant_id")

    assert merchant() is None
    assert "succeeded" == sync(env, venue_id, "square", "locations", "--mode", "full")["status"]
    import urllib.request

    request = urllib.request.Request(
        f"{sandbox_server.url}/square/v2/merchants/me", headers={"Authorization": f"Bearer {key}"}
    )
    with urllib.request.urlopen(request, timeout=10) as reply:
        expected = json.loads(reply.read())["merchant"]["id"]
    assert expected == merchant()


def test_quickbooks_push_then_pull_with_oauth(
    env: dict[str, str], running: DaemonProcess, sandbox_server: Any, venue_id: str, tmp_path: Path
) -> None:
    """QuickBooks: an OAuth credential, a batch push of customers, a pull back."""
    realm = str(uuid.uuid4().int)[:15]
    expires = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
    tokens = {
        "access_token": f"qb-at-{uuid.uuid4().hex}",
        "refresh_token": f"qb-rt-{uuid.uuid4().hex}",
        "expires_at": expires,
        "realm_id": realm,
    }
    sandbox_server.control(
        "POST",
        "/_sandbox/accounts",
        {
            "provider": "quickbooks",
            "account": venue_id,
            "oauth": {
                **tokens,
                "client_id": sandbox_server.quickbooks_client_id,
                "client_secret": sandbox_server.quickbooks_client_secret,
            },
        },
    )
    store(env, venue_id, "quickbooks", "oauth", json.dumps(tokens))
    records = [{**r, "company": f"Company {r['id']}"} for r in people("b", 3)]
    pushed = sync(env, venue_id, "quickbooks", "customers", records=records, tmp=tmp_path)
    assert ("succeeded", 3) == (pushed["status"], pushed["counts"]["created"]), pushed
    pulled = sync(env, venue_id, "quickbooks", "customers", "--mode", "full")
    assert ("succeeded", 3) == (pulled["status"], pulled["counts"]["processed"])
    company = sync(env, venue_id, "quickbooks", "company_info", "--mode", "full")
    assert "succeeded" == company["status"]


def test_mailchimp_lists_and_contacts(
    env: dict[str, str], running: DaemonProcess, sandbox_server: Any, venue_id: str, tmp_path: Path
) -> None:
    """Mailchimp: a list is created, contacts are upserted into it, then both are pulled."""
    key = f"{uuid.uuid4().hex}-us1"
    sandbox_server.control(
        "POST", "/_sandbox/accounts", {"provider": "mailchimp", "account": venue_id, "api_key": key}
    )
    store(env, venue_id, "mailchimp", "api_key", key)
    audience = [
        {
            "id": "list-1",
            "name": "Members",
            "company": "Venue",
            "permission_reminder": "You bought a ticket",
            "from_name": "Venue",
            "from_email": "box@example.com",
            "subject": "News",
            "language": "en",
            "address": {
                "line1": "1 Main St",
                "city": "Springfield",
                "region": "IL",
                "postal_code": "62701",
                "country": "US",
            },
        }
    ]
    created = sync(env, venue_id, "mailchimp", "lists", records=audience, tmp=tmp_path)
    assert "succeeded" == created["status"], created
    lists = sync(env, venue_id, "mailchimp", "lists", "--mode", "full")
    assert 1 == lists["counts"]["processed"]
    rows = cli(env, "jobs", "--venue", venue_id, "--json").stdout.splitlines()
    assert 2 == len(rows)
    list_id = _mailchimp_list_id(sandbox_server, key)
    contacts = [{**r, "tags": ["vip"], "marketing_consent": True} for r in people("m", 3)]
    pushed = sync(
        env,
        venue_id,
        "mailchimp",
        "contacts",
        "--option",
        f"list_id={list_id}",
        records=contacts,
        tmp=tmp_path,
    )
    assert ("succeeded", 3) == (pushed["status"], pushed["counts"]["processed"]), pushed
    pulled = sync(env, venue_id, "mailchimp", "contacts", "--option", f"list_id={list_id}", "--mode", "full")
    assert ("succeeded", 3) == (pulled["status"], pulled["counts"]["processed"])


def _mailchimp_list_id(sandbox: Any, key: str) -> str:
    import base64
    import urllib.request

    auth = base64.b64encode(f"any:{key}".encode()).decode()
    request = urllib.request.Request(
        f"{sandbox.url}/mailchimp/3.0/lists", headers={"Authorization": f"Basic {auth}"}
    )
    with urllib.request.urlopen(request, timeout=10) as reply:
        return str(json.loads(reply.read())["lists"][0]["id"])


def test_health_endpoints_and_metrics(running: DaemonProcess) -> None:
    """/healthz, /readyz, /health and /metrics answer as CONTRACT section 6 says."""
    assert 200 == running.get("/healthz")[0]
    status, ready = running.get("/readyz")
    assert (200, {"database": "ok", "broker": "ok", "consumers": "ok"}) == (status, ready["checks"])
    status, health = running.get("/health")
    assert 200 == status and {"stripe", "square", "quickbooks", "mailchimp"} == set(health["providers"])
    assert {"state", "consecutive_failures", "last_error", "response_time_seconds", "checked_at"} == set(
        health["providers"]["stripe"]
    )
    text = running.get("/metrics")[1]
    assert 'integration_build_info{component="daemon"' in text
    assert "integration_messages_consumed_total" in text
