"""LOCAL_MASTER_KEY / LOCAL_MASTER_KEY_FILE: generated once, mode 0600, with a warning."""

from __future__ import annotations

import base64
import os
import stat
from pathlib import Path

import pytest
import structlog
from structlog.testing import capture_logs

from service.config import load_settings
from service.errors import ConfigurationError
from service.logs import configure_logging, shared_processors
from service.vault.keys import load_master_key


@pytest.fixture(autouse=True)
def _isolated(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name in ("LOCAL_MASTER_KEY", "LOCAL_MASTER_KEY_FILE", "KMS_ENABLED", "ENVIRONMENT"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(tmp_path)
    configure_logging(level="INFO", fmt="json")
    structlog.contextvars.clear_contextvars()


def test_key_file_is_generated_once_with_mode_0600_and_a_warning(tmp_path: Path) -> None:
    """The first use creates the file (0600) and warns where; later uses read it silently."""
    path = tmp_path / "nested" / "master.key"
    settings = load_settings(local_master_key_file=path)
    with capture_logs(processors=shared_processors()) as first_logs:
        first = load_master_key(settings)
    with capture_logs(processors=shared_processors()) as second_logs:
        second = load_master_key(settings)
    warnings = [e for e in first_logs if e["log_level"] == "warning"]
    assert (32, first, 0o600, 1, str(path), []) == (
        len(first), second, stat.S_IMODE(path.stat().st_mode), len(warnings), warnings[0]["path"],
        second_logs)
    assert str(path) in warnings[0]["hint"]


def test_key_file_tilde_is_expanded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The default-style `~/...` path lands in the home directory."""
    monkeypatch.setenv("HOME", str(tmp_path))
    settings = load_settings(local_master_key_file=Path("~/.config/integration-service/master.key"))
    load_master_key(settings)
    assert (tmp_path / ".config" / "integration-service" / "master.key").is_file()


def test_explicit_master_key_wins_over_the_file(tmp_path: Path) -> None:
    """LOCAL_MASTER_KEY is used as given, and no file is written."""
    raw = os.urandom(32)
    path = tmp_path / "master.key"
    settings = load_settings(local_master_key=base64.b64encode(raw).decode(), local_master_key_file=path)
    assert (raw, False) == (load_master_key(settings), path.exists())


def test_existing_key_file_is_read(tmp_path: Path) -> None:
    """A key file that already exists (made by another command) is used as is."""
    raw = os.urandom(32)
    path = tmp_path / "master.key"
    path.write_text(base64.b64encode(raw).decode() + "\n", encoding="utf-8")
    assert raw == load_master_key(load_settings(local_master_key_file=path))


def test_corrupt_key_file_is_a_configuration_error(tmp_path: Path) -> None:
    """A key file that is not base64 of 32 bytes fails naming LOCAL_MASTER_KEY_FILE."""
    path = tmp_path / "master.key"
    path.write_text("c2hvcnQ=\n", encoding="utf-8")
    with pytest.raises(ConfigurationError, match="LOCAL_MASTER_KEY_FILE .*32 bytes"):
        load_master_key(load_settings(local_master_key_file=path))


def test_racing_processes_all_get_the_same_key(tmp_path: Path) -> None:
    """Commands starting together (daemon and ingress) generate one key and all read it."""
    import subprocess
    import sys

    path = tmp_path / "raced" / "master.key"
    script = ("import sys; from service.config import load_settings; from service.vault.keys import "
              "load_master_key; from service.logs import configure_logging; configure_logging(); "
              "sys.stdout.write(load_master_key(load_settings()).hex())")
    env = {k: v for k, v in os.environ.items() if not k.startswith("LOCAL_MASTER_KEY")}
    env.update(LOCAL_MASTER_KEY_FILE=str(path), LOG_FORMAT="json")
    procs = [subprocess.Popen([sys.executable, "-c", script], env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for _ in range(4)]
    results = [proc.communicate(timeout=60) for proc in procs]
    keys = {out for out, _ in results}
    warnings = sum(err.count("local_master_key_generated") for _, err in results)
    assert (1, 64, 1, [p.name for p in path.parent.iterdir()]) == (
        len(keys), len(keys.pop()), warnings, ["master.key"])
