"""Architecture: the import-linter contracts of STYLE.md hold, and every module imports alone."""

from __future__ import annotations

import pkgutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
PACKAGES = ("service", "consumers", "providers", "sandbox")


def test_import_contracts_are_kept() -> None:
    """lint-imports reports every contract in pyproject.toml kept."""
    result = subprocess.run(
        [str(Path(sys.executable).parent / "lint-imports")],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert 0 == result.returncode, result.stdout[-3000:]
    assert "0 broken" in result.stdout


def _modules() -> list[str]:
    names = []
    for package in PACKAGES:
        names.append(package)
        for info in pkgutil.walk_packages([str(REPO / package)], prefix=f"{package}."):
            names.append(info.name)
    return sorted(names)


FORK_EACH = """
import importlib, os, sys, traceback
for lib in ("aiohttp", "asyncpg", "aio_pika", "pydantic", "pydantic_settings", "stripe", "structlog",
            "prometheus_client", "cryptography", "click", "phonenumbers", "pycountry"):
    importlib.import_module(lib)  # third-party only: our own modules must each import first
failed = []
for name in sys.argv[1:]:
    pid = os.fork()
    if pid == 0:
        try:
            importlib.import_module(name)
        except Exception as exc:
            print(f"{name}: {type(exc).__name__}: {exc}", flush=True)
            os._exit(1)
        os._exit(0)
    _, status = os.waitpid(pid, 0)
    if status:
        failed.append(name)
sys.exit(1 if failed else 0)
"""


def test_every_module_imports_alone() -> None:
    """Each module imports first in a fresh child process (no circular-import surprises)."""
    result = subprocess.run(
        [sys.executable, "-c", FORK_EACH, *_modules()], cwd=REPO, capture_output=True, text=True, timeout=300
    )
    assert 0 == result.returncode, result.stdout + result.stderr[-2000:]


def test_ruff_finds_nothing() -> None:
    """ruff (pyproject.toml's rules) is clean over the whole tree."""
    ruff = str(Path(sys.executable).parent / "ruff")
    result = subprocess.run([ruff, "check", "--output-format", "concise", "service", "consumers", "providers",
                             "sandbox", "bench", "tests"], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert 0 == result.returncode, result.stdout[-3000:]


def test_mypy_strict_is_clean() -> None:
    """mypy --strict (pyproject.toml) finds nothing in the service, consumers, providers or sandbox."""
    mypy = str(Path(sys.executable).parent / "mypy")
    result = subprocess.run([mypy, "--cache-dir", "/tmp/integration-service-mypy-cache"], cwd=REPO,
                            capture_output=True, text=True, timeout=300)
    assert 0 == result.returncode, result.stdout[-3000:]
