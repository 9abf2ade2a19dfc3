"""`mappings show/set` against this run's PostgreSQL, in-process and as the real command."""

from __future__ import annotations

import io
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from service.cli import main
from service.database.mappings import delete_override, get_override, put_override
from service.mapping import builtin_mapping, effective_mapping, to_provider


@pytest.fixture
def cli(
    service_env: dict[str, str], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> Any:
    """Run `integration-service ARGS` in-process; returns (status, stdout, stderr)."""
    for name, value in service_env.items():
        monkeypatch.setenv(name, value)

    def run(*args: str, stdin: str | None = None) -> tuple[int, str, str]:
        capsys.readouterr()
        if stdin is not None:
            monkeypatch.setattr(sys, "stdin", io.StringIO(stdin))
        status = main(list(args))
        out, err = capsys.readouterr()
        return status, out, err

    return run


def where(venue: str, provider: str = "square", entity: str = "customers") -> list[str]:
    return ["--venue", venue, "--provider", provider, "--entity", entity]


def test_show_without_override_prints_the_builtin_mapping(cli: Any, venue_id: str) -> None:
    """With nothing stored, show prints the built-in mapping as a JSON document."""
    status, out, _ = cli("mappings", "show", *where(venue_id))
    assert 0 == status
    assert builtin_mapping("square", "customers").as_json() == json.loads(out)


def test_set_from_file_then_show_the_merged_mapping(cli: Any, venue_id: str, tmp_path: Path) -> None:
    """set stores a valid override; show prints it merged in place of the built-in entry."""
    document = [{"platform": "company", "provider": "note", "transform": "strip"}]
    path = tmp_path / "mapping.json"
    path.write_text(json.dumps(document), encoding="utf-8")
    status, out, err = cli("mappings", "set", *where(venue_id), "--file", str(path))
    assert (0, "") == (status, err)
    assert f"stored square customers mapping for {venue_id}: 1 entry, version 1\n" == out
    status, out, _ = cli("mappings", "show", *where(venue_id))
    assert 0 == status
    assert effective_mapping("square", "customers", document).as_json() == json.loads(out)
    company = [entry for entry in json.loads(out) if entry["platform"] == "company"]
    assert [
        {
            "platform": "company",
            "provider": "note",
            "transform": "strip",
            "default": None,
            "required": False,
            "direction": "both",
        }
    ] == company


def test_set_from_stdin_replaces_and_bumps_the_version(cli: Any, venue_id: str) -> None:
    """A second set replaces the document and bumps its version; [] restores the built-in."""
    first = json.dumps([{"platform": "email", "provider": "email_address", "required": True}])
    assert 0 == cli("mappings", "set", *where(venue_id, "mailchimp", "contacts"), stdin=first)[0]
    status, out, _ = cli("mappings", "set", *where(venue_id, "mailchimp", "contacts"), stdin="[]")
    assert (0, f"stored mailchimp contacts mapping for {venue_id}: 0 entries, version 2\n") == (status, out)
    status, out, _ = cli("mappings", "show", *where(venue_id, "mailchimp", "contacts"))
    assert builtin_mapping("mailchimp", "contacts").as_json() == json.loads(out)


@pytest.mark.parametrize(
    ("document", "message"),
    [
        (
            [
                {"platform": "email", "provider": "email_address"},
                {"platform": "phone", "provider": "p", "transform": "foo"},
            ],
            'error: unknown transform "foo" at entry 1',
        ),
        ([{"platform": "email"}], 'error: missing "provider" at entry 0'),
        ([{"provider": "email_address"}], 'error: missing "platform" at entry 0'),
        (
            [{"platform": "emial", "provider": "email_address"}],
            'error: platform path "emial" at entry 0: no field "emial" in Customer',
        ),
        ({"platform": "email"}, "error: a mapping document is a JSON list of entries, not an object"),
    ],
)
def test_set_refuses_a_bad_document_and_stores_nothing(
    cli: Any, venue_id: str, document: Any, message: str
) -> None:
    """A bad document exits 2 with one line naming the problem, and nothing is stored."""
    status, out, err = cli("mappings", "set", *where(venue_id), stdin=json.dumps(document))
    assert (2, "", message + "\n") == (status, out, err)
    _, shown, _ = cli("mappings", "show", *where(venue_id))
    assert builtin_mapping("square", "customers").as_json() == json.loads(shown)


def test_set_refuses_text_that_is_not_json(cli: Any, venue_id: str) -> None:
    """Unparseable input exits 2 naming where it came from."""
    status, _, err = cli("mappings", "set", *where(venue_id), stdin="[{not json")
    assert 2 == status
    assert err.startswith("error: stdin: not JSON: ") and err.count("\n") == 1


@pytest.mark.parametrize(
    ("provider", "entity", "message"),
    [
        ("paypal", "customers", 'unknown provider "paypal"'),
        ("square", "invoices", 'unknown entity "invoices"'),
    ],
)
def test_unknown_provider_or_entity_exits_2(
    cli: Any, venue_id: str, provider: str, entity: str, message: str
) -> None:
    """show and set refuse an unknown provider or entity with exit status 2."""
    for command in ("show", "set"):
        status, _, err = cli("mappings", command, *where(venue_id, provider, entity), stdin="[]")
        assert 2 == status
        assert message in err and err.count("\n") == 1


def test_unreadable_file_exits_2(cli: Any, venue_id: str, tmp_path: Path) -> None:
    """A --file that does not exist is bad input."""
    status, _, err = cli("mappings", "set", *where(venue_id), "--file", str(tmp_path / "absent.json"))
    assert 2 == status
    assert "absent.json" in err


async def test_database_get_put_delete(pool: Any, venue_id: str) -> None:
    """put stores and versions a document, get reads it, delete removes it."""
    assert await get_override(pool, venue_id, "stripe", "customers") is None
    document = [
        {
            "platform": "company",
            "provider": "description",
            "transform": None,
            "default": None,
            "required": False,
            "direction": "both",
        }
    ]
    first = await put_override(pool, venue_id, "stripe", "customers", document)
    second = await put_override(pool, venue_id, "stripe", "customers", document)
    assert (1, 2) == (first.version, second.version)
    stored = await get_override(pool, venue_id, "stripe", "customers")
    assert stored is not None and document == stored.document
    assert await get_override(pool, venue_id, "square", "customers") is None
    mapping = effective_mapping("stripe", "customers", stored.document)
    assert {"description": "Acme"} == to_provider(mapping, {"company": "Acme"})
    assert await delete_override(pool, venue_id, "stripe", "customers") is True
    assert await delete_override(pool, venue_id, "stripe", "customers") is False


def test_real_command_refuses_an_unknown_transform(service_env: dict[str, str], venue_id: str) -> None:
    """The installed console script exits 2 with one stderr line naming the unknown transform."""
    document = json.dumps([{"platform": "email", "provider": "email_address", "transform": "shout"}])
    result = subprocess.run(
        [str(Path(sys.executable).parent / "integration-service"), "mappings", "set", *where(venue_id)],
        input=document,
        capture_output=True,
        text=True,
        env=service_env,
        timeout=60,
    )
    assert (2, "", 'error: unknown transform "shout" at entry 0\n') == (
        result.returncode,
        result.stdout,
        result.stderr,
    )
