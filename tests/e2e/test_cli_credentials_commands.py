"""`integration-service credentials ...` as a subprocess, local master key mode."""

from __future__ import annotations

import glob
import json
import os
import shutil
import socket
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

CLI = str(Path(sys.executable).with_name("integration-service"))


def cli(env: dict[str, str], *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    """Run the console script; no run ever prints a traceback."""
    result = subprocess.run([CLI, *args], env=env, input=stdin, capture_output=True, text=True, timeout=60)
    assert "Traceback" not in result.stderr + result.stdout
    return result


def failed(result: subprocess.CompletedProcess[str]) -> tuple[int, int, bool]:
    """(exit status, stderr line count, starts with 'error:') of a failed run."""
    return result.returncode, len(result.stderr.splitlines()), result.stderr.startswith("error:")


def pg_dump_path() -> str:
    """pg_dump from PATH or the Debian locations; the tests need it, so fail if absent."""
    found = [shutil.which("pg_dump") or "", "/usr/bin/pg_dump",
             *sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_dump"), reverse=True)]
    for path in found:
        if path and os.access(path, os.X_OK):
            return path
    pytest.fail("pg_dump not found (install postgresql-client): the no-plaintext check needs it")


def rfc3339(delta: timedelta) -> str:
    return (datetime.now(UTC) + delta).isoformat().replace("+00:00", "Z")


def show_json(env: dict[str, str], venue: str) -> list[dict[str, Any]]:
    result = cli(env, "credentials", "show", "--venue", venue, "--json")
    assert 0 == result.returncode, result.stderr
    return [json.loads(line) for line in result.stdout.splitlines()]


@pytest.fixture
def env(service_env: dict[str, str]) -> dict[str, str]:
    """The run's environment, at DEBUG so that every log line a command could write is written."""
    return {**service_env, "LOG_LEVEL": "DEBUG"}


def test_set_from_file_and_stdin_show_and_json(env: dict[str, str], venue_id: str, tmp_path: Path) -> None:
    """set reads --secret-file or --secret-stdin; show prints a table and contract JSON."""
    secret_file = tmp_path / "stripe.key"
    secret_file.write_text("sk_test_" + "F1le" * 6 + "\n", encoding="utf-8")
    from_file = cli(env, "credentials", "set", "--venue", venue_id, "--provider", "stripe",
                    "--kind", "api_key", "--secret-file", str(secret_file))
    from_stdin = cli(env, "credentials", "set", "--venue", venue_id, "--provider", "stripe",
                     "--kind", "webhook_secret", "--secret-stdin", stdin="whsec_" + "St6in" * 5 + "\n")
    assert (0, 0) == (from_file.returncode, from_stdin.returncode), from_file.stderr + from_stdin.stderr
    table = cli(env, "credentials", "show", "--venue", venue_id)
    rows = show_json(env, venue_id)
    assert ["VENUE", "PROVIDER", "KIND", "VERSION", "STATUS"] == table.stdout.splitlines()[0].split()[:5]
    assert [(venue_id, "stripe", "api_key", 1, "unverified"),
            (venue_id, "stripe", "webhook_secret", 1, "unverified")] == [
        (r["venue_id"], r["provider"], r["kind"], r["version"], r["status"]) for r in rows]
    required = {"venue_id", "provider", "kind", "version", "status", "created_at", "rotated_at",
                "last_used_at", "expires_at"}
    assert [] == [r for r in rows if not required <= set(r)]
    printed = table.stdout + json.dumps(rows)
    assert (False, False) == ("F1le" in printed, "St6in" in printed)


def test_no_plaintext_in_pg_dump_or_any_log_line(
    env: dict[str, str], venue_id: str, services: Any, tmp_path: Path
) -> None:
    """After set and rotate, neither pg_dump of the database nor any output holds the secret."""
    secret = "sk_live_" + os.urandom(12).hex()
    oauth = json.dumps({"access_token": "at-" + os.urandom(12).hex(), "refresh_token": None,
                        "expires_at": None, "server_prefix": "us6"})
    outputs = [
        cli(env, "credentials", "set", "--venue", venue_id, "--provider", "stripe", "--kind", "api_key",
            "--secret-stdin", stdin=secret),
        cli(env, "credentials", "set", "--venue", venue_id, "--provider", "mailchimp", "--kind", "oauth",
            "--secret-stdin", stdin=oauth),
        cli(env, "credentials", "rotate", "--venue", venue_id, "--provider", "stripe", "--kind", "api_key"),
        cli(env, "credentials", "rotate", "--venue", venue_id, "--provider", "mailchimp", "--kind", "oauth"),
        cli(env, "credentials", "show", "--json"),
    ]
    assert [0] * 5 == [o.returncode for o in outputs], [o.stderr for o in outputs]
    dump = subprocess.run([pg_dump_path(), "--data-only", "--dbname", services.database_url],
                          capture_output=True, text=True, timeout=60, check=True).stdout
    assert venue_id in dump  # the dump does hold the rows: the check below is not vacuous
    access_token = json.loads(oauth)["access_token"]
    needles = [secret, access_token, secret.encode().hex(), access_token.encode().hex()]
    logs = "".join(o.stdout + o.stderr for o in outputs)
    assert ([], []) == ([n for n in needles if n in dump], [n for n in needles if n in logs])


def test_set_again_rotate_and_delete(env: dict[str, str], venue_id: str) -> None:
    """set again bumps the version; rotate bumps it with a new data key; delete removes the rows."""
    def store(secret: str) -> subprocess.CompletedProcess[str]:
        return cli(env, "credentials", "set", "--venue", venue_id, "--provider", "mailchimp",
                   "--kind", "api_key", "--secret-stdin", stdin=secret)

    store("0123456789abcdef0123456789abcdef-us6")
    store("fedcba9876543210fedcba9876543210-us6")
    cli(env, "credentials", "set", "--venue", venue_id, "--provider", "mailchimp", "--kind", "webhook_secret",
        "--secret-stdin", stdin="url-token-abc")
    keys_before = {r["kind"]: bytes(r["wrapped_data_key"]) for r in _rows_sync(env, venue_id)}
    rotated = cli(env, "credentials", "rotate", "--venue", venue_id, "--provider", "mailchimp",
                  "--kind", "api_key")
    keys_after = {r["kind"]: bytes(r["wrapped_data_key"]) for r in _rows_sync(env, venue_id)}
    versions = {r["kind"]: r["version"] for r in show_json(env, venue_id)}
    assert (0, {"api_key": 3, "webhook_secret": 1}) == (rotated.returncode, versions)
    assert (True, True) == (keys_before["api_key"] != keys_after["api_key"],
                            keys_before["webhook_secret"] == keys_after["webhook_secret"])
    one = cli(env, "credentials", "delete", "--venue", venue_id, "--provider", "mailchimp",
              "--kind", "api_key")
    rest = cli(env, "credentials", "delete", "--venue", venue_id, "--provider", "mailchimp")
    assert (0, 0, []) == (one.returncode, rest.returncode, _rows_sync(env, venue_id))


def _rows_sync(env: dict[str, str], venue_id: str) -> list[dict[str, Any]]:
    """The venue's raw credential rows, read with psql-free asyncpg in a fresh loop."""
    import asyncio

    import asyncpg

    async def fetch() -> list[dict[str, Any]]:
        conn = await asyncpg.connect(env["DATABASE_URL"], timeout=10)
        try:
            rows = await conn.fetch("SELECT * FROM credentials WHERE venue_id = $1 ORDER BY kind", venue_id)
            return [dict(r) for r in rows]
        finally:
            await conn.close()

    return asyncio.run(fetch())


def test_oauth_near_expiry_shows_stale(env: dict[str, str], venue_id: str) -> None:
    """An OAuth token within 5 minutes of expiry shows as stale; one further out does not."""
    for provider, id_field, minutes in (("quickbooks", "realm_id", 3), ("square", "merchant_id", 30)):
        token_set = {"access_token": "a", "refresh_token": "r", id_field: "ACCOUNT1",
                     "expires_at": rfc3339(timedelta(minutes=minutes))}
        result = cli(env, "credentials", "set", "--venue", venue_id, "--provider", provider,
                     "--kind", "oauth", "--secret-stdin", stdin=json.dumps(token_set))
        assert 0 == result.returncode, result.stderr
    rows = {r["provider"]: r for r in show_json(env, venue_id)}
    assert (("stale", "ACCOUNT1"), ("unverified", "ACCOUNT1")) == (
        (rows["quickbooks"]["status"], rows["quickbooks"]["realm_id"]),
        (rows["square"]["status"], rows["square"]["merchant_id"]))


def test_square_api_key_set_survives_square_being_away(env: dict[str, str], venue_id: str) -> None:
    """Learning the merchant id is best effort: with Square unreachable, set still stores the key."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        closed_port = probe.getsockname()[1]
    away = {**env, "SQUARE_API_BASE": f"http://127.0.0.1:{closed_port}/square"}
    result = cli(away, "credentials", "set", "--venue", venue_id, "--provider", "square", "--kind", "api_key",
                 "--secret-stdin", stdin="EAAA" + "s" * 30)
    assert (0, [("square", "api_key", 1)]) == (
        result.returncode, [(r["provider"], r["kind"], r["version"]) for r in show_json(env, venue_id)])


SET = ["credentials", "set", "--venue", "v"]
def test_rotate_oauth_with_the_token_endpoint_away(service_env: dict[str, str], venue_id: str) -> None:
    """rotate re-encrypts first; a refresh that cannot reach the provider is one line, exit 1."""
    token_set = {"access_token": "a", "refresh_token": "r", "realm_id": "4620816365",
                 "expires_at": rfc3339(timedelta(hours=1))}
    cli(service_env, "credentials", "set", "--venue", venue_id, "--provider", "quickbooks", "--kind", "oauth",
        "--secret-stdin", stdin=json.dumps(token_set))
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        closed_port = probe.getsockname()[1]
    away = {**service_env, "QUICKBOOKS_OAUTH_URL": f"http://127.0.0.1:{closed_port}/token",
            "QUICKBOOKS_CLIENT_ID": "client", "QUICKBOOKS_CLIENT_SECRET": "client-secret"}
    result = cli(away, "credentials", "rotate", "--venue", venue_id, "--provider", "quickbooks",
                 "--kind", "oauth")
    assert (1, 1, True) == failed(result), result.stderr
    assert [2] == [r["version"] for r in show_json(service_env, venue_id)]


BAD_INPUT: dict[str, tuple[list[str], str | None]] = {
    "no secret source": ([*SET, "--provider", "stripe", "--kind", "api_key"], None),
    "two secret sources": ([*SET, "--provider", "stripe", "--kind", "api_key", "--secret-stdin",
                            "--secret-file", "/etc/hostname"], "x"),
    "secret option on argv": ([*SET, "--provider", "stripe", "--kind", "api_key", "--secret", "sk_test_argv"],
                              None),
    "secret argument on argv": ([*SET, "--provider", "stripe", "--kind", "api_key", "sk_test_argv"], None),
    "empty stdin": ([*SET, "--provider", "stripe", "--kind", "api_key", "--secret-stdin"], "\n"),
    "missing file": ([*SET, "--provider", "stripe", "--kind", "api_key", "--secret-file", "/nonexistent/s"],
                     None),
    "kind not used": ([*SET, "--provider", "stripe", "--kind", "oauth", "--secret-stdin"], "{}"),
    "bad whsec": ([*SET, "--provider", "stripe", "--kind", "webhook_secret", "--secret-stdin"],
                  "not-a-whsec"),
    "delete unknown": (["credentials", "delete", "--venue", "no-such-venue-xyz", "--provider", "stripe"],
                       None),
    "rotate unknown": (["credentials", "rotate", "--venue", "no-such-venue-xyz", "--provider", "stripe",
                        "--kind", "api_key"], None),
    "show bad provider": (["credentials", "show", "--provider", "paypal"], None),
    "no such command": (["credentials", "frobnicate"], None),
}


def test_bad_input_exits_2_with_one_line(service_env: dict[str, str]) -> None:
    """Bad arguments, secrets or an unknown venue: exit 2, one line on stderr, secret not echoed."""
    procs = {name: subprocess.Popen([CLI, *args], env=service_env, text=True, stdin=subprocess.PIPE,
                                    stdout=subprocess.PIPE, stderr=subprocess.PIPE)
             for name, (args, _) in BAD_INPUT.items()}
    outcomes = {}
    for name, proc in procs.items():
        out, err = proc.communicate(BAD_INPUT[name][1] or "", timeout=60)
        outcomes[name] = (proc.returncode, len(err.splitlines()), err.startswith("error:"),
                          "Traceback" in out + err, "sk_test_argv" in err or "not-a-whsec" in err)
    assert {name: (2, 1, True, False, False) for name in BAD_INPUT} == outcomes


def test_unreachable_database_exits_1_with_one_line(service_env: dict[str, str]) -> None:
    """An unreachable PostgreSQL is exit 1, one line naming it, no password."""
    away = {**service_env, "DATABASE_URL": "postgresql://postgres:hunter2@127.0.0.1:1/nowhere"}
    result = cli(away, "credentials", "show")
    assert (1, 1, True, False) == (*failed(result), "hunter2" in result.stderr)
    assert "PostgreSQL" in result.stderr


def test_every_credentials_command_has_help(env: dict[str, str]) -> None:
    """Each subcommand answers --help with exit 0 and mentions its options."""
    outputs = {name: cli(env, "credentials", name, "--help") for name in ("set", "show", "delete", "rotate")}
    assert {name: 0 for name in outputs} == {name: r.returncode for name, r in outputs.items()}
    assert "--secret-stdin" in outputs["set"].stdout and "--json" in outputs["show"].stdout


def test_unmigrated_database_says_run_migrate(service_env: dict[str, str]) -> None:
    """A missing database or a database without the schema: one line telling to run migrate."""
    import asyncio
    import uuid

    import asyncpg

    name = f"test_unmigrated_{uuid.uuid4().hex[:10]}"
    admin = "postgresql://postgres@127.0.0.1:5432/postgres"

    async def admin_sql(sql: str) -> None:
        conn = await asyncpg.connect(admin, timeout=10)
        try:
            await conn.execute(sql)
        finally:
            await conn.close()

    missing = cli({**service_env, "DATABASE_URL": f"postgresql://postgres@127.0.0.1:5432/{name}_none"},
                  "credentials", "show")
    asyncio.run(admin_sql(f'CREATE DATABASE "{name}"'))
    try:
        empty = cli({**service_env, "DATABASE_URL": f"postgresql://postgres@127.0.0.1:5432/{name}"},
                    "credentials", "show")
    finally:
        asyncio.run(admin_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    assert [(1, 1, True), (1, 1, True)] == [failed(missing), failed(empty)]
    assert ("migrate" in missing.stderr, "migrate" in empty.stderr) == (True, True)
