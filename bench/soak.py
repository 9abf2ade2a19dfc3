"""Does the daemon stay as fast as it started? Consecutive chunks through one long-lived daemon.

One `integration-service run` process consumes ``--chunks`` chunks of ``--messages`` small
sync requests each (the requests of bench/consume.py), while its tables, outbox and caches
grow; a bare reference consumer (bench/consume.py's: the same HTTP call, one insert, ack),
also one long-lived consumer, does the same chunks in turn. A chunk is published and
consumed at once, on both sides alike.

Prints one JSON object:

- ``daemon_msgs_per_s`` / ``reference_msgs_per_s``: each chunk's rate;
- ``daemon_cpu_ms_per_msg``: each chunk's CPU per message of the daemon's process and of
  PostgreSQL (what grew when a plan or a list went bad);
- ``daemon_rss_mb``: the daemon's resident memory after each chunk;
- ``daemon_drift`` / ``reference_drift``: the mean rate of the last two chunks over that of
  the first two (1.0 is flat); ``drift_ratio`` = daemon drift / reference drift, so what the
  growing tables cost both sides alike (and the machine's own drift) cancels out. Target:
  ``drift_ratio`` >= 0.9.

Both bugs this was written after made the daemon slower the longer it ran: the outbox relay
re-marked every row it had ever published on every flush, and generic plans made while a
table was empty kept their sequential scans (README, Benchmarks).

    python bench/soak.py [--chunks 8] [--messages 5000] [--venues 100] [--mode full|incremental]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import time

import aio_pika
import aiohttp
import asyncpg
from consume import PREFETCH, Bench, CpuMeter, Reference, free_port, rss_mb, run, wait_http

REFERENCE_QUEUE = "bench.soak-reference"  # not bound: fed through the default exchange


async def consumed(session: aiohttp.ClientSession, port: int) -> float:
    """Sync requests the daemon has settled so far, from its own /metrics."""
    async with session.get(f"http://127.0.0.1:{port}/metrics") as reply:
        text = await reply.text()
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith("integration_messages_consumed_total{") and 'queue="integration.sync-requests"' in line
    )


async def daemon_chunk(bench: Bench, session: aiohttp.ClientSession, port: int, pid: int) -> dict[str, float]:
    n = bench.args.messages
    target = await consumed(session, port) + n
    meter = CpuMeter(pid, bench.sandbox_pid)
    started = time.time()
    job_ids = await bench.publish(n)
    deadline = time.monotonic() + 300
    while await consumed(session, port) < target:
        if time.monotonic() > deadline:
            raise RuntimeError(f"the daemon did not settle {n} requests in 300 s")
        await asyncio.sleep(0.25)
    cpu = meter.per_message(n)
    conn = await asyncpg.connect(bench.database_url)
    try:  # the exact end: the last of this chunk's jobs to finish (by its primary key)
        last = await conn.fetchval(
            "SELECT extract(epoch FROM max(finished_at)) FROM sync_jobs WHERE job_id = ANY($1::text[])", job_ids
        )
    finally:
        await conn.close()
    return {"rate": n / (float(last) - started), "process": cpu["process"], "postgres": cpu["postgres"],
            "rss": rss_mb(pid)}


async def reference_chunk(bench: Bench, reference: Reference) -> float:
    n = bench.args.messages
    target = reference.count + n
    started = time.monotonic()
    await bench.publish(n, exchange="", routing_key=REFERENCE_QUEUE)
    await asyncio.wait_for(reference.reached(target), timeout=300)
    return float(n / (time.monotonic() - started))


def drift(rates: list[float]) -> float:
    return statistics.fmean(rates[-2:]) / statistics.fmean(rates[:2])


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--chunks", type=int, default=8)
    parser.add_argument("--messages", type=int, default=5000, help="messages per chunk and side")
    parser.add_argument("--venues", type=int, default=100,
                        help="Stripe accounts (bench/consume.py: enough that no quota binds)")
    parser.add_argument("--mode", choices=("full", "incremental"), default="full", help="the pulls' mode")
    args = parser.parse_args()
    if args.chunks < 4:
        parser.error("--chunks must be at least 4 (the drift compares the first two with the last two)")
    bench = Bench(args)
    daemon_side: list[dict[str, float]] = []
    reference_side: list[float] = []
    try:
        await bench.setup()
        port = free_port()
        daemon = bench.spawn("run", "--port", str(port))
        await wait_http(f"http://127.0.0.1:{port}/readyz")
        connection = await aio_pika.connect(bench.amqp_url)
        async with connection, aiohttp.ClientSession() as session, Reference(bench) as reference:
            channel = await connection.channel()
            await channel.set_qos(prefetch_count=PREFETCH)
            queue = await channel.declare_queue(REFERENCE_QUEUE, durable=True, arguments={"x-queue-type": "quorum"})
            await queue.consume(reference.handle)
            for chunk in range(1, args.chunks + 1):
                daemon_side.append(await daemon_chunk(bench, session, port, daemon.pid))
                reference_side.append(await reference_chunk(bench, reference))
                print(f"chunk {chunk}: daemon {daemon_side[-1]['rate']:.1f} msg/s"
                      f" (process {daemon_side[-1]['process']:.3f}, PostgreSQL {daemon_side[-1]['postgres']:.3f}"
                      f" ms/msg, RSS {daemon_side[-1]['rss']:.1f} MB), reference {reference_side[-1]:.1f} msg/s",
                      file=sys.stderr, flush=True)
            await queue.delete(if_unused=False, if_empty=False)
    finally:
        await bench.teardown()
    rates = [d["rate"] for d in daemon_side]
    print(json.dumps({
        "chunks": args.chunks,
        "messages_per_chunk": args.messages,
        "mode": args.mode,
        "daemon_msgs_per_s": [round(r, 1) for r in rates],
        "reference_msgs_per_s": [round(r, 1) for r in reference_side],
        "daemon_cpu_ms_per_msg": {
            "process": [d["process"] for d in daemon_side],
            "postgres": [d["postgres"] for d in daemon_side],
        },
        "daemon_rss_mb": [round(d["rss"], 1) for d in daemon_side],
        "daemon_drift": round(drift(rates), 3),
        "reference_drift": round(drift(reference_side), 3),
        "drift_ratio": round(drift(rates) / drift(reference_side), 3),
        "target_drift_ratio": 0.9,
    }))


if __name__ == "__main__":
    run(main())  # bench/consume.py: on our commands' event loop
