"""The README's demo command, and through it each provider's webhook end to end."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow
CLI = str(Path(__file__).resolve().parents[2] / ".venv" / "bin" / "integration-service")


def test_demo_exits_0_and_prints_the_table(service_env: dict[str, str]) -> None:
    """`integration-service demo` runs push, pull and a signed webhook per provider, then stops."""
    result = subprocess.run([CLI, "demo"], env=service_env, capture_output=True, text=True, timeout=300)
    assert 0 == result.returncode, result.stdout + result.stderr[-3000:]
    lines = result.stdout.splitlines()
    assert lines[0].split() == ["PROVIDER", "VENUE", "PUSH", "PULL", "WEBHOOK", "RECORD", "EVENTS"]
    rows = {line.split()[0]: line for line in lines[1:5]}
    assert {"stripe", "square", "quickbooks", "mailchimp"} == set(rows)
    for provider, line in rows.items():
        # sandbox webhook sender -> ingress -> RabbitMQ -> daemon -> a record event on integration.events
        assert "succeeded 3/3" in line and "succeeded 3 read" in line, line
        assert "HTTP 200 -> record event" in line, f"{provider}: {line}"
    assert "dead letters: 0" in result.stdout
    assert "daemon exit 0, ingress exit 0, sandbox exit 0" in result.stderr
    assert "Traceback" not in result.stderr
