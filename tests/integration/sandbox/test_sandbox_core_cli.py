"""`integration-service sandbox` serves the sandbox on the port it is given."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import requests

REPO = Path(__file__).resolve().parents[3]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_cli_command_serves_stripe_and_control_endpoints() -> None:
    """The console command starts the sandbox; a registered key lists customers; SIGTERM stops it."""
    port = _free_port()
    env = {**os.environ, "LOG_FORMAT": "json", "MAILCHIMP_CLIENT_ID": "cli-client"}
    script = Path(sys.executable).parent / "integration-service"
    process = subprocess.Popen(
        [str(script), "sandbox", "--port", str(port)],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                requests.get(f"{base}/_sandbox/accounts", timeout=1)
                break
            except requests.ConnectionError:
                assert process.poll() is None, process.stderr.read().decode() if process.stderr else ""
                assert time.monotonic() < deadline, "the sandbox did not start"
                time.sleep(0.1)
        requests.post(
            f"{base}/_sandbox/accounts",
            timeout=5,
            json={"provider": "stripe", "account": "cli", "api_key": "sk_test_cli"},
        ).raise_for_status()
        listed = requests.get(
            f"{base}/stripe/v1/customers", headers={"Authorization": "Bearer sk_test_cli"}, timeout=5
        )
        assert (200, []) == (listed.status_code, listed.json()["data"])
    finally:
        process.terminate()
        assert 0 == process.wait(timeout=10)
        for stream in (process.stdout, process.stderr):
            if stream is not None:
                stream.close()
