"""Ten concurrent users of one expired QuickBooks credential, in two processes: one refresh."""

from __future__ import annotations

import asyncio
import importlib.util
import json
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from service.config import Settings
from service.vault import Vault
from service.vault.keys import key_provider_from_settings

USERS_PER_PROCESS = 5

# Run by both processes: five users, each with its own VaultAuth, call QuickBooks through the
# shared helper at once. The child waits for "go" on stdin so both start together.
WORKER = """
import asyncio, json, sys

import aiohttp

from providers.auth import AuthFactory
from providers.http import ProviderHttp, spec_for
from providers.oauth import Refresher
from service.config import Settings
from service.database import create_pool
from service.database.ratelimit import PostgresBucketStore
from service.limiter import RateLimiter
from service.vault import Vault
from service.vault.keys import key_provider_from_settings


async def run_users(settings: Settings, venue_id: str, users: int, started=None) -> list:
    pool = await create_pool(settings.database_url.get_secret_value(), min_size=1, max_size=4)
    try:
        vault = Vault(pool, key_provider_from_settings(settings))
        async with aiohttp.ClientSession() as session:
            http = ProviderHttp(session, limiter=RateLimiter(PostgresBucketStore(pool)), settings=settings)
            factory = AuthFactory(vault, refresher=Refresher(settings=settings, vault=vault, pool=pool,
                                                             http=http))
            auths = [await factory.for_venue(venue_id, "quickbooks") for _ in range(users)]
            if started is not None:
                await started()

            async def user(auth):
                realm = auth.value("realm_id")
                url = f"{settings.quickbooks_base}/v3/company/{realm}/companyinfo/{realm}"
                reply = await http.request(
                    spec_for("quickbooks"), auth, "GET", url, operation="company_info",
                    params={"minorversion": "75"}, headers={"Accept": "application/json"})
                return [reply.status, sorted(reply.json_object())]

            return await asyncio.gather(*(user(a) for a in auths))
    finally:
        await pool.close()


async def child(venue_id: str, users: int) -> None:
    async def started():
        print("ready", flush=True)
        await asyncio.wait_for(asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline), 30)

    results = await run_users(Settings(), venue_id, users, started)
    print(json.dumps(results), flush=True)


if __name__ == "__main__":
    asyncio.run(child(sys.argv[1], int(sys.argv[2])))
"""


def load_worker(path: Path) -> Any:
    spec = importlib.util.spec_from_file_location("refresh_worker", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def qb_settings(sandbox_server: Any) -> dict[str, str]:
    return {
        "quickbooks_api_base": f"{sandbox_server.url}/quickbooks",
        "quickbooks_oauth_url": f"{sandbox_server.url}/quickbooks/oauth2/v1/tokens/bearer",
        "quickbooks_client_id": sandbox_server.quickbooks_client_id,
        "quickbooks_client_secret": sandbox_server.quickbooks_client_secret,
    }


async def test_ten_users_in_two_processes_cause_exactly_one_refresh(
    sandbox_server: Any,
    settings_factory: Any,
    service_env: dict[str, str],
    venue_id: str,
    pool: Any,
    tmp_path: Path,
) -> None:
    """Ten concurrent users (5 + 5 in two processes) of one expired token: one refresh, ten 200s."""
    realm = f"9{abs(hash(venue_id)) % 10**12:012d}"
    expired = (datetime.now(UTC) - timedelta(minutes=1)).isoformat().replace("+00:00", "Z")
    tokens = {
        "access_token": f"old-{venue_id}",
        "refresh_token": f"rt-{venue_id}",
        "expires_at": expired,
        "realm_id": realm,
    }
    sandbox_server.control(
        "POST",
        "/_sandbox/accounts",
        {
            "provider": "quickbooks",
            "account": venue_id,
            "oauth": {
                **tokens,
                "client_id": sandbox_server.quickbooks_client_id,
                "client_secret": sandbox_server.quickbooks_client_secret,
            },
        },
    )
    overrides = qb_settings(sandbox_server)
    settings: Settings = settings_factory(**overrides)
    vault = Vault(pool, key_provider_from_settings(settings))
    await vault.set(venue_id, "quickbooks", "oauth", json.dumps(tokens))

    worker_path = tmp_path / "refresh_worker.py"
    worker_path.write_text(WORKER, encoding="utf-8")
    env = {**service_env, **{k.upper(): v for k, v in overrides.items()}, "LOG_LEVEL": "WARNING"}
    child = await asyncio.create_subprocess_exec(
        sys.executable,
        str(worker_path),
        venue_id,
        str(USERS_PER_PROCESS),
        env=env,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        assert child.stdout is not None and child.stdin is not None
        ready = await asyncio.wait_for(child.stdout.readline(), 60)
        assert b"ready\n" == ready, (await child.stderr.read()).decode()[-2000:] if child.stderr else ""
        worker = load_worker(worker_path)

        async def go() -> None:
            assert child.stdin is not None
            child.stdin.write(b"go\n")
            await child.stdin.drain()

        mine = await asyncio.wait_for(worker.run_users(settings, venue_id, USERS_PER_PROCESS, go), 60)
        output = await asyncio.wait_for(child.stdout.read(), 60)  # logs, then the JSON results
        assert await asyncio.wait_for(child.wait(), 30) == 0
    finally:
        if child.returncode is None:
            child.kill()
            await child.wait()
    theirs = json.loads([line for line in output.decode().splitlines() if line.startswith("[")][-1])

    calls = sandbox_server.control("GET", "/_sandbox/calls?provider=quickbooks")["calls"]
    refreshes = [c for c in calls if c["path"] == "/oauth2/v1/tokens/bearer" and c["account"] == venue_id]
    api_calls = [c for c in calls if c["path"].endswith(f"/companyinfo/{realm}")]
    stored = (await vault.get(venue_id, "quickbooks", "oauth")).oauth()
    assert [[200, ["CompanyInfo", "time"]]] * 10 == [list(r) for r in mine] + theirs
    assert [200] == [c["status"] for c in refreshes]
    assert [200] * 10 == [c["status"] for c in api_calls]
    assert stored["refresh_token"] != tokens["refresh_token"]
    assert "valid" == (await vault.show(venue_id, "quickbooks"))[0].status
