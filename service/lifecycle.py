"""Wiring: build the service's components in order and close them in reverse.

The only module that knows every other one; nothing imports it but the CLI.
"""

from __future__ import annotations

import asyncio
import functools
import gc
import signal
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import structlog

from service.config import Settings
from service.database import open_pool
from service.errors import NetworkError
from service.vault import CredentialInfo, Vault, key_provider_from_settings

log = structlog.get_logger(__name__)


def describe_amqp(url: str) -> str:
    """host:port/vhost of an AMQP URL, without the password."""
    parts = urlsplit(url)
    return f"{parts.hostname or 'localhost'}:{parts.port or 5672}{parts.path or '/'}"


@asynccontextmanager
async def amqp_errors(settings: Settings) -> AsyncIterator[None]:
    """Translate broker connection failures into one-line NetworkErrors."""
    where = describe_amqp(settings.amqp_url.get_secret_value())
    try:
        yield
    except (OSError, TimeoutError, ConnectionError) as exc:
        raise NetworkError(f"cannot reach RabbitMQ at {where}: {exc.__class__.__name__}") from exc
    except Exception as exc:
        import aiormq.exceptions

        if isinstance(exc, aiormq.exceptions.AMQPError):
            raise NetworkError(f"RabbitMQ at {where} failed: {exc.__class__.__name__}: {exc}") from exc
        raise


@asynccontextmanager
async def open_vault(settings: Settings) -> AsyncIterator[Vault]:
    """A vault on a small pool, for CLI commands."""
    keys = key_provider_from_settings(settings)
    async with open_pool(settings.database_url.get_secret_value(), min_size=1, max_size=2) as pool:
        yield Vault(pool, keys)


async def learn_square_merchant(
    settings: Settings, vault: Vault, info: CredentialInfo, secret: str
) -> CredentialInfo:
    """Ask Square for the merchant id of a new api_key; keep going if Square is away."""
    from providers.square import fetch_merchant_id

    try:
        merchant_id = await fetch_merchant_id(settings, secret)
    except Exception as exc:  # learned on first use instead (CONTRACT section 1)
        log.warning("square_merchant_lookup_failed", venue_id=info.venue_id, error=str(exc))
        return info
    await vault.set_merchant_id(info, merchant_id)
    shown = await vault.show(info.venue_id, "square")
    return next((i for i in shown if i.kind == info.kind), info)


async def refresh_now(settings: Settings, vault: Vault, info: CredentialInfo) -> CredentialInfo:
    """Refresh an OAuth credential now (credentials rotate)."""
    try:
        from providers.oauth import refresh_credential
    except ImportError:
        log.warning("oauth_refresh_unavailable", provider=info.provider)
        return info
    return await refresh_credential(settings, vault, info.venue_id, info.provider, force=True)


# The daemon ----------------------------------------------------------------------------


@dataclass(frozen=True)
class App:
    """Everything a daemon or ingress process holds, opened in order, closed in reverse."""

    settings: Settings
    pool: Any
    vault: Vault
    metrics: Any
    http: Any
    clients: dict[str, Any]
    auth: Any
    connection: Any
    publisher: Any
    relay: Any
    relaxed_pool: Any = None  # sessions commit without waiting for the disk (redo-safe writes)
    job_locks: Any = None  # one run of a job at a time (a connection of its own, opened on first use)


def build_clients(settings: Settings, http: Any) -> dict[str, Any]:
    """One client per provider, from the providers registry."""
    from providers import build_clients as registry_build

    return registry_build(settings=settings, http=http)


