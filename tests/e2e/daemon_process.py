"""Run the real `integration-service run` as a subprocess against the sandbox, for e2e tests."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import asyncpg

from service.cli.demo_stack import sandbox_provider_env

REPO = Path(__file__).resolve().parents[2]
CLI = str(REPO / ".venv" / "bin" / "integration-service")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def module_env(services: Any, directory: Path) -> dict[str, str]:
    """Like the service_env fixture, for module-scoped fixtures."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AMQP_", "DATABASE_"))}
    env.update(
        AMQP_URL=services.amqp_url,
        DATABASE_URL=services.database_url,
        LOCAL_MASTER_KEY=services.master_key_b64,
        LOCAL_MASTER_KEY_FILE=str(directory / "master.key"),
        LOG_FORMAT="json",
        PYTHONUNBUFFERED="1",
    )
    return env


def sandbox_env(base_env: dict[str, str], sandbox: Any) -> dict[str, str]:
    """Point every provider base, token endpoint and OAuth client at the sandbox."""
    env = {**base_env, **sandbox_provider_env(sandbox.url)}
    env.update(
        SQUARE_CLIENT_ID=sandbox.square_client_id,
        SQUARE_CLIENT_SECRET=sandbox.square_client_secret,
        QUICKBOOKS_CLIENT_ID=sandbox.quickbooks_client_id,
        QUICKBOOKS_CLIENT_SECRET=sandbox.quickbooks_client_secret,
        MAILCHIMP_CLIENT_ID=sandbox.mailchimp_client_id,
        MAILCHIMP_CLIENT_SECRET=sandbox.mailchimp_client_secret,
        SQUARE_WEBHOOK_SIGNATURE_KEY=sandbox.square_webhook_signature_key,
        QUICKBOOKS_WEBHOOK_VERIFIER_TOKEN=sandbox.quickbooks_webhook_verifier_token,
        RETRY_BASE_DELAY_SECONDS="0.05",
        RETRY_MAX_DELAY_SECONDS="1",
        SHUTDOWN_GRACE_SECONDS="10",
        HEALTH_CHECK_INTERVAL_SECONDS="3600",
    )
    return env


def cli(
    env: dict[str, str], *args: str, stdin: str | None = None, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    return subprocess.run([CLI, *args], env=env, input=stdin, capture_output=True, text=True, timeout=timeout)


def sync_cli(
    env: dict[str, str], venue: str, *args: str, provider: str = "stripe", entity: str = "customers",
    timeout: float = 120,
) -> subprocess.CompletedProcess[str]:
    """`integration-service sync` for one venue's entity, with further options."""
    return cli(env, "sync", "--venue", venue, "--provider", provider, "--entity", entity, *args, timeout=timeout)


def wait_until(check: Callable[[], Any], *, timeout: float, what: str, interval: float = 0.1) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


class DaemonProcess:
    """One `integration-service run` process; SIGKILL or SIGTERM it, read its log."""

    def __init__(self, env: dict[str, str], log_path: Path) -> None:
        self.port = free_port()
        self.env = {**env, "DAEMON_PORT": str(self.port)}
        self.log_path = log_path
        self.proc: subprocess.Popen[bytes] | None = None
        self._log: Any = None

    def start(self) -> DaemonProcess:
        self._log = open(self.log_path, "ab")  # noqa: SIM115 - closed when the process ends
        self.proc = subprocess.Popen([CLI, "run"], env=self.env, stdout=self._log, stderr=self._log)
        wait_until(self.ready, timeout=60, what=f"daemon /readyz (log {self.log_path})")
        return self

    def ready(self) -> bool:
        assert self.proc is not None
        if self.proc.poll() is not None:
            raise AssertionError(f"daemon exited {self.proc.returncode}: {self.log_path.read_text()[-2000:]}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/readyz", timeout=2) as reply:
                return bool(reply.status == 200)
        except (urllib.error.URLError, OSError):
            return False

    def get(self, path: str) -> tuple[int, Any]:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}{path}", timeout=5) as reply:
                body = reply.read()
                return reply.status, (json.loads(body) if path != "/metrics" else body.decode())
        except urllib.error.HTTPError as exc:
            return exc.code, json.loads(exc.read() or b"null")

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=30)
        self._close_log()

    def _close_log(self) -> None:
        if self._log is not None:
            self._log.close()
            self._log = None

    def terminate(self, *, timeout: float = 60) -> int:
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                return self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
                raise
            finally:
                self._close_log()
        self._close_log()
        return int(self.proc.returncode)


@contextmanager
def daemon(env: dict[str, str], log_path: Path) -> Iterator[DaemonProcess]:
    process = DaemonProcess(env, log_path).start()
    try:
        yield process
    finally:
        if process.proc is not None and process.proc.poll() is None:
            process.terminate()


def query(database_url: str, sql: str, *args: Any) -> list[dict[str, Any]]:
    """Run one query on the test database (a fresh connection; sync tests have no loop)."""

    async def go() -> list[dict[str, Any]]:
        conn = await asyncpg.connect(database_url)
        try:
            return [dict(r) for r in await conn.fetch(sql, *args)]
        finally:
            await conn.close()

    return asyncio.run(go())


def job_status(database_url: str, job_id: str) -> dict[str, Any] | None:
    rows = query(
        database_url,
        "SELECT status, counts::text AS counts, attempts FROM sync_jobs WHERE job_id = $1",
        job_id,
    )
    if not rows:
        return None
    row = rows[0]
    row["counts"] = json.loads(row["counts"])
    return row


def stripe_account(sandbox: Any, env: dict[str, str], venue: str, *, live: bool = False, **fault: Any) -> str:
    """A Stripe account at the sandbox (live: 100/s, else test: 25/s) and its key in the
    vault, with a sandbox fault when ``fault`` is given; returns the key."""
    key = f"sk_{'live' if live else 'test'}_{uuid.uuid4().hex}"
    sandbox.control("POST", "/_sandbox/accounts", {"provider": "stripe", "account": venue, "api_key": key})
    if fault:
        sandbox.control("POST", "/_sandbox/faults", {"provider": "stripe", "account": venue, **fault})
    stored = cli(
        env, "credentials", "set", "--venue", venue, "--provider", "stripe", "--kind", "api_key",
        "--secret-stdin", stdin=key,
    )  # fmt: skip
    assert 0 == stored.returncode, stored.stderr
    return key


def customers_at_sandbox(sandbox: Any, key: str) -> list[dict[str, Any]]:
    """Every customer of a Stripe account at the sandbox, through Stripe's own pagination."""
    found: list[dict[str, Any]] = []
    after = ""
    while True:
        url = f"{sandbox.url}/stripe/v1/customers?limit=100" + (f"&starting_after={after}" if after else "")
        request = urllib.request.Request(url, headers={"Authorization": f"Bearer {key}"})
        with urllib.request.urlopen(request, timeout=10) as reply:
            page = json.loads(reply.read())
        found += page["data"]
        if not page["has_more"]:
            return found
        after = page["data"][-1]["id"]
