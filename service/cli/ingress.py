"""`integration-service ingress [--port]`: the webhook ingress process (CONTRACT section 6).

Wiring only: declare the topology, open the pool, the vault and a confirming AMQP
publisher, serve the ingress app until SIGTERM/SIGINT, then close in reverse order (stop
taking requests and let in-flight ones finish first, then the broker, then the pool).
"""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Callable
from contextlib import AsyncExitStack
from typing import Any

import click
import structlog

from service.cli import load, run_async
from service.config import Settings

log = structlog.get_logger(__name__)

SHUTDOWN_TIMEOUT_S = 10.0
# Providers retry a 503 within minutes; reconnecting every second keeps the outage short.
RECONNECT_INTERVAL_S = 1.0


async def _open_publisher(settings: Settings, stack: AsyncExitStack) -> tuple[Any, Callable[[], Any]]:
    """A robust AMQP connection with a confirm channel; (publisher, readiness check)."""
    import aio_pika

    from consumers.publishers import AmqpPublisher
    from service.lifecycle import amqp_errors

    async with amqp_errors(settings):
        connection = await aio_pika.connect_robust(
            settings.amqp_url.get_secret_value(), timeout=15, reconnect_interval=RECONNECT_INTERVAL_S,
            client_properties={"connection_name": "integration-service ingress"},
        )
    stack.push_async_callback(connection.close)
    channel = await connection.channel(publisher_confirms=True)

    async def broker() -> None:
        # A robust connection is not "closed" while it reconnects: `connected` says whether
        # a transport is up right now.
        if connection.is_closed or not connection.connected.is_set() or channel.is_closed:
            raise ConnectionError("broker connection is down")

    return AmqpPublisher(channel), broker


async def serve(settings: Settings, *, port: int, stop: asyncio.Event | None = None) -> None:
    """Run the ingress until ``stop`` is set (by SIGTERM/SIGINT when not given)."""
    from aiohttp import web

    from consumers.topology import declare_on
    from service.database import create_pool, ping
    from service.ingress import IngressConfig, VaultDirectory, create_app
    from service.lifecycle import amqp_errors, settle_heap
    from service.metrics import Metrics
    from service.vault import Vault, key_provider_from_settings

    async with amqp_errors(settings):
        await declare_on(settings.amqp_url.get_secret_value())
    stop = stop or _stop_on_signals()
    async with AsyncExitStack() as stack:
        metrics = Metrics(process_collectors=True)
        metrics.set_build_info("ingress")
        pool = await create_pool(settings.database_url.get_secret_value(), min_size=1, max_size=10)
        stack.push_async_callback(pool.close)
        vault = Vault(pool, key_provider_from_settings(settings))
        publisher, broker = await _open_publisher(settings, stack)
        app = create_app(
            config=IngressConfig.from_settings(settings), directory=VaultDirectory(pool, vault),
            publisher=publisher, metrics=metrics,
            readiness={"database": lambda: ping(pool), "broker": broker},
        )
        runner = web.AppRunner(app, access_log=None, shutdown_timeout=SHUTDOWN_TIMEOUT_S)
        await runner.setup()
        stack.push_async_callback(runner.cleanup)
        await web.TCPSite(runner, settings.http_host, port).start()
        settle_heap()  # everything loaded so far lives for the whole process
        log.info("ingress_ready", host=settings.http_host, port=port, public_url=settings.ingress_public_url)
        await stop.wait()
        log.info("ingress_stopping")
    log.info("ingress_stopped")


def _stop_on_signals() -> asyncio.Event:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    return stop


@click.command()
@click.option("--port", type=click.IntRange(1, 65535), help="Port to listen on [INGRESS_PORT, 8080].")
def ingress(port: int | None) -> None:
    """Run the webhook ingress: verify signatures, publish with confirms, answer.

    Routes: POST /webhooks/stripe/{venue}, POST+GET /webhooks/mailchimp/{venue}/{token},
    POST /webhooks/square, POST /webhooks/quickbooks; plus /healthz, /readyz and /metrics.
    Listens on HTTP_HOST; SIGTERM finishes in-flight requests and exits 0.
    """
    settings = load(long_running=True)
    run_async(serve(settings, port=port or settings.ingress_port))


COMMANDS = [ingress]
