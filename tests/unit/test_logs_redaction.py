"""Redaction: no planted secret survives the configured structlog processors or the renderer."""

from __future__ import annotations

import io
import json
import logging
import sys
from collections.abc import Iterator
from typing import Any

import pytest
import structlog
from hypothesis import given, settings
from hypothesis import strategies as st
from structlog.testing import capture_logs

from service.logs import REDACTED, bind_message_context, configure_logging, redact_text, shared_processors

SECRETS = {
    "stripe_live": "sk_live_51HabcDEFghiJKLmnoPQR",
    "stripe_test": "sk_test_4eC39HqLyjWDarjtT1zdp7dc",
    "stripe_restricted": "rk_live_51HabcRESTRICTEDkey99",
    "whsec": "whsec_3x4mpl3S1gn1ngS3cr3tV4lu3",
    "bearer_jwt": "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ2ZW51ZS00MiJ9.c2lnbmF0dXJlLXZhbHVl",
    "bearer_opaque": "ya29a0ARrdaM9opaqueTokenValue",
    "basic": "YW55c3RyaW5nOmhpZGRlbmtleQ==",
    "url_password": "Pa55w0rdInUrl",
    "mailchimp_key": "0123456789abcdef0123456789abcdef-us21",
    "square_token": "EAAAEOuLQzOgdVWmSandboxToken42",
    "custom_scheme": "hunter2TokenAfterCustomScheme",
    "quickbooks_jwe": "eyJlbmMiOiJBMTI4Q0JDLUhTMjU2IiwiYWxnIjoiZGlyIn0..Qx7Lw2b9vXkZ.aGlkZGVu.c2Vj",
}

PLANTED: list[tuple[str, dict[str, Any]]] = [
    (f"calling stripe with {SECRETS['stripe_live']}", {}),
    ("request failed", {"error": f"Invalid API Key provided: {SECRETS['stripe_test']}"}),
    ("restricted", {"detail": [SECRETS["stripe_restricted"]]}),
    ("webhook", {"note": f"secret was {SECRETS['whsec']} for venue-1"}),
    ("http", {"headers": {"Authorization": f"Bearer {SECRETS['bearer_jwt']}", "accept": "json"}}),
    ("http", {"request": f"GET /v1 Authorization: Bearer {SECRETS['bearer_opaque']}"}),
    ("http", {"request_headers": [("authorization", f"Basic {SECRETS['basic']}")]}),
    ("http", {"line": f"authorization: Token {SECRETS['custom_scheme']}"}),
    ("connect", {"dsn": f"postgresql://postgres:{SECRETS['url_password']}@db:5432/x"}),
    ("connect", {"target": f"amqp://guest:{SECRETS['url_password']}@rabbit:5672/"}),
    ("mailchimp", {"message": f"key {SECRETS['mailchimp_key']} rejected"}),
    ("quickbooks", {"note": f"401 with token {SECRETS['quickbooks_jwe']} for realm 4620816365"}),
    ("square", {"body": json.dumps({"access_token": SECRETS["square_token"], "expires_at": None})}),
    ("refresh", {"access_token": "opaque-token-without-a-known-shape-1"}),
    ("refresh", {"response": '{"refresh_token": "opaque-refresh-token-2", "expires_in": 3600}'}),
    ("store", {"secret": "anything-at-all-3", "api_key": "plain-key-4", "client_secret": "cs-5"}),
    ("form", {"query": "grant_type=refresh_token&client_secret=cs-6&refresh_token=rt-7"}),
]
ALSO_SECRET = ["opaque-token-without-a-known-shape-1", "opaque-refresh-token-2", "anything-at-all-3",
               "plain-key-4", "cs-5", "cs-6", "rt-7"]


@pytest.fixture
def configured() -> Iterator[None]:
    """The real configuration, JSON output; context cleared around each test."""
    configure_logging(level="DEBUG", fmt="json")
    structlog.contextvars.clear_contextvars()
    yield
    structlog.contextvars.clear_contextvars()


def _emit_everything() -> None:
    log = structlog.get_logger("service.test")
    for event, fields in PLANTED:
        log.warning(event, **fields)
    log.info("positional %s and %s", SECRETS["stripe_test"], SECRETS["whsec"])
    try:
        raise RuntimeError(f"provider said no to {SECRETS['stripe_test']}")
    except RuntimeError:
        log.exception("call_failed")


def _assert_clean(text: str) -> None:
    leaked = [s for s in [*SECRETS.values(), *ALSO_SECRET] if s in text]
    assert [] == leaked


def test_captured_events_contain_no_planted_secret(configured: None) -> None:
    """Through the configured processors, every planted secret is masked."""
    with capture_logs(processors=shared_processors()) as events:
        _emit_everything()
    _assert_clean(json.dumps(events, default=str))
    assert len(PLANTED) + 2 == len(events)


