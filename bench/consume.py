"""Throughput of the daemon beside a bare aio-pika consumer, and its memory under a backlog.

Prints one JSON object:
The two run in alternating rounds (daemon, reference, daemon, ...) and the ratio is the
median of the rounds' ratios, so a machine that speeds up or slows down between phases (a
shared host does) moves both sides of each ratio alike.

- ``daemon_msgs_per_s``: small sync requests (a full pull of an empty Stripe account: one
  HTTP call, the job row, the job result) through `integration-service run`, from the moment
  it is ready until every job is finished in PostgreSQL; ``--mode incremental`` (the
  contract's default mode) makes them pulls that also read the venue's stored cursor;
- ``reference_msgs_per_s``: a bare aio-pika consumer (same prefetch) that makes the same HTTP
  call through aiohttp, writes one row with asyncpg and acks; ``ratio`` = daemon / reference
  (target >= 0.8);
- ``quota_msgs_per_s``: what the venues' Stripe quotas allow in all (each venue is one live
  account: 100 calls/s at the sandbox as at Stripe, which the daemon's limiter spaces to
  97/s). The overhead is what is measured, not the quota, so the venues (``--venues``, 100)
  keep it far above either side's rate: with 20, this machine ran the reference past it
  and a fifth of its calls came back 429 (which it ignores), while the daemon's limiter
  held it at 1,940 msg/s. A reference reply that is not a 2xx therefore stops the bench
  (its call was not the daemon's), and ``limiter_bound`` says when the daemon's rate came
  within 10 % of the quota;
- ``cpu_ms_per_msg``: CPU milliseconds per message of each side, split into its own process
  (the daemon; the reference runs inside this script), the sandbox, PostgreSQL and RabbitMQ,
  so the ratio can be read against the work each side asks of the machine;
- ``rss_mb``: the daemon's resident memory sampled while it consumes with a backlog of
  ``--backlog`` messages waiting, at small and full backlog (target: under 200 MB, flat).

Everything runs on loopback against a throwaway vhost and database that are removed after.

    python bench/consume.py [--messages 4000] [--rounds 3] [--backlog 100000] [--venues 100]
                            [--mode full|incremental]
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import socket
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import Coroutine
from pathlib import Path
from typing import Any

import aio_pika
import aiohttp
import asyncpg

REPO = Path(__file__).resolve().parent.parent
CLI = str(REPO / ".venv" / "bin" / "integration-service")
PG_ADMIN = "postgresql://postgres@127.0.0.1:5432/postgres"
PREFETCH = 16
STRIPE_LIVE_PER_SECOND = 100  # the sandbox's (and Stripe's) quota of a live key, and our limit
LIMITER_UTILISATION = 1 / 1.03  # one-second windows with the limiter's 30 ms margin


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def rabbitmqctl(*args: str) -> None:
    subprocess.run(["rabbitmqctl", "-q", *args], check=True, capture_output=True, timeout=60)


CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """User + system CPU a process has used so far (0 once it is gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def servers_cpu() -> dict[str, float]:
    """CPU used so far by every PostgreSQL and RabbitMQ process on this machine."""
    names = {"postgres": "postgres", "beam.smp": "rabbitmq"}
    used = dict.fromkeys(names.values(), 0.0)
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                side = names.get((entry / "comm").read_text().strip())
            except OSError:
                continue
            if side is not None:
                used[side] += cpu_seconds(int(entry.name))
    return used


class CpuMeter:
    """CPU milliseconds per message of one side of a round: its own process, the sandbox,
    PostgreSQL and RabbitMQ (the whole servers: nothing else runs during a round)."""

    def __init__(self, own_pid: int, sandbox_pid: int) -> None:
        self._pids = {"process": own_pid, "sandbox": sandbox_pid}
        self._start = self._read()

    def _read(self) -> dict[str, float]:
        return {**{side: cpu_seconds(pid) for side, pid in self._pids.items()}, **servers_cpu()}

    def per_message(self, messages: int) -> dict[str, float]:
        end = self._read()
        used = {side: 1000 * (end[side] - self._start[side]) / messages for side in end}
        used["total"] = sum(used.values())
        return {side: round(ms, 3) for side, ms in used.items()}


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


async def wait_http(url: str, timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    async with aiohttp.ClientSession() as session:
        while time.monotonic() < deadline:
            try:
                async with session.get(url) as reply:
                    if reply.status == 200:
                        return
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.2)
    raise RuntimeError(f"{url} did not become ready")


class Bench:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        run = uuid.uuid4().hex[:10]
        self.vhost, self.database = f"bench-{run}", f"bench_{run}"
        self.amqp_url = f"amqp://guest:guest@127.0.0.1:5672/{self.vhost}"
        self.database_url = f"postgresql://postgres@127.0.0.1:5432/{self.database}"
        self.sandbox_port = free_port()
        self.sandbox_url = f"http://127.0.0.1:{self.sandbox_port}"
        self.env = {
            **os.environ,
            "AMQP_URL": self.amqp_url,
            "DATABASE_URL": self.database_url,
            "LOCAL_MASTER_KEY": base64.b64encode(os.urandom(32)).decode(),
            "LOG_LEVEL": "WARNING",
            "LOG_FORMAT": "json",
            "STRIPE_API_BASE": f"{self.sandbox_url}/stripe",
            "HEALTH_CHECK_INTERVAL_SECONDS": "3600",
            "RATE_LIMIT_STRIPE_PER_SECOND": "100",
        }
        self.keys: dict[str, str] = {}
        self.procs: list[subprocess.Popen[bytes]] = []
        self.sandbox_pid = 0

    def spawn(self, *args: str, env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
        proc = subprocess.Popen(
            [CLI, *args], env=env or self.env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        self.procs.append(proc)
        return proc

    async def setup(self) -> None:
        rabbitmqctl("add_vhost", self.vhost)
        rabbitmqctl("set_permissions", "-p", self.vhost, "guest", ".*", ".*", ".*")
        await asyncio.to_thread(
            subprocess.run, [CLI, "migrate"], env=self.env, check=True, capture_output=True, timeout=120
        )
        self.sandbox_pid = self.spawn("sandbox", "--port", str(self.sandbox_port)).pid
        await wait_http(f"{self.sandbox_url}/_sandbox/accounts")
        async with aiohttp.ClientSession() as session:
            for i in range(self.args.venues):
                venue, key = f"bench-venue-{i}", f"sk_live_{uuid.uuid4().hex}"
                self.keys[venue] = key
                await session.post(
                    f"{self.sandbox_url}/_sandbox/accounts",
                    json={"provider": "stripe", "account": venue, "api_key": key},
                )
        storing = asyncio.Semaphore(8)  # a command per venue, a few at a time

        async def store(venue: str, key: str) -> None:
            async with storing:
                await asyncio.to_thread(
                    subprocess.run,
                    [CLI, "credentials", "set", "--venue", venue, "--provider", "stripe",
                     "--kind", "api_key", "--secret-stdin"],
                    input=key.encode(), env=self.env, check=True, capture_output=True, timeout=60,
                )

        await asyncio.gather(*(store(venue, key) for venue, key in self.keys.items()))

    @property
    def quota_msgs_per_s(self) -> float:
        """The most the venues' quotas let the daemon's limiter grant, in all."""
        return len(self.keys) * STRIPE_LIVE_PER_SECOND * LIMITER_UTILISATION

    async def publish(
        self, count: int, *, exchange: str = "integration.commands", routing_key: str = "sync.stripe.customers"
    ) -> list[str]:
        """Publish ``count`` small sync requests; return their job ids."""
        job_ids = []
        connection = await aio_pika.connect(self.amqp_url)
        async with connection:
            channel = await connection.channel(publisher_confirms=True)
            target = await channel.get_exchange(exchange, ensure=False)
            venues = list(self.keys)
            for start in range(0, count, 500):
                batch = []
                for i in range(start, min(count, start + 500)):
                    job_ids.append(str(uuid.uuid4()))
                    body = {
                        "schema": "integration.sync_request.v1",
                        "job_id": job_ids[-1],
                        "venue_id": venues[i % len(venues)],
                        "provider": "stripe",
                        "entity": "customers",
                        "direction": "pull",
                        "mode": self.args.mode,
                    }
                    message = aio_pika.Message(
                        json.dumps(body).encode(),
                        content_type="application/json",
                        delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
                        message_id=str(uuid.uuid4()),
                    )
                    batch.append(target.publish(message, routing_key=routing_key))
                await asyncio.gather(*batch)
        return job_ids

    async def finished_jobs(self) -> tuple[int, float | None]:
        """(jobs finished, when the last one finished as a Unix time)."""
        conn = await asyncpg.connect(self.database_url)
        try:
            row = await conn.fetchrow(
                "SELECT count(*) AS n, extract(epoch FROM max(finished_at)) AS last FROM sync_jobs"
                " WHERE status IN ('succeeded', 'partial', 'failed')"
            )
            return int(row["n"]), None if row["last"] is None else float(row["last"])
        finally:
            await conn.close()

    async def daemon_rate(self) -> tuple[float, dict[str, float]]:
        """From ready to the last job's finished_at (the daemon's own clock, this host's):
        polled twice a second, so the poll neither adds its latency nor takes the CPU."""
        n = self.args.messages
        before, _ = await self.finished_jobs()  # earlier rounds' jobs
        await self.publish(n)
        port = free_port()
        daemon = self.spawn("run", "--port", str(port))
        await wait_http(f"http://127.0.0.1:{port}/readyz")
        meter = CpuMeter(daemon.pid, self.sandbox_pid)
        started, deadline = time.time(), time.monotonic() + 300
        while True:
            done, last = await self.finished_jobs()
            done -= before
            if done >= n and last is not None:
                break
            if time.monotonic() > deadline:
                raise RuntimeError(f"the daemon finished {done} of {n} jobs in 300 s")
            await asyncio.sleep(0.5)
        cpu = meter.per_message(n)
        daemon.terminate()
        daemon.wait(timeout=60)
        return n / (last - started), cpu

    async def reference_rate(self) -> tuple[float, dict[str, float]]:
        """A bare consumer: same HTTP call, one asyncpg insert, ack."""
        n = self.args.messages
        connection = await aio_pika.connect(self.amqp_url)
        async with connection, Reference(self) as reference:
            channel = await connection.channel(publisher_confirms=True)
            await channel.set_qos(prefetch_count=PREFETCH)
            queue = await channel.declare_queue(
                "bench.reference", durable=True, arguments={"x-queue-type": "quorum"}
            )
            await queue.bind("integration.commands", "sync.#")
            await self.publish(n)
            await (await channel.get_queue("integration.sync-requests", ensure=False)).purge()
            meter = CpuMeter(os.getpid(), self.sandbox_pid)
            started = time.monotonic()
            await queue.consume(reference.handle)
            await asyncio.wait_for(reference.reached(n), timeout=300)
            elapsed = time.monotonic() - started
            if reference.refused:
                raise RuntimeError(
                    f"the reference got {reference.refused} of {n} replies that were not a 2xx (over"
                    f" the venues' quota at {n / elapsed:.0f} msg/s?): its calls were not the"
                    " daemon's; run with more --venues")
            cpu = meter.per_message(n)
            await queue.delete(if_unused=False, if_empty=False)
        return n / elapsed, cpu

    async def rss_under_backlog(self) -> dict[str, float]:
        """Publish the backlog, start the daemon, sample its RSS as it consumes."""
        backlog = self.args.backlog
        small = min(1000, backlog)
        await self.publish(small)
        port = free_port()
        daemon = self.spawn("run", "--port", str(port))
        await wait_http(f"http://127.0.0.1:{port}/readyz")
        await asyncio.sleep(3)
        at_small = rss_mb(daemon.pid)
        await self.publish(backlog - small)
        peak = at_small
        deadline = time.monotonic() + self.args.rss_seconds
        while time.monotonic() < deadline:
            peak = max(peak, rss_mb(daemon.pid))
            await asyncio.sleep(0.25)
        daemon.terminate()
        daemon.wait(timeout=60)
        return {
            "rss_mb_small_backlog": round(at_small, 1),
            "rss_mb_peak_full_backlog": round(peak, 1),
            "backlog_messages": backlog,
        }

    async def teardown(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    proc.kill()
        conn = await asyncpg.connect(PG_ADMIN)
        try:
            await conn.execute(f'DROP DATABASE IF EXISTS "{self.database}" WITH (FORCE)')
        finally:
            await conn.close()
        rabbitmqctl("delete_vhost", self.vhost)


class Reference:
    """The bare reference consumer's handler: the same HTTP call as the daemon's pull, one
    asyncpg insert, ack; counts what it handled."""

    def __init__(self, bench: Bench) -> None:
        self._bench = bench
        self.count = 0
        self.refused = 0  # replies that were not a 2xx (a 429: over the account's quota)
        self._changed = asyncio.Event()

    async def __aenter__(self) -> Reference:
        self._session = aiohttp.ClientSession()
        self._pool = await asyncpg.create_pool(self._bench.database_url, min_size=2, max_size=10)
        await self._pool.execute("CREATE TABLE IF NOT EXISTS bench_reference (job_id text PRIMARY KEY, body jsonb)")
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._pool.close()
        await self._session.close()

    async def handle(self, message: aio_pika.abc.AbstractIncomingMessage) -> None:
        body = json.loads(message.body)
        key = self._bench.keys[body["venue_id"]]
        async with self._session.get(
            f"{self._bench.sandbox_url}/stripe/v1/customers?limit=100",
            headers={"Authorization": f"Bearer {key}"},
        ) as reply:
            await reply.read()
            if not 200 <= reply.status < 300:
                self.refused += 1
        await self._pool.execute(
            "INSERT INTO bench_reference VALUES ($1, $2) ON CONFLICT DO NOTHING", body["job_id"], message.body.decode()
        )
        await message.ack()
        self.count += 1
        self._changed.set()

    async def reached(self, count: int) -> None:
        while self.count < count:
            self._changed.clear()
            await self._changed.wait()


def median_each(samples: list[dict[str, float]]) -> dict[str, float]:
    return {key: round(statistics.median(s[key] for s in samples), 3) for key in samples[0]}


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=4000, help="messages per round and side")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--backlog", type=int, default=100_000)
    parser.add_argument("--venues", type=int, default=100,
                        help="Stripe accounts the requests are spread over (each allows 100 calls/s)")
    parser.add_argument("--rss-seconds", type=float, default=20.0)
    parser.add_argument("--mode", choices=("full", "incremental"), default="full", help="the pulls' mode")
    args = parser.parse_args()
    bench = Bench(args)
    try:
        await bench.setup()
        rounds, cpu = [], []
        for _ in range(args.rounds):
            daemon, daemon_cpu = await bench.daemon_rate()
            reference, reference_cpu = await bench.reference_rate()
            rounds.append((daemon, reference))
            cpu.append((daemon_cpu, reference_cpu))
            print(f"round {len(rounds)}: daemon {daemon:.1f} msg/s, reference {reference:.1f} msg/s,"
                  f" ratio {daemon / reference:.3f}", file=sys.stderr, flush=True)
        memory = await bench.rss_under_backlog()
    finally:
        await bench.teardown()
    print(
        json.dumps(
            {
                "messages": args.messages,
                "mode": args.mode,
                "prefetch": PREFETCH,
                "rounds": args.rounds,
                "daemon_msgs_per_s": round(statistics.median(d for d, _ in rounds), 1),
                "reference_msgs_per_s": round(statistics.median(r for _, r in rounds), 1),
                "ratio": round(statistics.median(d / r for d, r in rounds), 3),
                "ratio_per_round": [round(d / r, 3) for d, r in rounds],
                "venues": args.venues,
                "quota_msgs_per_s": round(bench.quota_msgs_per_s, 1),
                "limiter_bound": max(d for d, _ in rounds) > 0.9 * bench.quota_msgs_per_s,
                "target_ratio": 0.8,
                "cpu_ms_per_msg": {
                    "daemon": median_each([d for d, _ in cpu]),
                    "reference": median_each([r for _, r in cpu]),
                },
                **memory,
                "target_rss_mb": 200,
                "event_loop": type(asyncio.get_running_loop()).__module__.split(".")[0],
            }
        )
    )


def run(main: Coroutine[Any, Any, None]) -> None:
    """Run the bench (and so the bare reference, which runs in this process) on the event loop
    `integration-service` runs on, uvloop's where it is installed: the ratio is then our
    code's against the reference's, not one event loop's against another's."""
    from service.cli import run_async

    run_async(main)


if __name__ == "__main__":
    run(main())
