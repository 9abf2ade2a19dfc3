"""Benchmark of the shared rate limiter against aiolimiter; prints one JSON object.

For one and for three worker processes saturating one account (Stripe live, 100/s), with
the shared store by compare-and-set (``postgres``) and with the account owned by the
process alone on it (``owning``, the daemon's setting), every
granted call sends a UDP datagram to a sink in this process, which stands in for the
provider and stamps arrivals. Reported per scenario: the busiest one-second window of
arrivals divided by the quota (target <= 1.0), utilisation under saturation (target
>= 0.95), and the reservations the limiter gave up and redid. Then the added latency of
one uncontended acquire (enter + exit) at p50 and p99, beside ``aiolimiter.AsyncLimiter``.
A QuickBooks run (10/s, 10 in flight, calls lasting 0.5-2.5 s) in three processes shows
the peak number of calls in flight at the provider.

Runs against a throwaway database that it creates and drops:
``.venv/bin/python bench/limiter.py [--seconds 5] [--tasks 16]``
(``BENCH_PG_ADMIN_DSN`` overrides postgresql://postgres@127.0.0.1:5432/postgres).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import socket
import statistics
import sys
import time
import uuid
from typing import Any

import asyncpg
from aiolimiter import AsyncLimiter

from service.database import migrate_database, open_pool
from service.database.ratelimit import PostgresBucketStore
from service.limiter import (
    DEFAULT_MARGIN_S,
    LATE_TOLERANCE_S,
    Limits,
    MemoryBucketStore,
    RateLimiter,
    limits_for,
)

ADMIN_DSN = os.environ.get("BENCH_PG_ADMIN_DSN", "postgresql://postgres@127.0.0.1:5432/postgres")
QUOTA = 100  # Stripe live, per second
LATENCY_SAMPLES = 2000


# --- worker process ---------------------------------------------------------------------


async def worker(args: dict[str, Any]) -> dict[str, Any]:
    """Saturate one account from start_at to end_at; datagrams mark each call's start and end."""
    sink = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sink.setblocking(False)
    address = ("127.0.0.1", args["port"])
    provider = "quickbooks" if args["kind"] == "quickbooks" else "stripe"
    # The row lock serialises one account anyway: more connections would only crowd PostgreSQL.
    async with open_pool(args["dsn"], min_size=2, max_size=4, relaxed=True) as pool:
        store = PostgresBucketStore(pool, own=args["kind"] in ("owning", "quickbooks"))  # the daemon owns
        limiter = RateLimiter(store, margin_s=args["margin_s"], late_tolerance_s=args["late_tolerance_s"])
        aio = AsyncLimiter(QUOTA, 1)
        limits = limits_for(provider)
        gate = (lambda: aio) if args["kind"] == "aiolimiter" else (
            lambda: limiter.acquire(provider, args["account"], limits, max_wait_s=60))
        await asyncio.sleep(max(0.0, args["start_at"] - time.time()))

        async def call_loop() -> None:
            while time.time() < args["end_at"]:
                async with gate():
                    sink.sendto(b"+", address)
                    if provider == "quickbooks":  # a slow provider: the 10-in-flight cap binds
                        await asyncio.sleep(random.uniform(0.5, 2.5))
                    sink.sendto(b"-", address)

        await asyncio.gather(*(call_loop() for _ in range(args["tasks"])))
        await store.close()
    return {"redone": limiter.redone, "handovers": store.handovers}


# --- the provider stand-in --------------------------------------------------------------


class Sink(asyncio.DatagramProtocol):
    """Stamps every call's arrival, as the provider would see it, and counts calls in flight."""

    def __init__(self) -> None:
        self.arrivals: list[float] = []
        self.in_flight = 0
        self.peak_in_flight = 0
        self.ends: list[float] = []

    def datagram_received(self, data: bytes, addr: tuple[str | Any, int]) -> None:
        if data == b"+":
            self.arrivals.append(time.time())
            self.in_flight += 1
            self.peak_in_flight = max(self.peak_in_flight, self.in_flight)
        else:
            self.in_flight -= 1
            self.ends.append(time.time())


def busiest_window(times: list[float], period: float = 1.0) -> int:
    """The most timestamps in any half-open window [t, t + period)."""
    ordered, best, start = sorted(times), 0, 0
    for end, stamp in enumerate(ordered):
        while ordered[start] <= stamp - period:
            start += 1
        best = max(best, end - start + 1)
    return best