def test_rendered_json_lines_contain_no_planted_secret(
    configured: None, capsys: pytest.CaptureFixture[str]
) -> None:
    """The bytes written to stderr (JSON renderer) carry no planted secret."""
    configure_logging(level="DEBUG", fmt="json")  # bind the handler to the captured stderr
    _emit_everything()
    err = capsys.readouterr().err
    _assert_clean(err)
    assert len(PLANTED) + 2 == len([line for line in err.splitlines() if line.startswith("{")])


def test_console_renderer_contains_no_planted_secret(capsys: pytest.CaptureFixture[str]) -> None:
    """LOG_FORMAT=console is redacted just the same."""
    configure_logging(level="INFO", fmt="console")
    _emit_everything()
    err = capsys.readouterr().err
    _assert_clean(err)
    assert "call_failed" in err


def test_stdlib_library_lines_are_redacted(configured: None, capsys: pytest.CaptureFixture[str]) -> None:
    """A library logging through the standard library is redacted too."""
    configure_logging(level="INFO", fmt="json")
    logging.getLogger("somelib").warning("connecting to amqp://guest:%s@host/ with %s",
                                         SECRETS["url_password"], SECRETS["stripe_live"])
    err = capsys.readouterr().err
    _assert_clean(err)
    assert "amqp://guest:***@host/" in json.loads(err.splitlines()[-1])["event"]


def test_bound_context_is_redacted_and_carried(configured: None) -> None:
    """Context bound once is carried on every line, with secret-named values masked."""
    bind_message_context(venue_id="venue-42", job_id="job-1", provider="stripe", api_key="k-9")
    with capture_logs(processors=shared_processors()) as events:
        structlog.get_logger("service.test").info("sync_finished", created=3)
    event = events[0]
    assert ("venue-42", "job-1", "stripe", REDACTED, 3) == (
        event["venue_id"], event["job_id"], event["provider"], event["api_key"], event["created"])


def test_harmless_fields_survive(configured: None) -> None:
    """Ids, counts, flags and routing keys are not mistaken for secrets."""
    fields = {"venue_id": "venue-1", "credential_id": 7, "token_count": 3, "token_expired": True,
              "idempotency_key": "5f0c1c2e-0000-5000-8000-000000000000",
              "routing_key": "sync.stripe.customers",
              "secret_file": "/tmp/secret.json", "key_source": "kms", "count": 12}
    with capture_logs(processors=shared_processors()) as events:
        structlog.get_logger("service.test").info("harmless", **fields)
    assert fields == {k: events[0][k] for k in fields}


_TOKEN_CHARS = st.text(alphabet="abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789",
                       min_size=12, max_size=40)


@settings(max_examples=200, deadline=None)
@given(prefix=st.sampled_from(["sk_live_", "sk_test_", "rk_test_", "whsec_"]), body=_TOKEN_CHARS,
       before=st.text(max_size=20), after=st.sampled_from(["", " ", ".", "\n", "\"", ",x"]))
def test_any_stripe_shaped_secret_is_masked_in_any_text(
    prefix: str, body: str, before: str, after: str
) -> None:
    """Whatever surrounds it, a Stripe key or webhook secret never survives redact_text."""
    secret = prefix + body
    assert secret not in redact_text(f"{before} {secret}{after}")


@settings(max_examples=200, deadline=None)
@given(scheme=st.sampled_from(["postgresql", "amqp", "amqps", "https", "redis"]),
       user=st.from_regex(r"[a-z]{0,8}", fullmatch=True),
       password=st.from_regex(r"[A-Za-z0-9!$%*+\-._~]{1,30}", fullmatch=True))
def test_any_url_password_is_masked(scheme: str, user: str, password: str) -> None:
    """A password in any URL is replaced by *** and the host stays readable."""
    text = redact_text(f"connecting to {scheme}://{user}:{password}@db.internal:5432/x now")
    assert f"{scheme}://{user}:***@db.internal:5432/x" in text


def test_lines_follow_the_current_stderr(monkeypatch: pytest.MonkeyPatch) -> None:
    """The handler writes to sys.stderr as it is now, not as it was at configure time."""
    at_configure, later = io.StringIO(), io.StringIO()
    monkeypatch.setattr(sys, "stderr", at_configure)
    configure_logging(level="INFO", fmt="json")
    monkeypatch.setattr(sys, "stderr", later)
    structlog.get_logger("service.test").info("moved_on", token="t-1")
    assert ("", "moved_on", REDACTED) == (
        at_configure.getvalue(), json.loads(later.getvalue())["event"], json.loads(later.getvalue())["token"])
