"""Benchmark: signed Stripe webhooks per second through our ingress, beside a bare handler.

Both servers run as subprocesses on loopback against the same local RabbitMQ and
PostgreSQL (a throw-away vhost and database, dropped at the end):

- ``ingress``: ``integration-service ingress`` (venue lookup, cached secret, stripe package
  check, JSON message, publish with confirms, metrics, a log line per request);
- ``bare``: this file with ``--bare-server``: one aiohttp handler that checks the same
  HMAC-SHA256 and publishes with confirms, nothing else.

The driver (this process) sends the same pre-signed requests to each with aiohttp,
alternating rounds so drift hits both, bounded in count and time, and prints one JSON
object: requests per second, p50/p99 latency in ms, errors and the server's own CPU ms per
request (steadier than throughput on a busy machine) for each, and the ratio of requests
per second ingress/bare (target at least 0.8).

    .venv/bin/python bench/ingress.py [--requests 3000] [--concurrency 32]
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import hashlib
import hmac
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web

from service.cli import new_event_loop  # the loop our commands run on, for the bare server too

REPO = Path(__file__).resolve().parent.parent
AMQP_BASE = os.environ.get("BENCH_AMQP_BASE", "amqp://guest:guest@127.0.0.1:5672")
PG_BASE = os.environ.get("BENCH_PG_BASE", "postgresql://postgres@127.0.0.1:5432")
VENUE = "venue-bench"
SECRET = "whsec_bench_" + uuid.uuid4().hex
TARGET_RATIO = 0.8


# The bare server --------------------------------------------------------------------


def bare_app(amqp_url: str, secret: str) -> web.Application:
    """One route: check the Stripe HMAC, publish with confirms, answer."""
    import aio_pika

    state: dict[str, Any] = {}

    async def broker(app: web.Application) -> AsyncIterator[None]:
        connection = await aio_pika.connect(amqp_url, timeout=10)
        channel = await connection.channel(publisher_confirms=True)
        state["exchange"] = await channel.get_exchange("integration.webhooks")
        yield
        await connection.close()

    async def handle(request: web.Request) -> web.Response:
        body = await request.read()
        parts = dict(p.split("=", 1) for p in request.headers.get("Stripe-Signature", "").split(","))
        expected = hmac.new(secret.encode(), parts["t"].encode() + b"." + body, hashlib.sha256).hexdigest()
        if not hmac.compare_digest(expected, parts.get("v1", "")):
            return web.json_response({"error": "bad signature"}, status=401)
        message = aio_pika.Message(body, content_type="application/json", message_id=str(uuid.uuid4()),
                                   delivery_mode=aio_pika.DeliveryMode.PERSISTENT)
        await state["exchange"].publish(message, routing_key="webhook.stripe", timeout=2)
        return web.json_response({"status": "accepted"})

    async def healthz(request: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    app = web.Application()
    app.cleanup_ctx.append(broker)
    app.router.add_post("/webhooks/stripe/{venue_id}", handle)
    app.router.add_get("/healthz", healthz)
    return app


# Set-up and tear-down -----------------------------------------------------------------


def _rabbitmqctl(*args: str) -> None:
    ctl = shutil.which("rabbitmqctl") or "/usr/sbin/rabbitmqctl"
    subprocess.run([ctl, *args], check=True, capture_output=True, timeout=60)


async def _prepare(amqp_url: str, database_url: str, master_key: str) -> None:
    sys.path.insert(0, str(REPO))
    from consumers.topology import declare_on
    from service.config import load_settings
    from service.database import migrate_database, open_pool
    from service.vault import Vault, key_provider_from_settings

    await migrate_database(database_url)
    await declare_on(amqp_url)
    settings = load_settings(database_url=database_url, amqp_url=amqp_url, local_master_key=master_key)
    async with open_pool(database_url, min_size=1, max_size=1) as pool:
        await Vault(pool, key_provider_from_settings(settings)).set(VENUE, "stripe", "webhook_secret", SECRET)


async def _drop_database(name: str) -> None:
    import asyncpg

    conn = await asyncpg.connect(f"{PG_BASE}/postgres", timeout=10)
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await conn.close()


def _free_port() -> int:
    from aiohttp.test_utils import unused_port

    return int(unused_port())


async def _wait_ready(url: str, process: asyncio.subprocess.Process, *, timeout_s: float = 30) -> None:
    deadline = time.monotonic() + timeout_s
    async with aiohttp.ClientSession() as session:
        while time.monotonic() < deadline:
            if process.returncode is not None:
                raise RuntimeError(f"server exited with {process.returncode} before it was ready")
            with contextlib.suppress(aiohttp.ClientError):
                async with session.get(url) as response:
                    if response.status == 200:
                        return
            await asyncio.sleep(0.1)
    raise RuntimeError(f"{url} not ready within {timeout_s} s")


# The driver ---------------------------------------------------------------------------


def _signed_requests(count: int) -> list[tuple[bytes, str]]:
    now = int(time.time())
    out = []
    for i in range(count):
        body = json.dumps({"id": f"evt_bench_{i}", "object": "event", "type": "customer.updated",
                           "data": {"object": {"id": f"cus_{i}", "email": f"c{i}@example.com"}}}).encode()
        digest = hmac.new(SECRET.encode(), f"{now}.".encode() + body, hashlib.sha256).hexdigest()
        out.append((body, f"t={now},v1={digest}"))
    return out


async def _drive(url: str, requests: list[tuple[bytes, str]], *, concurrency: int,
                 max_seconds: float) -> dict[str, Any]:
    latencies: list[float] = []
    errors = 0
    queue = iter(requests)
    deadline = time.monotonic() + max_seconds
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=10)) as session:

        async def worker() -> None:
            nonlocal errors
            for body, signature in queue:
                if time.monotonic() > deadline:
                    return
                started = time.perf_counter()
                headers = {"Stripe-Signature": signature, "Content-Type": "application/json"}
                async with session.post(url, data=body, headers=headers) as response:
                    await response.read()
                    ok = response.status == 200
                latencies.append(time.perf_counter() - started)
                errors += 0 if ok else 1

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        elapsed = time.perf_counter() - started
    return {"count": len(latencies), "errors": errors, "elapsed_s": elapsed, "latencies": latencies}


def _summary(rounds: list[dict[str, Any]]) -> dict[str, Any]:
    latencies = sorted(x for r in rounds for x in r["latencies"])
    count = len(latencies)
    elapsed = sum(r["elapsed_s"] for r in rounds)
    quantiles = statistics.quantiles(latencies, n=100) if count >= 2 else [0.0] * 99
    return {
        "requests": count, "errors": sum(r["errors"] for r in rounds),
        "per_second": round(count / elapsed, 1) if elapsed else 0.0,
        "p50_ms": round(quantiles[49] * 1000, 2), "p99_ms": round(quantiles[98] * 1000, 2),
    }


def _cpu_s(pid: int) -> float:
    """User + system CPU seconds a process has used (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def _compare(urls: dict[str, str], pids: dict[str, int], *, total: int, concurrency: int,
                   max_seconds: float, rounds: int) -> dict[str, Any]:
    per_round = max(1, total // rounds)
    warm = _signed_requests(min(200, per_round))
    for url in urls.values():  # warm-up: connections, caches, the secret's first decryption
        await _drive(url, warm, concurrency=concurrency, max_seconds=max_seconds)
    results: dict[str, list[dict[str, Any]]] = {name: [] for name in urls}
    cpu = dict.fromkeys(urls, 0.0)
    batch = _signed_requests(per_round)
    for _ in range(rounds):  # alternate so drift (other load, broker state) hits both
        for name, url in urls.items():
            before = _cpu_s(pids[name])
            results[name].append(
                await _drive(url, batch, concurrency=concurrency, max_seconds=max_seconds / rounds)
            )
            cpu[name] += _cpu_s(pids[name]) - before
    summary = {name: _summary(r) for name, r in results.items()}
    for name, figures in summary.items():  # the server's own CPU per request: load-independent
        figures["server_cpu_ms_per_request"] = round(1000 * cpu[name] / max(1, figures["requests"]), 3)
    bare = summary["bare"]["per_second"]
    ratio = round(summary["ingress"]["per_second"] / bare, 3) if bare else 0.0
    return {"concurrency": concurrency, **summary, "ratio": ratio, "target_ratio": TARGET_RATIO,
            "meets_target": ratio >= TARGET_RATIO}


async def _run(args: argparse.Namespace) -> dict[str, Any]:
    run_id = uuid.uuid4().hex[:10]
    vhost, database = f"bench-{run_id}", f"bench_{run_id}"
    amqp_url, database_url = f"{AMQP_BASE}/{vhost}", f"{PG_BASE}/{database}"
    master_key = base64.b64encode(os.urandom(32)).decode()
    _rabbitmqctl("add_vhost", vhost)
    _rabbitmqctl("set_permissions", "-p", vhost, "guest", ".*", ".*", ".*")
    processes: list[asyncio.subprocess.Process] = []
    logs = tempfile.TemporaryFile()
    try:
        await _prepare(amqp_url, database_url, master_key)
        ports = {"ingress": _free_port(), "bare": _free_port()}
        env = {**os.environ, "AMQP_URL": amqp_url, "DATABASE_URL": database_url,
               "LOCAL_MASTER_KEY": master_key, "LOG_FORMAT": "json",
               "INGRESS_PUBLIC_URL": f"http://127.0.0.1:{ports['ingress']}"}
        command = str(Path(sys.executable).parent / "integration-service")
        # BENCH_INGRESS_PREFIX (e.g. "python -m cProfile -o ingress.prof") wraps the ingress to profile it.
        prefix = os.environ.get("BENCH_INGRESS_PREFIX", "").split()
        processes.append(await asyncio.create_subprocess_exec(
            *prefix, command, "ingress", "--port", str(ports["ingress"]), env=env, stdout=logs, stderr=logs))
        processes.append(await asyncio.create_subprocess_exec(
            sys.executable, __file__, "--bare-server", "--port", str(ports["bare"]), "--amqp-url", amqp_url,
            env=env | {"BENCH_SECRET": SECRET}, stdout=logs, stderr=logs))
        await _wait_ready(f"http://127.0.0.1:{ports['ingress']}/readyz", processes[0])
        await _wait_ready(f"http://127.0.0.1:{ports['bare']}/healthz", processes[1])
        urls = {name: f"http://127.0.0.1:{port}/webhooks/stripe/{VENUE}" for name, port in ports.items()}
        pids = {"ingress": processes[0].pid, "bare": processes[1].pid}
        return await _compare(urls, pids, total=args.requests, concurrency=args.concurrency,
                              max_seconds=args.max_seconds, rounds=args.rounds)
    finally:
        for process in processes:
            process.terminate()
        for process in processes:
            try:
                await asyncio.wait_for(process.wait(), timeout=15)
            except TimeoutError:
                process.kill()
        logs.close()
        await _drop_database(database)
        _rabbitmqctl("delete_vhost", vhost)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=4000, help="per server, over all rounds")
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=16)
    parser.add_argument("--max-seconds", type=float, default=60.0, help="per server, over all rounds")
    parser.add_argument("--bare-server", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--amqp-url", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.bare_server:
        # On the loop our commands run on (uvloop where installed), so the ratio is our code's
        web.run_app(bare_app(args.amqp_url, os.environ["BENCH_SECRET"]), host="127.0.0.1", port=args.port,
                    access_log=None, print=None, loop=new_event_loop())
        return
    summary = asyncio.run(_run(args))
    loop = new_event_loop()  # the servers' loop, named in the output
    loop.close()
    print(json.dumps({**summary, "event_loop": type(loop).__module__.split(".")[0]}))


if __name__ == "__main__":
    main()
