"""The README's demo command, and through it each provider's webhook end to end."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.slow
CLI = str(Path(__file__).resolve().parents[2] / ".venv" / "bin" / "integration-service")
PROVIDERS = ("stripe", "square", "quickbooks", "mailchimp")


@pytest.fixture(scope="module")
def demo(services: Any, tmp_path_factory: Any) -> subprocess.CompletedProcess[str]:
    """One run of `integration-service demo` against this test run's vhost and database."""
    from tests.e2e.daemon_process import module_env

    env = module_env(services, tmp_path_factory.mktemp("demo"))
    return subprocess.run([CLI, "demo"], env=env, capture_output=True, text=True, timeout=300)


def rows(result: subprocess.CompletedProcess[str]) -> dict[str, str]:
    return {line.split()[0]: line for line in result.stdout.splitlines()[1:5]}


def test_demo_exits_0_and_prints_the_table(demo: subprocess.CompletedProcess[str]) -> None:
    """`integration-service demo` runs push, pull and a signed webhook per provider, then stops."""
    assert 0 == demo.returncode, demo.stdout + demo.stderr[-3000:]
    lines = demo.stdout.splitlines()
    assert lines[0].split() == ["PROVIDER", "VENUE", "PUSH", "PULL", "WEBHOOK", "RECORD", "EVENTS"]
    assert set(PROVIDERS) == set(rows(demo))
    for line in rows(demo).values():
        assert "succeeded 3/3" in line and "succeeded 3 read" in line, line
    assert "dead letters: 0" in demo.stdout
    assert "daemon exit 0, ingress exit 0, sandbox exit 0" in demo.stderr
    assert "Traceback" not in demo.stderr


@pytest.mark.parametrize("provider", PROVIDERS)
def test_webhook_from_the_sandbox_becomes_a_record_event(
    demo: subprocess.CompletedProcess[str], provider: str
) -> None:
    """Sandbox webhook sender -> ingress (200) -> RabbitMQ -> daemon -> a record event on
    integration.events with source "webhook" for the provider's venue (the demo waits for it)."""
    assert "HTTP 200 -> record event" in rows(demo)[provider], demo.stdout
