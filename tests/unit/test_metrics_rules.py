"""Metric naming and label rules of CONTRACT section 6, checked on a Metrics() registry and its exposition."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from prometheus_client.parser import text_string_to_metric_families

from consumers import topology
from service.config import PROVIDERS
from service.httpcommon import add_health_routes
from service.metrics import (
    CONSUME_OUTCOMES,
    HEALTH_STATES,
    QUEUES,
    REFRESH_OUTCOMES,
    WEBHOOK_STATUSES,
    Metrics,
    MetricsLimiterObserver,
    status_class,
)

REPO = Path(__file__).resolve().parents[2]
FORBIDDEN_LABEL = re.compile(r"venue|job|record|account|merchant|realm|message|event|external|(^|_)id$")
ID_LIKE_VALUE = re.compile(
    r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"  # UUID
    r"|^venue-|^(cus|ch|pi|re|txn|evt|we)_[A-Za-z0-9]+|[0-9]{5,}",  # venue ids, Stripe ids, long numbers
    re.IGNORECASE,
)
ID_LIKE_NAME = re.compile(r"venue|job_id|record_id|account|merchant|realm|message_id|event_id|external_id")
NON_BASE_UNITS = re.compile(r"_(milli|micro|nano)?(ms|us|ns|minutes?|hours?|days?|kb|mb|gb|kilobytes|"
                            r"megabytes|milliseconds|microseconds|percent)(_|$)")

# CONTRACT section 6's minimum set: (exposed name, type, labels it must carry at least).
CONTRACT_MINIMUM = {
    "messages consumed by queue and outcome": (
        "integration_messages_consumed_total", "counter", {"queue", "outcome"}),
    "job duration by provider and entity": (
        "integration_job_duration_seconds", "histogram", {"provider", "entity"}),
    "provider calls by provider, operation and status class": (
        "integration_provider_calls_total", "counter", {"provider", "operation", "status_class"}),
    "provider call duration": ("integration_provider_call_duration_seconds", "histogram", {"provider"}),
    "rate-limiter wait seconds": ("integration_rate_limiter_wait_seconds", "histogram", {"provider"}),
    "rate-limiter tokens available": ("integration_rate_limiter_tokens_available", "gauge", {"provider"}),
    "429s received": ("integration_provider_rate_limited_total", "counter", {"provider"}),
    "retries": ("integration_retries_total", "counter", {"provider"}),
    "dead-lettered messages": ("integration_dead_lettered_total", "counter", set()),
    "webhooks received by provider and HTTP status": (
        "integration_webhooks_received_total", "counter", {"provider", "status"}),
    "credential refreshes by outcome": ("integration_credential_refreshes_total", "counter", {"outcome"}),
    "provider health state": ("integration_provider_health_state", "gauge", {"provider", "state"}),
    "build info": ("integration_build_info", "gauge", {"version"}),
}


def exercised() -> Metrics:
    """A registry where every metric has series, fed the way the service feeds it."""
    m = Metrics()
    m.set_build_info("daemon")
    observer = MetricsLimiterObserver(m)
    for provider in PROVIDERS:
        observer.waited(provider, 0.02)
        observer.tokens_available(provider, 3.0)
        observer.throttled(provider)
        m.set_health(provider, "degraded")
        m.provider_calls.labels(provider=provider, operation="post /v1/customers/{id}",
                                status_class=status_class(429)).inc()
        m.provider_call_duration.labels(provider=provider, operation="health").observe(0.3)
        m.job_duration.labels(provider, "customers", "succeeded").observe(1.5)
        m.records_processed.labels(provider, "customers", "created").inc()
        m.record_events.labels(provider, "customers", "upserted", "sync").inc()
        m.retries.labels(provider, "rate_limit").inc()
        m.webhooks_received.labels(provider=provider, status="200").inc()
        m.webhook_duplicates.labels(provider=provider).inc()
        m.credential_refreshes.labels(provider=provider, outcome="succeeded").inc()
    for queue in QUEUES:
        m.messages_consumed.labels(queue=queue, outcome="succeeded").inc()
        m.dead_lettered.labels(queue=queue, category="validation").inc()
        m.consumers_attached.labels(queue=queue).set(1)
    m.outbox_pending.set(4)
    return m


def type_lines(text: str) -> dict[str, str]:
    """{exposed name: type} from the exposition's ``# TYPE`` lines."""
    return dict(line.split()[2:4] for line in text.splitlines() if line.startswith("# TYPE "))


def test_every_name_starts_with_integration() -> None:
    """Our families start with integration_; with process collectors only process_/python_ join them."""
    assert [] == [n for n in Metrics().names() if not n.startswith("integration_")]
    with_process = Metrics(process_collectors=True).names()
    assert [] == [n for n in with_process if not n.startswith(("integration_", "process_", "python_"))]


def test_counters_end_in_total_in_the_exposition() -> None:
    """Every counter's TYPE line and samples end in _total, and no `_created` family (a
    gauge named without a unit) is exported beside them."""
    text = exercised().render().decode()
    counters = [name for name, kind in type_lines(text).items() if kind == "counter"]
    assert len(counters) >= 10
    assert [] == [name for name in counters if not name.endswith("_total")]
    for family in text_string_to_metric_families(text):
        if family.type == "counter":
            assert [] == [s.name for s in family.samples if not s.name.endswith("_total")]
    assert [] == [name for name in type_lines(text) if name.endswith("_created")]


