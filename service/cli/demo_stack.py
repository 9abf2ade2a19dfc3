"""The processes the demo runs: sandbox, daemon and ingress, as real subprocesses."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp

DEMO_CLIENTS = {
    "SQUARE_CLIENT_ID": "demo-square-client",
    "SQUARE_CLIENT_SECRET": "demo-square-secret",
    "QUICKBOOKS_CLIENT_ID": "demo-qb-client",
    "QUICKBOOKS_CLIENT_SECRET": "demo-qb-secret",
    "MAILCHIMP_CLIENT_ID": "demo-mc-client",
    "MAILCHIMP_CLIENT_SECRET": "demo-mc-secret",
    "SQUARE_WEBHOOK_SIGNATURE_KEY": "demo-square-signature-key",
    "QUICKBOOKS_WEBHOOK_VERIFIER_TOKEN": "demo-quickbooks-verifier-token",
}


def sandbox_provider_env(url: str) -> dict[str, str]:
    """Every provider API base and token endpoint pointed at a sandbox at ``url``."""
    return {
        "STRIPE_API_BASE": f"{url}/stripe",
        "SQUARE_API_BASE": f"{url}/square",
        "SQUARE_OAUTH_URL": f"{url}/square/oauth2/token",
        "QUICKBOOKS_API_BASE": f"{url}/quickbooks",
        "QUICKBOOKS_OAUTH_URL": f"{url}/quickbooks/oauth2/v1/tokens/bearer",
        "MAILCHIMP_API_BASE": f"{url}/mailchimp",
        "MAILCHIMP_OAUTH_URL": f"{url}/mailchimp/oauth2/token",
        "MAILCHIMP_METADATA_URL": f"{url}/mailchimp/oauth2/metadata",
    }


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def command() -> list[str]:
    """How to start this same program again (the console script, else the module)."""
    script = shutil.which("integration-service") or str(Path(sys.executable).parent / "integration-service")
    return (
        [script]
        if Path(script).exists()
        else [sys.executable, "-c", "from service.cli import entry; entry()"]
    )


@dataclass
class Stack:
    """Sandbox, daemon and ingress on free loopback ports, sharing one environment."""

    sandbox_port: int = field(default_factory=free_port)
    daemon_port: int = field(default_factory=free_port)
    ingress_port: int = field(default_factory=free_port)
    logs: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="integration-demo-")))
    procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    @property
    def sandbox_url(self) -> str:
        return f"http://127.0.0.1:{self.sandbox_port}"

    @property
    def ingress_url(self) -> str:
        return f"http://127.0.0.1:{self.ingress_port}"

    def env(self) -> dict[str, str]:
        env = {**os.environ, **DEMO_CLIENTS, **sandbox_provider_env(self.sandbox_url)}
        env.update(HTTP_HOST="127.0.0.1", LOG_FORMAT="json", INGRESS_PUBLIC_URL=self.ingress_url)
        return env

    def _spawn(self, name: str, *args: str) -> None:
        log = open(self.logs / f"{name}.log", "ab")  # noqa: SIM115 - the child owns it
        try:
            self.procs[name] = subprocess.Popen([*command(), *args], env=self.env(), stdout=log, stderr=log)
        finally:
            log.close()

    async def start(self, *, timeout_s: float = 60) -> None:
        """Start all three and wait until each answers its readiness URL."""
        self._spawn("sandbox", "sandbox", "--port", str(self.sandbox_port))
        await self._ready("sandbox", f"{self.sandbox_url}/_sandbox/accounts", timeout_s)
        self._spawn("daemon", "run", "--port", str(self.daemon_port))
        self._spawn("ingress", "ingress", "--port", str(self.ingress_port))
        await self._ready("daemon", f"http://127.0.0.1:{self.daemon_port}/readyz", timeout_s)
        await self._ready("ingress", f"{self.ingress_url}/readyz", timeout_s)

    async def _ready(self, name: str, url: str, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=2)) as session:
            while True:
                if self.procs[name].poll() is not None:
                    raise RuntimeError(f"{name} exited early; see {self.logs / (name + '.log')}")
                try:
                    async with session.get(url) as reply:
                        if reply.status == 200:
                            return
                except (aiohttp.ClientError, TimeoutError):
                    pass
                if time.monotonic() > deadline:
                    raise RuntimeError(f"{name} not ready after {timeout_s:g} s; see {self.logs}")
                await asyncio.sleep(0.2)

    def stop(self, *, grace_s: float = 30) -> dict[str, int | None]:
        """SIGTERM everything (daemon and ingress first), wait, and return exit codes."""
        codes: dict[str, int | None] = {}
        for name in ("daemon", "ingress", "sandbox"):
            proc = self.procs.get(name)
            if proc is None:
                continue
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
            try:
                codes[name] = proc.wait(timeout=grace_s)
            except subprocess.TimeoutExpired:
                proc.kill()
                codes[name] = proc.wait()
        return codes