@asynccontextmanager
async def open_app(settings: Settings, *, component: str, pool_size: int = 12) -> AsyncIterator[App]:
    """Open pool, vault, limiter, HTTP session, provider clients and the AMQP publisher."""
    import aio_pika

    from consumers.publishers import AmqpPublisher, OutboxRelay
    from consumers.topology import declare_topology
    from providers.auth import AuthFactory
    from providers.http import ProviderHttp, provider_session
    from service.database import create_pool
    from service.database.job_locks import JobLocks
    from service.database.ratelimit import PostgresBucketStore
    from service.limiter import RateLimiter
    from service.metrics import Metrics, MetricsLimiterObserver

    async with AsyncExitStack() as stack:
        metrics = Metrics(process_collectors=True)
        metrics.set_build_info(component)
        dsn = settings.database_url.get_secret_value()
        pool = await create_pool(dsn, min_size=2, max_size=pool_size, generic_plans=True)
        stack.push_async_callback(pool.close)
        relaxed_pool = await create_pool(dsn, min_size=2, max_size=pool_size, relaxed=True, generic_plans=True)
        stack.push_async_callback(relaxed_pool.close)
        vault = Vault(pool, key_provider_from_settings(settings))
        buckets = PostgresBucketStore(relaxed_pool, own=True)  # lets go of its accounts before the pool closes
        stack.push_async_callback(buckets.close)
        limiter = RateLimiter(buckets, observer=MetricsLimiterObserver(metrics))
        session = provider_session()
        stack.push_async_callback(session.close)
        http = ProviderHttp(session, limiter=limiter, settings=settings, metrics=metrics)
        clients = build_clients(settings, http)
        auth = AuthFactory(vault, refresher=_refresher(settings, vault, pool, http, metrics))
        async with amqp_errors(settings):
            connection = await aio_pika.connect_robust(
                settings.amqp_url.get_secret_value(),
                timeout=15,
                client_properties={"connection_name": f"integration-service {component}"},
            )
        stack.push_async_callback(connection.close)
        channel = await connection.channel(publisher_confirms=True)
        await declare_topology(channel)
        publisher = AmqpPublisher(channel)
        relay = OutboxRelay(relaxed_pool, publisher, metrics=metrics)
        job_locks = JobLocks(dsn)
        stack.push_async_callback(job_locks.close)
        yield App(
            settings, pool, vault, metrics, http, clients, auth, connection, publisher, relay, relaxed_pool, job_locks
        )


def _refresher(settings: Settings, vault: Vault, pool: Any, http: Any, metrics: Any) -> Any:
    try:
        from providers.oauth import Refresher
    except ImportError:
        return None
    return Refresher(settings=settings, vault=vault, pool=pool, http=http, metrics=metrics)


def build_engine(app: App) -> tuple[Any, Any]:
    """The sync engine and the webhook processor over an open App."""
    from consumers.publishers import MessageRoutes
    from service.engine import Engine, EngineDeps
    from service.webhook_processing import WebhookProcessor

    deps = EngineDeps(
        settings=app.settings,
        pool=app.pool,
        clients=app.clients,
        auth_for=AuthCache(app),
        routes=MessageRoutes(),
        metrics=app.metrics,
        relaxed_pool=app.relaxed_pool,
        announce=functools.partial(_announce_if_connected, app),
        job_locks=app.job_locks,
    )
    engine = Engine(deps)
    return engine, WebhookProcessor(deps, engine)


async def _announce_if_connected(app: App, stored: list[Any]) -> None:
    """A running job's mid-job events, published now while the broker is up; while it is
    away they are left to the relay, so each page does not wait out a confirm timeout."""
    if app.connection.connected.is_set():
        await app.relay.publish_stored(stored)


AUTH_CACHE_TTL_S = 5.0
MERCHANT_LOOKUP_BACKOFF_S = 60.0  # a Square merchant lookup that failed is not asked again sooner


