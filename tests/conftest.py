"""Session-wide isolation: one RabbitMQ vhost and one PostgreSQL database per test run.

Both are created once (synchronously, with one ``asyncio.run``), the schema is applied
twice to prove it idempotent, and both are dropped at the end. An unreachable broker or
database stops the run with a clear error: nothing here ever skips.
"""

from __future__ import annotations

import asyncio
import base64
import os
import shutil
import subprocess
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from service.config import Settings, load_settings
from service.database import migrate_database

PG_ADMIN_DSN = os.environ.get("TEST_PG_ADMIN_DSN", "postgresql://postgres@127.0.0.1:5432/postgres")
AMQP_BASE = os.environ.get("TEST_AMQP_BASE", "amqp://guest:guest@127.0.0.1:5672")
REPO = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class TestServices:
    """Where this test run's own vhost and database are."""

    __test__ = False
    vhost: str
    database: str
    amqp_url: str
    database_url: str
    master_key_b64: str


def _rabbitmqctl(*args: str) -> None:
    ctl = shutil.which("rabbitmqctl") or "/usr/sbin/rabbitmqctl"
    result = subprocess.run([ctl, *args], capture_output=True, text=True, timeout=60)
    if result.returncode != 0:
        raise RuntimeError(f"rabbitmqctl {' '.join(args)} failed: {result.stderr.strip()[:300]}")


async def _drop_database(name: str) -> None:
    conn = await asyncpg.connect(PG_ADMIN_DSN, timeout=10)
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await conn.close()


async def _prepare_database(url: str) -> None:
    await migrate_database(url)
    await migrate_database(url)  # twice: the schema must be idempotent


@pytest.fixture(scope="session")
def services() -> Iterator[TestServices]:
    """Create this run's vhost and database; fail (never skip) when either is unreachable."""
    run_id = uuid.uuid4().hex[:12]
    vhost, database = f"test-{run_id}", f"test_{run_id}"
    database_url = f"postgresql://postgres@127.0.0.1:5432/{database}"
    try:
        asyncio.run(_prepare_database(database_url))
    except Exception as exc:
        pytest.exit(f"PostgreSQL is required for the tests and failed: {exc}", returncode=3)
    try:
        _rabbitmqctl("add_vhost", vhost)
        _rabbitmqctl("set_permissions", "-p", vhost, "guest", ".*", ".*", ".*")
    except Exception as exc:
        asyncio.run(_drop_database(database))
        pytest.exit(f"RabbitMQ is required for the tests and failed: {exc}", returncode=3)
    key = base64.b64encode(os.urandom(32)).decode()
    try:
        yield TestServices(vhost, database, f"{AMQP_BASE}/{vhost}", database_url, key)
    finally:
        asyncio.run(_drop_database(database))
        _rabbitmqctl("delete_vhost", vhost)


@pytest.fixture
def settings_factory(services: TestServices, tmp_path: Path) -> Any:
    """Build Settings explicitly for this run's services; keyword overrides win."""
    def build(**overrides: Any) -> Settings:
        values: dict[str, Any] = {
            "amqp_url": services.amqp_url,
            "database_url": services.database_url,
            "local_master_key": services.master_key_b64,
            "local_master_key_file": tmp_path / "master.key",
            "log_format": "json",
            "retry_base_delay_seconds": 0.05,
            "retry_max_delay_seconds": 1.0,
        }
        values.update(overrides)
        return load_settings(**values)

    return build


@pytest.fixture
def settings(settings_factory: Any) -> Settings:
    return settings_factory()


@pytest.fixture
def service_env(services: TestServices, tmp_path: Path) -> dict[str, str]:
    """Environment for running `integration-service` subprocesses against this run."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AMQP_", "DATABASE_"))}
    env.update(
        AMQP_URL=services.amqp_url,
        DATABASE_URL=services.database_url,
        LOCAL_MASTER_KEY=services.master_key_b64,
        LOCAL_MASTER_KEY_FILE=str(tmp_path / "master.key"),
        LOG_FORMAT="json",
        PYTHONUNBUFFERED="1",
    )
    return env


@pytest.fixture
async def pool(services: TestServices) -> Any:
    """An asyncpg pool on this run's database, closed after the test."""
    from service.database import create_pool

    created = await create_pool(services.database_url, min_size=1, max_size=5)
    try:
        yield created
    finally:
        await created.close()


@pytest.fixture
def venue_id() -> str:
    """A venue id no other test uses."""
    return f"venue-{uuid.uuid4().hex[:10]}"


# The provider sandbox (sandbox/, CONTRACT section 7) -----------------------------------