def test_names_use_base_units() -> None:
    """Histograms measure _seconds or _bytes; no name uses ms, minutes, kilobytes or similar."""
    families = list(exercised().registry.collect())
    histograms = [f.name for f in families if f.type == "histogram"]
    assert [] == [n for n in histograms if not n.endswith(("_seconds", "_bytes"))]
    assert [] == [f.name for f in families if NON_BASE_UNITS.search(f.name)]


def test_no_label_names_an_id() -> None:
    """No family has a venue, job, record, account or other id label."""
    families = list(exercised().registry.collect())
    assert [] == [f.name for f in families if not f.samples], "every family has series to check"
    labels = {(f.name, label) for f in families for s in f.samples for label in s.labels}
    assert [] == sorted((name, label) for name, label in labels if FORBIDDEN_LABEL.search(label))


def test_no_label_value_looks_like_an_id() -> None:
    """After exercising every metric, no label value is a UUID, a venue id or a provider object id."""
    text = exercised().render().decode()
    values = {(s.name, k, v) for f in text_string_to_metric_families(text) for s in f.samples
              for k, v in s.labels.items()}
    assert len(values) > 100
    assert [] == sorted(item for item in values if ID_LIKE_VALUE.search(item[2]))


def _labels_calls(path: Path) -> list[tuple[int, str]]:
    """(line, source) of every label value passed to ``.labels(...)`` or ``Metrics.child``
    in one module."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "labels":
            for arg in [*node.args, *(k.value for k in node.keywords)]:
                found.append((node.lineno, ast.unparse(arg)))
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "child":
            for arg in node.args[1:]:  # Metrics.child(metric, *label values)
                found.append((node.lineno, ast.unparse(arg)))
    return found


def test_no_code_passes_an_id_as_a_label_value() -> None:
    """No .labels(...) call in service/, consumers/, providers/ passes a venue, job, record or account id."""
    modules = [p for d in ("service", "consumers", "providers") for p in (REPO / d).rglob("*.py")]
    calls = [(p.relative_to(REPO).as_posix(), line, src) for p in modules for line, src in _labels_calls(p)]
    assert len(calls) >= 10
    assert [] == [c for c in calls if ID_LIKE_NAME.search(c[2])]


@pytest.mark.parametrize("meaning", sorted(CONTRACT_MINIMUM))
def test_contract_minimum_metric_exists(meaning: str) -> None:
    """Each metric CONTRACT section 6 asks for is exposed with its type and labels."""
    name, kind, labels = CONTRACT_MINIMUM[meaning]
    text = exercised().render().decode()
    assert kind == type_lines(text).get(name)
    sample_name = f"{name}_count" if kind == "histogram" else name
    seen = {k for f in text_string_to_metric_families(text) for s in f.samples if s.name == sample_name
            for k in s.labels}
    assert labels <= seen, f"{name} lacks {labels - seen}"


def test_known_label_values_are_zero_initialised() -> None:
    """A fresh registry already has a series for every provider, queue, outcome, status and state."""
    text = Metrics().render().decode()
    series = {(s.name, tuple(sorted(s.labels.items()))) for f in text_string_to_metric_families(text)
              for s in f.samples}
    expected = {("integration_messages_consumed_total", (("outcome", o), ("queue", q)))
                for q in QUEUES for o in CONSUME_OUTCOMES}
    expected |= {("integration_consumers_attached", (("queue", q),)) for q in QUEUES}
    for p in PROVIDERS:
        expected |= {("integration_provider_rate_limited_total", (("provider", p),)),
                     ("integration_rate_limiter_tokens_available", (("provider", p),)),
                     ("integration_rate_limiter_wait_seconds_count", (("provider", p),))}
        expected |= {("integration_webhooks_received_total", (("provider", p), ("status", s)))
                     for s in WEBHOOK_STATUSES}
        expected |= {("integration_credential_refreshes_total", (("outcome", o), ("provider", p)))
                     for o in REFRESH_OUTCOMES}
        expected |= {("integration_provider_health_state", (("provider", p), ("state", s)))
                     for s in HEALTH_STATES}
    assert set() == expected - series
    assert (topology.SYNC_QUEUE, topology.WEBHOOK_QUEUE) == QUEUES


async def test_metrics_endpoint_serves_the_registry() -> None:
    """GET /metrics answers the Prometheus text of the app's registry."""
    metrics = exercised()
    app = web.Application()
    add_health_routes(app, metrics=metrics, checks={})
    async with TestClient(TestServer(app)) as client:
        response = await client.get("/metrics")
        text = await response.text()
    assert (200, "text/plain") == (response.status, response.content_type)
    assert type_lines(metrics.render().decode()) == type_lines(text)
    assert 'integration_provider_rate_limited_total{provider="stripe"} 1.0' in text.splitlines()


def test_child_is_the_labelled_series_and_remembered() -> None:
    """Metrics.child(metric, *values) counts in the same series as metric.labels(*values)."""
    metrics = Metrics()
    child = metrics.child(metrics.provider_calls, "stripe", "list_customers", "2xx")
    child.inc()
    metrics.provider_calls.labels(provider="stripe", operation="list_customers", status_class="2xx").inc()
    assert metrics.child(metrics.provider_calls, "stripe", "list_customers", "2xx") is child
    value = metrics.registry.get_sample_value(
        "integration_provider_calls_total",
        {"provider": "stripe", "operation": "list_customers", "status_class": "2xx"},
    )
    assert value == 2
    assert metrics.child(metrics.provider_calls, "stripe", "list_customers", "5xx") is not child