class AuthCache:
    """Decrypted credentials per (venue, provider) for a few seconds: a busy venue's
    messages then cost no vault read or KMS Decrypt each. A refresh happens inside the
    cached object; a credential replaced or deleted with the CLI is seen within the TTL.

    Misses of one key at the same moment share one load, and a Square api_key whose
    merchant lookup failed is not looked up again for MERCHANT_LOOKUP_BACKOFF_S: that call
    goes around the rate limiter, so asking on every miss of every delivery would spend the
    account's quota while Square cannot answer it (the syncs go on without the id)."""

    def __init__(
        self, app: App, *, ttl_s: float = AUTH_CACHE_TTL_S, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._app = app
        self._ttl_s = ttl_s
        self._clock = clock
        self._entries: dict[tuple[str, str], tuple[float, Any]] = {}
        self._loading: dict[tuple[str, str], asyncio.Future[Any]] = {}
        self._lookup_after: dict[str, float] = {}  # venue -> when its merchant may be asked again

    async def __call__(self, venue_id: str, provider: str) -> Any:
        key = (venue_id, provider)
        hit = self._entries.get(key)
        if hit is not None and hit[0] > self._clock():
            return hit[1]
        loading = self._loading.get(key)
        if loading is None:
            loading = self._loading[key] = asyncio.ensure_future(self._load(venue_id, provider))
            loading.add_done_callback(functools.partial(self._loaded, key))
        return await asyncio.shield(loading)  # a waiter cancelled leaves the load to the others

    def _loaded(self, key: tuple[str, str], loading: asyncio.Future[Any]) -> None:
        self._loading.pop(key, None)
        if not loading.cancelled():
            loading.exception()  # retrieved: every waiter may have been cancelled meanwhile

    async def _load(self, venue_id: str, provider: str) -> Any:
        now = self._clock()
        learn = self._lookup_after.get(venue_id, 0.0) <= now
        try:
            auth = await auth_with_merchant(self._app, venue_id, provider, learn=learn)
        except Exception:  # Square may have answered and storing its answer failed: wait too
            if learn and provider == "square":
                self._lookup_after[venue_id] = now + MERCHANT_LOOKUP_BACKOFF_S
            raise
        if learn and provider == "square":
            if _misses_merchant(auth):
                self._lookup_after[venue_id] = now + MERCHANT_LOOKUP_BACKOFF_S
            else:
                self._lookup_after.pop(venue_id, None)
        if len(self._entries) > 10_000:
            self._entries.clear()
            self._lookup_after.clear()
        self._entries[(venue_id, provider)] = (now + self._ttl_s, auth)
        return auth


def _misses_merchant(auth: Any) -> bool:
    return auth.value("merchant_id") is None and not getattr(auth, "is_oauth", False)


async def auth_with_merchant(app: App, venue_id: str, provider: str, *, learn: bool = True) -> Any:
    """The venue's auth; a Square api_key whose merchant id is unknown learns it now
    (CONTRACT section 1: at `credentials set` when Square answers, else on first use),
    unless ``learn`` is False."""
    auth = await app.auth.for_venue(venue_id, provider)
    if provider != "square" or not learn or not _misses_merchant(auth):
        return auth
    credential = await app.vault.get(venue_id, "square", "api_key")
    info = await learn_square_merchant(app.settings, app.vault, credential.info, credential.secret)
    if info.merchant_id is None:
        return auth
    return await app.auth.for_venue(venue_id, provider)


class Daemon:
    """`integration-service run`: consumers, outbox relay, health checks, schedules, HTTP."""

    def __init__(self, app: App, *, port: int, prefetch: int = 16) -> None:
        self.app = app
        self.port = port
        self.prefetch = prefetch
        self.stop = asyncio.Event()
        self.consumers: list[Any] = []
        self.monitor: Any = None

    async def _start_consumers(self) -> None:
        from consumers.consumer import QueueConsumer
        from consumers.topology import SYNC_QUEUE, WEBHOOK_QUEUE

        engine, webhooks = build_engine(self.app)
        for queue, handler in ((SYNC_QUEUE, engine.handle_sync), (WEBHOOK_QUEUE, webhooks.handle)):
            channel = await self.app.connection.channel()
            consumer = QueueConsumer(
                channel,
                queue,
                handler,
                relay=self.app.relay,
                metrics=self.app.metrics,
                probe=self._database_ready,
                prefetch=self.prefetch,
            )
            await consumer.start()
            self.consumers.append(consumer)

    async def _database_ready(self) -> None:
        """Outcomes can be stored: the pool takes a write and the job-lock connection is
        open (the consumers' probe before consuming again, and readiness)."""
        from service.database import ping

        await ping(self.app.pool)
        if self.app.job_locks is not None:
            try:
                await self.app.job_locks.ping()
            except Exception as exc:
                raise NetworkError(f"PostgreSQL job-lock connection: {exc.__class__.__name__}") from exc

    def _web_app(self) -> Any:
        from aiohttp import web

        from service.health import add_provider_health_route
        from service.httpcommon import add_health_routes

        async def broker() -> None:
            # A robust connection is never "closed" while it reconnects: ask if it is up now.
            if self.app.connection.is_closed or not self.app.connection.connected.is_set():
                raise RuntimeError("broker connection down")

        async def consumers() -> None:
            if not self.consumers:
                raise RuntimeError("consumers not attached")
            for consumer in self.consumers:
                await consumer.check_consuming()

        web_app = web.Application()
        add_health_routes(
            web_app,
            metrics=self.app.metrics,
            checks={"database": self._database_ready, "broker": broker, "consumers": consumers},
        )
        add_provider_health_route(web_app, self.monitor)
        return web_app

    async def serve(self, *, on_ready: Callable[[], None] | None = None) -> None:
        """Run until ``stop`` is set (SIGTERM/SIGINT), then shut down gracefully."""
        from aiohttp import web

        from consumers.publishers import MessageRoutes
        from service.health import HealthMonitor
        from service.schedules import schedule_loop

        checks = {name: client.check_health for name, client in self.app.clients.items()}
        self.monitor = HealthMonitor(
            checks,
            pool=self.app.pool,
            metrics=self.app.metrics,
            interval_s=self.app.settings.health_check_interval_seconds,
        )
        runner = web.AppRunner(self._web_app(), access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, self.app.settings.http_host, self.port)
        await site.start()
        try:
            async with asyncio.TaskGroup() as tasks:
                tasks.create_task(self.app.relay.run(self.stop), name="outbox-relay")
                tasks.create_task(self.monitor.run(self.stop), name="health-monitor")
                tasks.create_task(self._housekeeping(), name="housekeeping")
                tasks.create_task(
                    schedule_loop(self.app.pool, MessageRoutes(), self.app.relay, self.stop), name="schedules"
                )
                await self._start_consumers()
                for consumer in self.consumers:
                    tasks.create_task(consumer.poll_depth(self.stop), name=f"depth-{consumer.queue_name}")
                log.info("daemon_ready", port=self.port)
                if on_ready:
                    on_ready()
                await self.stop.wait()
                await self._shutdown()
        finally:
            await runner.cleanup()

    async def _shutdown(self) -> None:
        grace = self.app.settings.shutdown_grace_seconds
        log.info("daemon_stopping", grace_s=grace)
        for consumer in self.consumers:
            await consumer.stop_consuming()
        # Both queues' deliveries share one grace period (drained one after the other they
        # could take twice as long, past what a supervisor waits before SIGKILL).
        cancelled = sum(await asyncio.gather(*(c.drain(grace) for c in self.consumers)))
        try:  # publish what is committed; what is left the next process's relay publishes
            await self.app.relay.relay_once()
        except Exception as exc:
            log.warning("final_relay_failed", error=f"{exc.__class__.__name__}: {exc}")
        log.info("daemon_stopped", handed_back=cancelled)

    async def _housekeeping(self) -> None:
        from service.database.jobs import prune_finished_jobs
        from service.database.outbox import prune_published
        from service.webhook_processing import prune_dedupe

        prunes: list[tuple[str, Callable[[], Awaitable[int]]]] = [
            ("webhook_events", functools.partial(prune_dedupe, self.app.pool)),
            ("outbox", functools.partial(prune_published, self.app.pool, older_than_s=24 * 3600)),
        ]
        retention_s = self.app.settings.job_retention_days * 86400
        if retention_s > 0:
            old_jobs = functools.partial(prune_finished_jobs, self.app.pool, older_than_s=retention_s)
            prunes.append(("sync_jobs", old_jobs))
        while not self.stop.is_set():
            for table, prune in prunes:  # one failing does not skip the other
                try:
                    deleted = await prune()
                except Exception as exc:
                    log.warning("housekeeping_failed", table=table, error=exc.__class__.__name__)
                else:
                    log.info("housekeeping_pruned", table=table, rows=deleted)
            try:
                await asyncio.wait_for(self.stop.wait(), timeout=3600)
            except TimeoutError:
                pass


def install_signal_handlers(stop: asyncio.Event) -> None:
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)


