"""`integration-service credentials ...` with KMS_ENABLED=true against moto's KMS server."""

from __future__ import annotations

import asyncio
import glob
import json
import os
import shutil
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import asyncpg
import boto3
import pytest

from service.database import open_pool
from service.vault import KmsKeyProvider, Vault

CLI = str(Path(sys.executable).with_name("integration-service"))
REGION = "us-east-1"
DUMMY_AWS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing"}


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


@pytest.fixture(scope="module")
def kms_endpoint() -> Iterator[str]:
    """moto's KMS as a real HTTP server on 127.0.0.1, for the CLI subprocesses."""
    from moto.server import ThreadedMotoServer

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.stop()


@pytest.fixture(scope="module")
def kms_key_id(kms_endpoint: str) -> str:
    client = boto3.client("kms", region_name=REGION, endpoint_url=kms_endpoint,
                          aws_access_key_id="testing", aws_secret_access_key="testing")
    try:
        key_id: str = client.create_key(Description="cli test")["KeyMetadata"]["KeyId"]
    finally:
        client.close()
    return key_id


@pytest.fixture(autouse=True)
def aws_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Dummy AWS credentials for the in-process boto3 clients of these tests."""
    for name, value in DUMMY_AWS.items():
        monkeypatch.setenv(name, value)


@pytest.fixture
def kms_env(service_env: dict[str, str], kms_endpoint: str, kms_key_id: str) -> dict[str, str]:
    """The run's environment in KMS mode; no local master key to fall back on."""
    env = {k: v for k, v in service_env.items() if not k.startswith(("AWS_", "LOCAL_MASTER_KEY"))}
    return {**env, **DUMMY_AWS, "KMS_ENABLED": "true", "KMS_KEY_ID": kms_key_id,
            "KMS_ENDPOINT": kms_endpoint, "AWS_REGION": REGION, "LOG_LEVEL": "DEBUG"}


def cli(env: dict[str, str], *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    result = subprocess.run([CLI, *args], env=env, input=stdin, capture_output=True, text=True, timeout=90)
    assert "Traceback" not in result.stderr + result.stdout
    return result


def pg_dump_path() -> str:
    found = [shutil.which("pg_dump") or "", "/usr/bin/pg_dump",
             *sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_dump"), reverse=True)]
    for path in found:
        if path and os.access(path, os.X_OK):
            return path
    pytest.fail("pg_dump not found (install postgresql-client): the no-plaintext check needs it")


async def _read_back(database_url: str, endpoint: str, key_id: str, venue: str, provider: str,
                     kind: str) -> tuple[str, Any]:
    """Decrypt in-process what the CLI stored, and return the raw row beside it."""
    keys = KmsKeyProvider(key_id=key_id, region=REGION, endpoint=endpoint)
    try:
        async with open_pool(database_url, min_size=1, max_size=2) as pool:
            secret = (await Vault(pool, keys).get(venue, provider, kind)).secret
            row = await pool.fetchrow("SELECT * FROM credentials WHERE venue_id = $1 AND kind = $2",
                                      venue, kind)
        return secret, row
    finally:
        await keys.close()


def read_back(env: dict[str, str], venue: str, provider: str, kind: str) -> tuple[str, Any]:
    return asyncio.run(_read_back(env["DATABASE_URL"], env["KMS_ENDPOINT"], env["KMS_KEY_ID"],
                                  venue, provider, kind))


@pytest.mark.parametrize(("provider", "kind", "secret"), [
    ("stripe", "api_key", "sk_live_" + "KmsMode" * 4),
    ("mailchimp", "oauth", json.dumps({"access_token": "mc-at-KmsMode", "refresh_token": None,
                                       "expires_at": None, "server_prefix": "us6"})),
    ("stripe", "webhook_secret", "whsec_" + "KmsMode" * 4),
])
def test_kms_round_trip_rotate_and_no_plaintext(
    kms_env: dict[str, str], venue_id: str, services: Any, provider: str, kind: str, secret: str
) -> None:
    """KMS mode: the secret reads back after set and rotate, the data key changes, no plaintext in pg_dump."""
    stored = cli(kms_env, "credentials", "set", "--venue", venue_id, "--provider", provider,
                 "--kind", kind, "--secret-stdin", stdin=secret)
    assert 0 == stored.returncode, stored.stderr
    first_secret, first_row = read_back(kms_env, venue_id, provider, kind)
    rotated = cli(kms_env, "credentials", "rotate", "--venue", venue_id, "--provider", provider,
                  "--kind", kind)
    second_secret, second_row = read_back(kms_env, venue_id, provider, kind)
    shown = json.loads(cli(kms_env, "credentials", "show", "--venue", venue_id, "--json").stdout)
    assert (0, secret, secret, "kms", 2, True) == (
        rotated.returncode, first_secret, second_secret, shown["key_source"], shown["version"],
        bytes(first_row["wrapped_data_key"]) != bytes(second_row["wrapped_data_key"]))
    dump = subprocess.run([pg_dump_path(), "--data-only", "--dbname", services.database_url],
                          capture_output=True, text=True, timeout=60, check=True).stdout
    outputs = stored.stdout + stored.stderr + rotated.stdout + rotated.stderr
    assert (True, False, False, False) == (
        venue_id in dump, "KmsMode" in dump, b"KmsMode".hex() in dump, "KmsMode" in outputs)


def test_tampered_wrapped_key_fails_with_one_line(kms_env: dict[str, str], venue_id: str) -> None:
    """A flipped byte in the KMS-wrapped data key: rotate exits 1 with KMS's refusal, one line."""
    cli(kms_env, "credentials", "set", "--venue", venue_id, "--provider", "stripe", "--kind", "api_key",
        "--secret-stdin", stdin="sk_test_" + "t" * 24)

    async def tamper() -> None:
        conn = await asyncpg.connect(kms_env["DATABASE_URL"], timeout=10)
        try:
            wrapped = bytearray(await conn.fetchval(
                "SELECT wrapped_data_key FROM credentials WHERE venue_id = $1", venue_id))
            wrapped[-1] ^= 0x01
            await conn.execute("UPDATE credentials SET wrapped_data_key = $2 WHERE venue_id = $1",
                               venue_id, bytes(wrapped))
        finally:
            await conn.close()

    asyncio.run(tamper())
    result = cli(kms_env, "credentials", "rotate", "--venue", venue_id, "--provider", "stripe",
                 "--kind", "api_key")
    assert (1, 1) == (result.returncode, len(result.stderr.splitlines())), result.stderr
    assert "KMS refused to decrypt" in result.stderr


def test_unreachable_kms_fails_with_one_line(kms_env: dict[str, str], venue_id: str) -> None:
    """KMS away: set exits 1 with one line naming KMS, and stores nothing."""
    away = {**kms_env, "KMS_ENDPOINT": f"http://127.0.0.1:{free_port()}", "LOG_LEVEL": "INFO"}
    result = cli(away, "credentials", "set", "--venue", venue_id, "--provider", "stripe", "--kind", "api_key",
                 "--secret-stdin", stdin="sk_test_" + "w" * 24)
    shown = cli(kms_env, "credentials", "show", "--venue", venue_id, "--json")
    assert (1, 1, True, "") == (result.returncode, len(result.stderr.splitlines()),
                                 "KMS generate_data_key failed" in result.stderr, shown.stdout)
