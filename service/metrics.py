"""Metric definitions (CONTRACT section 6): the one home of every metric name.

``Metrics`` owns its CollectorRegistry, one per process wiring (and one per test), so
counters start fresh. Labels are bounded sets (provider, entity, queue, outcome, status
class...): never a venue, job or record id. Known label values are zero-initialised so
dashboards and alerts see a series before the first event.
"""

from __future__ import annotations

from collections.abc import Iterable
from importlib import metadata
from typing import Any

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    gc_collector,
    generate_latest,
    platform_collector,
    process_collector,
)

from service.config import PROVIDERS

QUEUES = ("integration.sync-requests", "integration.webhook-events")
CONSUME_OUTCOMES = ("succeeded", "partial", "failed", "duplicate", "retried", "dead_lettered", "requeued")
STATUS_CLASSES = ("2xx", "3xx", "4xx", "5xx", "error")
HEALTH_STATES = ("healthy", "degraded", "unhealthy")
REFRESH_OUTCOMES = ("succeeded", "failed", "skipped")
WEBHOOK_STATUSES = ("200", "400", "401", "404", "413", "503")
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)
JOB_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 900)


def _package_version() -> str:
    try:
        return metadata.version("integration-service")
    except metadata.PackageNotFoundError:
        return "unknown"


VERSION = _package_version()  # read once at import: it is file I/O, not for the event loop

# prometheus_client adds a `<name>_created` gauge family beside every counter and histogram
# in the text format: names without a base unit or `_total` (CONTRACT section 6's naming),
# which no dashboard or alert here reads. Turned off for the whole process.
disable_created_metrics()  # type: ignore[no-untyped-call]  # (the library leaves it unannotated)


def status_class(status: int | None) -> str:
    """'2xx'..'5xx' for an HTTP status, 'error' when no response came."""
    if status is None or not 100 <= status <= 599:
        return "error"
    return f"{status // 100}xx"