async def scenario(kind: str, processes: int, *, dsn: str, options: argparse.Namespace) -> dict[str, Any]:
    """Run ``processes`` workers of one kind on one account and measure at the sink."""
    loop = asyncio.get_running_loop()
    transport, sink = await loop.create_datagram_endpoint(Sink, local_addr=("127.0.0.1", 0))
    port = transport.get_extra_info("sockname")[1]
    seconds = options.seconds
    start_at = time.time() + 2.5  # every worker has imported and connected by then
    end_at = start_at + seconds
    args = {"kind": kind, "dsn": dsn, "port": port, "tasks": options.tasks, "start_at": start_at,
            "end_at": end_at, "account": f"acct_{uuid.uuid4().hex[:8]}", "margin_s": options.margin,
            "late_tolerance_s": options.late_tolerance}
    procs = [
        await asyncio.create_subprocess_exec(
            sys.executable, __file__, "--worker", json.dumps(args), stdout=asyncio.subprocess.PIPE
        )
        for _ in range(processes)
    ]
    outputs = [await asyncio.wait_for(p.communicate(), timeout=seconds + 60) for p in procs]
    await asyncio.sleep(0.1)  # the last datagrams are in flight on loopback
    transport.close()
    if any(p.returncode for p in procs):
        raise RuntimeError(f"a {kind} worker failed; its traceback is above")
    reports = [json.loads(out.decode().splitlines()[-1]) for out, _ in outputs]
    redone = sum(report["redone"] for report in reports)
    steady = [t for t in sink.arrivals if start_at + 0.5 <= t < end_at - 0.5]
    quota = 10 if kind == "quickbooks" else QUOTA
    result = {
        "calls": len(sink.arrivals),
        "max_window_ratio": round(busiest_window(sink.arrivals) / quota, 4),
        "utilisation": round(len(steady) / ((seconds - 1.0) * quota), 4),
        "redone_reservations": redone,
    }
    if kind == "owning":  # accounts let go because another process asked for them
        result["handovers"] = sum(report["handovers"] for report in reports)
    if kind == "quickbooks":  # throughput is capped by 10 in flight, not by the rate: show the cap
        del result["utilisation"]
        result["peak_in_flight"] = sink.peak_in_flight
        result["mean_in_flight"] = round(
            (sum(sink.ends) - sum(sink.arrivals)) / (max(sink.ends) - min(sink.arrivals)), 2)
    return result


# --- latency ----------------------------------------------------------------------------


def percentiles(samples: list[float]) -> dict[str, float]:
    cuts = statistics.quantiles(samples, n=100)
    return {"p50_ms": round(cuts[49] * 1000, 4), "p99_ms": round(cuts[98] * 1000, 4)}


async def timed(enter_exit: Any) -> dict[str, float]:
    samples = []
    for _ in range(LATENCY_SAMPLES):
        begun = time.perf_counter()
        async with enter_exit():
            pass
        samples.append(time.perf_counter() - begun)
    return percentiles(samples[100:])  # the first ones warm connections and caches


async def latencies(pool: asyncpg.Pool) -> dict[str, Any]:
    """One uncontended acquire: a quota so high that nobody waits."""
    fast, capped = Limits(per_second=1e9), Limits(per_second=1e9, concurrency=10)
    shared = RateLimiter(PostgresBucketStore(pool))
    owning_store = PostgresBucketStore(pool, own=True)
    owning = RateLimiter(owning_store)
    local = RateLimiter(MemoryBucketStore())
    aio = AsyncLimiter(1e9, 1)
    result = {
        "aiolimiter": await timed(lambda: aio),
        "memory_store": await timed(lambda: local.acquire("stripe", "a", fast, max_wait_s=1)),
        "postgres_store": await timed(lambda: shared.acquire("stripe", "a", fast, max_wait_s=1)),
        "postgres_store_with_concurrency_lease": await timed(
            lambda: shared.acquire("quickbooks", "r", capped, max_wait_s=1)),
        "postgres_store_owning": await timed(lambda: owning.acquire("stripe", "o", fast, max_wait_s=1)),
    }
    await owning_store.close()
    base = result["aiolimiter"]
    for name in ("memory_store", "postgres_store", "postgres_store_with_concurrency_lease",
                 "postgres_store_owning"):
        result[name]["p50_ratio_to_aiolimiter"] = round(result[name]["p50_ms"] / base["p50_ms"], 1)
        result[name]["p99_ratio_to_aiolimiter"] = round(result[name]["p99_ms"] / base["p99_ms"], 1)
    return result


# --- driver -----------------------------------------------------------------------------


async def bench(options: argparse.Namespace) -> dict[str, Any]:
    name = f"bench_limiter_{uuid.uuid4().hex[:10]}"
    dsn = ADMIN_DSN.rsplit("/", 1)[0] + "/" + name
    await migrate_database(dsn)
    try:
        runs: dict[str, Any] = {}
        for kind in options.kinds.split(","):
            for processes in (1, 3) if kind != "quickbooks" else (3,):
                name = f"{kind}_{processes}_process"
                runs[name] = await scenario(kind, processes, dsn=dsn, options=options)
        async with open_pool(dsn, min_size=1, max_size=2, relaxed=True) as pool:
            latency = await latencies(pool)
    finally:
        admin = await asyncpg.connect(ADMIN_DSN, timeout=10)
        try:
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await admin.close()
    return {
        "quota_per_second": QUOTA, "margin_s": options.margin, "late_tolerance_s": options.late_tolerance,
        "seconds": options.seconds, "tasks_per_process": options.tasks, "cpus": os.cpu_count(),
        "load_average_1m": round(os.getloadavg()[0], 2), "saturation": runs,
        "uncontended_acquire_latency": latency,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--tasks", type=int, default=16)
    parser.add_argument("--margin", type=float, default=DEFAULT_MARGIN_S, help="seconds")
    parser.add_argument("--late-tolerance", type=float, default=LATE_TOLERANCE_S, help="seconds")
    parser.add_argument("--kinds", default="postgres,owning,aiolimiter,quickbooks", help="comma-separated")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    options = parser.parse_args()
    if options.worker:
        print(json.dumps(asyncio.run(worker(json.loads(options.worker)))))
        return
    print(json.dumps(asyncio.run(bench(options))))


if __name__ == "__main__":
    main()