@dataclass
class SandboxServer:
    """A running sandbox: its base URL and the app-wide keys and OAuth clients it knows."""

    __test__ = False
    url: str
    state: Any  # sandbox.core.SandboxState: read it only between calls (another thread owns it)
    square_client_id: str = "sq0idp-sandbox-test-client"
    square_client_secret: str = "sq0csp-sandbox-test-secret"
    quickbooks_client_id: str = "qb-sandbox-test-client"
    quickbooks_client_secret: str = "qb-sandbox-test-secret"
    mailchimp_client_id: str = "mc-sandbox-test-client"
    mailchimp_client_secret: str = "mc-sandbox-test-secret"
    square_webhook_signature_key: str = "sandbox-square-signature-key"
    quickbooks_webhook_verifier_token: str = "sandbox-quickbooks-verifier-token"

    def control(self, method: str, path: str, payload: Any = None) -> Any:
        """Call a /_sandbox control endpoint synchronously and return its JSON answer."""
        import json
        import urllib.request

        data = None if payload is None else json.dumps(payload).encode()
        request = urllib.request.Request(
            self.url + path, data=data, method=method, headers={"Content-Type": "application/json"}
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            return json.loads(response.read() or b"null")

    def reset(self) -> None:
        """Empty the sandbox: accounts, records, faults, calls."""
        self.control("POST", "/_sandbox/reset", {})


@pytest.fixture(scope="session")
def sandbox_server() -> Iterator[SandboxServer]:
    """The sandbox on a free port, served from a background thread with its own event loop."""
    import threading

    from aiohttp import web

    from sandbox.control import STATE_KEY
    from sandbox.server import create_app

    keys = SandboxServer(url="", state=None)
    app = create_app(
        token_ttl_seconds=None,
        square_webhook_signature_key=keys.square_webhook_signature_key,
        quickbooks_webhook_verifier_token=keys.quickbooks_webhook_verifier_token,
        clients={
            "square": (keys.square_client_id, keys.square_client_secret),
            "quickbooks": (keys.quickbooks_client_id, keys.quickbooks_client_secret),
            "mailchimp": (keys.mailchimp_client_id, keys.mailchimp_client_secret),
        },
    )
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, name="sandbox", daemon=True)
    thread.start()
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=2.0)

    async def start() -> int:
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        return int(runner.addresses[0][1])

    port = asyncio.run_coroutine_threadsafe(start(), loop).result(timeout=10)
    keys.url, keys.state = f"http://127.0.0.1:{port}", app[STATE_KEY]
    try:
        yield keys
    finally:
        asyncio.run_coroutine_threadsafe(runner.cleanup(), loop).result(timeout=10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=10)
        loop.close()


# aioresponses 0.7.9 (the newest) predates aiohttp 3.14's required ``stream_writer`` argument
# of ClientResponse; give its mocked responses a finished, empty writer so it works unchanged.
def _patch_aioresponses_for_aiohttp_314() -> None:
    import inspect

    import aiohttp
    import aioresponses.core

    if "stream_writer" not in inspect.signature(aiohttp.ClientResponse.__init__).parameters:
        return

    class _FinishedWriter:
        output_size = 0

    class _CompatResponse(aiohttp.ClientResponse):
        def __init__(self, method: str, url: Any, **kwargs: Any) -> None:
            kwargs.setdefault("stream_writer", _FinishedWriter())
            super().__init__(method, url, **kwargs)

    aioresponses.core.ClientResponse = _CompatResponse  # type: ignore[misc]


_patch_aioresponses_for_aiohttp_314()


# Nothing may block the event loop (STYLE.md, after aiohttp's own test suite) ----------------


@pytest.fixture(autouse=True)
def no_blocking_in_async_tests(request: pytest.FixtureRequest) -> Iterator[None]:
    """Fail an async test whose code makes a blocking call on the event loop (blockbuster)."""
    import inspect

    if not inspect.iscoroutinefunction(getattr(request.node, "obj", None)):
        yield
        return
    from blockbuster import blockbuster_ctx

    # asyncpg looks for ~/.pgpass and ~/.postgresql when it connects (a few stat calls per
    # new connection, inside the library): that much is accepted.
    with blockbuster_ctx(scanned_modules=list(PROJECT_PACKAGES)) as detector:
        for function in detector.functions.values():
            function.can_block_in("asyncpg/connect_utils.py", "_parse_connect_dsn_and_args")
            # Tests build Settings inside coroutines; the service builds them once at start.
            function.can_block_in("pydantic_settings/sources/providers/dotenv.py", "_read_env_files")
            # A logged traceback reads its source lines (only ever when something crashed).
            function.can_block_in("linecache.py", {"checkcache", "updatecache"})
            function.can_block_in("rich/traceback.py", "_render_stack")
        yield


PROJECT_PACKAGES = ("service", "consumers", "providers", "sandbox")


def _import_project() -> None:
    """Import every project module now, so a lazy import inside a coroutine is not mistaken
    for blocking I/O on the loop (imports read files; they happen once per process)."""
    import importlib
    import pkgutil

    for package in PROJECT_PACKAGES:
        module = importlib.import_module(package)
        for info in pkgutil.walk_packages(module.__path__, prefix=f"{package}."):
            importlib.import_module(info.name)


_import_project()