class Metrics:
    """Every metric the daemon and the ingress export, on a registry of its own."""

    def __init__(self, *, process_collectors: bool = False) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        if process_collectors:
            process_collector.ProcessCollector(registry=self.registry)
            platform_collector.PlatformCollector(registry=self.registry)
            gc_collector.GCCollector(registry=self.registry)
        r = self.registry
        self.build_info = Gauge(
            "integration_build_info", "Build information; always 1.", ("version", "component"), registry=r
        )
        self.messages_consumed = Counter(
            "integration_messages_consumed_total",
            "Messages consumed, by queue and outcome.",
            ("queue", "outcome"),
            registry=r,
        )
        self.job_duration = Histogram(
            "integration_job_duration_seconds",
            "Sync job duration.",
            ("provider", "entity", "status"),
            buckets=JOB_BUCKETS,
            registry=r,
        )
        self.records_processed = Counter(
            "integration_records_processed_total",
            "Records processed by sync jobs, by outcome.",
            ("provider", "entity", "outcome"),
            registry=r,
        )
        self.provider_calls = Counter(
            "integration_provider_calls_total",
            "HTTP calls to providers.",
            ("provider", "operation", "status_class"),
            registry=r,
        )
        self.provider_call_duration = Histogram(
            "integration_provider_call_duration_seconds",
            "Provider HTTP call duration.",
            ("provider", "operation"),
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.limiter_wait = Histogram(
            "integration_rate_limiter_wait_seconds",
            "Time spent waiting for a rate-limit token.",
            ("provider",),
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.limiter_tokens = Gauge(
            "integration_rate_limiter_tokens_available",
            "Tokens left in the last bucket checked.",
            ("provider",),
            registry=r,
        )
        self.rate_limited = Counter(
            "integration_provider_rate_limited_total",
            "HTTP 429 answers received from providers.",
            ("provider",),
            registry=r,
        )
        self.retries = Counter(
            "integration_retries_total",
            "Retries scheduled, by provider and error category.",
            ("provider", "category"),
            registry=r,
        )
        self.dead_lettered = Counter(
            "integration_dead_lettered_total",
            "Messages dead-lettered, by queue and category.",
            ("queue", "category"),
            registry=r,
        )
        self.webhooks_received = Counter(
            "integration_webhooks_received_total",
            "Webhook requests answered by the ingress.",
            ("provider", "status"),
            registry=r,
        )
        self.webhook_duplicates = Counter(
            "integration_webhook_duplicates_total",
            "Webhook events seen again and skipped.",
            ("provider",),
            registry=r,
        )
        self.record_events = Counter(
            "integration_record_events_total",
            "Record events published.",
            ("provider", "entity", "op", "source"),
            registry=r,
        )
        self.credential_refreshes = Counter(
            "integration_credential_refreshes_total",
            "OAuth token refreshes, by outcome.",
            ("provider", "outcome"),
            registry=r,
        )
        self.provider_health = Gauge(
            "integration_provider_health_state",
            "1 for the provider's current health state.",
            ("provider", "state"),
            registry=r,
        )
        self.outbox_pending = Gauge(
            "integration_outbox_pending_messages",
            "Outbox rows not yet published.",
            registry=r,
        )
        self.queue_depth = Gauge(
            "integration_queue_depth_messages",
            "Messages ready in each work queue (polled).",
            ("queue",),
            registry=r,
        )
        self.message_age = Histogram(
            "integration_message_age_seconds",
            "Time from publish to consume (the message's AMQP timestamp), by queue.",
            ("queue",),
            buckets=(0.01, 0.05, 0.1, 0.5, 1, 5, 15, 60, 300, 900, 3600),
            registry=r,
        )
        self.consumers_attached = Gauge(
            "integration_consumers_attached",
            "Consumers attached, by queue.",
            ("queue",),
            registry=r,
        )
        self._children: dict[tuple[int, tuple[str, ...]], Any] = {}
        self._zero_initialise()

    def _zero_initialise(self) -> None:
        for queue in QUEUES:
            self.consumers_attached.labels(queue=queue)
            self.queue_depth.labels(queue=queue)
            self.message_age.labels(queue=queue)
            for outcome in CONSUME_OUTCOMES:
                self.messages_consumed.labels(queue=queue, outcome=outcome)
        for provider in PROVIDERS:
            self.limiter_tokens.labels(provider=provider)
            self.limiter_wait.labels(provider=provider)
            self.rate_limited.labels(provider=provider)
            self.webhook_duplicates.labels(provider=provider)
            for status in WEBHOOK_STATUSES:
                self.webhooks_received.labels(provider=provider, status=status)
            for outcome in REFRESH_OUTCOMES:
                self.credential_refreshes.labels(provider=provider, outcome=outcome)
            for state in HEALTH_STATES:
                self.provider_health.labels(provider=provider, state=state)

    def child(self, metric: Any, *values: str) -> Any:
        """``metric.labels(*values)`` (values in the metric's label order), remembered: the
        lookups on every message's path cost more than the increments they lead to."""
        key = (id(metric), values)
        found = self._children.get(key)
        if found is None:
            found = self._children[key] = metric.labels(*values)
        return found

    def set_build_info(self, component: str) -> None:
        self.build_info.labels(version=VERSION, component=component).set(1)

    def set_health(self, provider: str, state: str) -> None:
        for known in HEALTH_STATES:
            self.provider_health.labels(provider=provider, state=known).set(1 if known == state else 0)

    def render(self) -> bytes:
        """The Prometheus text exposition of this registry."""
        return generate_latest(self.registry)

    def names(self) -> Iterable[str]:
        """Every metric family name (for the naming-rule tests)."""
        for family in self.registry.collect():
            yield family.name


class MetricsLimiterObserver:
    """Feeds the rate limiter's observations into the metrics (labels by provider only)."""

    def __init__(self, metrics: Metrics) -> None:
        self._m = metrics

    def waited(self, provider: str, seconds: float) -> None:
        self._m.child(self._m.limiter_wait, provider).observe(seconds)

    def tokens_available(self, provider: str, tokens: float) -> None:
        self._m.child(self._m.limiter_tokens, provider).set(tokens)

    def throttled(self, provider: str) -> None:
        self._m.rate_limited.labels(provider=provider).inc()
