"""How many requests per second the provider sandbox sustains (prints one JSON object).

The sandbox runs in a subprocess (one process, so one core); this process drives it with
aiohttp at a fixed concurrency for a few seconds per scenario. Calls are spread over many
Stripe accounts so the per-account rate limits (100/s for live keys) never bind: the
number measured is the sandbox's own cost per call, middleware and limiter included.

    python bench/sandbox.py [--seconds 3] [--concurrency 64] [--accounts 200]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import statistics
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp

REPO = Path(__file__).resolve().parent.parent
SERVE = "from sandbox.server import serve; import sys; serve(host='127.0.0.1', port=int(sys.argv[1]))"
Request = Callable[[aiohttp.ClientSession, int], Any]


def _cpu_seconds(pid: int) -> float | None:
    """User + system CPU time of a process (Linux /proc), else None."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def _wait_ready(session: aiohttp.ClientSession, base: str, timeout_s: float = 15.0) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            async with session.get(f"{base}/_sandbox/accounts") as response:
                if response.status == 200:
                    return
        except aiohttp.ClientError:
            pass
        if time.monotonic() > deadline:
            raise RuntimeError("the sandbox did not start")
        await asyncio.sleep(0.1)


async def _register(session: aiohttp.ClientSession, base: str, accounts: int) -> list[str]:
    """Stripe accounts with live keys, each holding ten customers to list."""
    keys = []
    for i in range(accounts):
        key = f"sk_live_bench{i:06d}"
        payload = {"provider": "stripe", "account": f"bench-{i}", "api_key": key}
        async with session.post(f"{base}/_sandbox/accounts", json=payload) as response:
            response.raise_for_status()
        keys.append(key)
    for key in keys[:accounts]:
        for n in range(10):
            async with session.post(
                f"{base}/stripe/v1/customers",
                data={"email": f"seed{n}@example.com"},
                headers={"Authorization": f"Bearer {key}"},
            ) as response:
                response.raise_for_status()
    return keys


async def _drive(
    session: aiohttp.ClientSession, call: Request, *, seconds: float, concurrency: int, server_pid: int
) -> dict[str, Any]:
    """Run ``call`` from ``concurrency`` workers for ``seconds``; summarise rate and latency."""
    statuses: Counter[int] = Counter()
    latencies: list[float] = []
    deadline = time.monotonic() + seconds
    counter = iter(range(10**9))

    async def worker() -> None:
        while time.monotonic() < deadline:
            started = time.perf_counter()
            async with call(session, next(counter)) as response:
                await response.read()
                statuses[response.status] += 1
            latencies.append(time.perf_counter() - started)

    cpu_before, started = _cpu_seconds(server_pid), time.monotonic()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    elapsed, cpu_after = time.monotonic() - started, _cpu_seconds(server_pid)
    latencies.sort()
    total = sum(statuses.values())
    cpu = None if cpu_before is None or cpu_after is None else cpu_after - cpu_before
    return {
        "requests_per_second": round(total / elapsed, 1),
        # what one fully busy core would sustain: robust when other work shares the machine
        "requests_per_cpu_second": None if not cpu else round(total / cpu, 1),
        "server_cpu_share": None if cpu is None else round(cpu / elapsed, 2),
        "ok_per_second": round(statuses.get(200, 0) / elapsed, 1),
        "p50_ms": round(statistics.median(latencies) * 1000, 2),
        "p99_ms": round(latencies[int(len(latencies) * 0.99) - 1] * 1000, 2),
        "statuses": {str(k): v for k, v in sorted(statuses.items())},
    }


async def run(
    *, base: str, server_pid: int, seconds: float, concurrency: int, accounts: int
) -> dict[str, Any]:
    """Both scenarios against the sandbox at ``base`` (process ``server_pid``)."""
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=30)) as session:
        await _wait_ready(session, base)
        keys = await _register(session, base, accounts)

        def auth(i: int) -> dict[str, str]:
            return {"Authorization": f"Bearer {keys[i % len(keys)]}"}

        def list_call(s: aiohttp.ClientSession, i: int) -> Any:
            return s.get(f"{base}/stripe/v1/customers?limit=10", headers=auth(i))

        def create_call(s: aiohttp.ClientSession, i: int) -> Any:
            return s.post(
                f"{base}/stripe/v1/customers",
                headers={**auth(i), "Idempotency-Key": f"bench-{i}"},
                data={"email": f"c{i}@example.com", "name": "Bench", "metadata[i]": str(i)},
            )

        options = {"seconds": seconds, "concurrency": concurrency, "server_pid": server_pid}
        return {
            "stripe_list_customers": await _drive(session, list_call, **options),  # type: ignore[arg-type]
            "stripe_create_customer": await _drive(session, create_call, **options),  # type: ignore[arg-type]
        }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--accounts", type=int, default=200)
    args = parser.parse_args()
    port = _free_port()
    server = subprocess.Popen([sys.executable, "-c", SERVE, str(port)], cwd=REPO)
    try:
        results = asyncio.run(
            run(
                base=f"http://127.0.0.1:{port}",
                server_pid=server.pid,
                seconds=args.seconds,
                concurrency=args.concurrency,
                accounts=args.accounts,
            )
        )
    finally:
        server.terminate()
        server.wait(timeout=10)
    print(
        json.dumps(
            {
                "benchmark": "sandbox",
                "seconds_per_scenario": args.seconds,
                "concurrency": args.concurrency,
                "accounts": args.accounts,
                **results,
            }
        )
    )


if __name__ == "__main__":
    main()
