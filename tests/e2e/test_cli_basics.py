"""The CLI's shared contract: every command has --help; bad input is one line, exit 2."""

from __future__ import annotations

import subprocess
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

CLI = str(Path(__file__).resolve().parents[2] / ".venv" / "bin" / "integration-service")

COMMANDS = [
    [], ["run"], ["ingress"], ["migrate"], ["sandbox"], ["demo"], ["asyncapi"], ["sync"], ["jobs"],
    ["credentials", "set"], ["credentials", "show"], ["credentials", "delete"], ["credentials", "rotate"],
    ["webhooks", "register"], ["mappings", "show"], ["mappings", "set"], ["schedules", "set"],
    ["schedules", "list"], ["schedules", "delete"], ["dead-letters", "list"], ["dead-letters", "replay"],
]

BAD = {
    "no command": [],
    "unknown command": ["frobnicate"],
    "unknown venue in show": ["credentials", "show", "--venue", "nobody-at-all"],
    "unknown venue in sync": ["sync", "--venue", "nobody-at-all", "--provider", "stripe", "--entity", "customers"],
    "unknown entity": ["sync", "--venue", "v", "--provider", "stripe", "--entity", "widgets"],
    "push-only entity pulled the wrong way": ["sync", "--venue", "v", "--provider", "stripe", "--entity",
                                              "charges", "--direction", "push", "--records", "-"],
    "records not JSON": ["sync", "--venue", "v", "--provider", "stripe", "--entity", "customers",
                         "--direction", "push", "--records", "-"],
    "bad option value": ["sync", "--venue", "v", "--provider", "stripe", "--entity", "customers",
                         "--option", "no-equals-sign"],
    "bad job status": ["jobs", "--status", "exploded"],
    "bad schedule interval": ["schedules", "set", "--venue", "v", "--provider", "stripe", "--entity",
                              "customers", "--every", "10s"],
}


def run(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([CLI, *args], env=env, input="{not json", capture_output=True, text=True, timeout=60)


def test_every_command_has_help(service_env: dict[str, str]) -> None:
    """`--help` on every command and group exits 0 and says what the command does."""
    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(lambda args: run([*args, "--help"], service_env), COMMANDS))
    failures = [(c, r.returncode, r.stderr[-200:]) for c, r in zip(COMMANDS, results, strict=True)
                if r.returncode != 0 or "Usage:" not in r.stdout]
    assert [] == failures


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_input_is_one_line_and_exit_2(service_env: dict[str, str], case: str) -> None:
    """Bad arguments, an unknown venue or entity: one line on stderr, exit 2, no traceback."""
    result = run(BAD[case], service_env)
    lines = result.stderr.strip().splitlines()
    assert (2, 1) == (result.returncode, len(lines)), result.stderr
    assert lines[0].startswith("error: ") and "Traceback" not in result.stderr
    assert "" == result.stdout


def test_records_that_are_not_utf8_are_bad_input(service_env: dict[str, str], tmp_path: Path) -> None:
    """A --records file in another encoding is the caller's input: one line, exit 2 (it was
    an `unexpected UnicodeDecodeError`, exit 1)."""
    path = tmp_path / "records.json"
    path.write_bytes(b"\xff\xfe[\x00]\x00")  # UTF-16
    result = run(["sync", "--venue", "v", "--provider", "stripe", "--entity", "customers", "--direction", "push",
                  "--records", str(path)], service_env)
    assert (2, f"error: --records: {path} is not UTF-8 text (byte 0)") == (result.returncode, result.stderr.strip())


def test_a_missing_secret_file_is_named_and_nothing_of_the_message_is_masked(service_env: dict[str, str]) -> None:
    """The log redaction read `--secret-file: cannot` as a secret pair and printed
    `--secret-file: [REDACTED] read ...`."""
    result = run(["credentials", "set", "--venue", "v", "--provider", "stripe", "--kind", "api_key",
                  "--secret-file", "/nonexistent/secret"], service_env)
    expected = "error: No such file or directory (--secret-file /nonexistent/secret)"
    assert (2, expected) == (result.returncode, result.stderr.strip())