STARTUP_WAIT_S = 60.0


async def wait_for_services(settings: Settings, *, timeout_s: float = STARTUP_WAIT_S) -> None:
    """Migrate and declare the topology, retrying with backoff while PostgreSQL or RabbitMQ
    is still starting (compose starts them beside us); a bad setting fails at once."""
    import stamina

    from consumers.topology import declare_on
    from service.database import migrate_database

    async for attempt in stamina.retry_context(
        on=NetworkError, attempts=None, timeout=timeout_s, wait_initial=0.5, wait_max=5.0
    ):
        with attempt:
            if attempt.num > 1:
                log.warning("waiting_for_services", attempt=attempt.num)
            await migrate_database(settings.database_url.get_secret_value())
            async with amqp_errors(settings):
                await declare_on(settings.amqp_url.get_secret_value())


GC_YOUNG_EVERY = 10_000  # allocations between collections of the youngest generation (Python's: 700)


def settle_heap() -> None:
    """For a long-running command once it has started. What is loaded by now (stripe, boto3,
    pydantic's schemas, aiohttp...) lives as long as the process: ``gc.freeze`` takes it out
    of the collector's generations, where each full collection scanned its 89,000 objects
    (25 ms, every message in flight stalled meanwhile). And the youngest generation is
    collected every GC_YOUNG_EVERY allocations instead of 700, by when most of a message's
    short-lived objects are gone by reference counting: the daemon's collections went from
    about 10 to 3 microseconds per message (bench/consume.py, README's Benchmarks)."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(GC_YOUNG_EVERY, *gc.get_threshold()[1:])


async def run_daemon(settings: Settings, *, port: int) -> None:
    """The `run` command: serve until SIGTERM, then finish or hand back in-flight work."""
    await wait_for_services(settings)
    async with open_app(settings, component="daemon") as app:
        daemon = Daemon(app, port=port)
        settle_heap()
        install_signal_handlers(daemon.stop)
        await daemon.serve()
