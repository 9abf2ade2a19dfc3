"""The Grafana dashboard and the alert rules: valid PromQL on metrics that exist, and promtool agrees."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from service.metrics import Metrics

REPO = Path(__file__).resolve().parents[2]
DASHBOARD_PATH = REPO / "deploy/grafana/dashboards/integration-service.json"
ALERTS_PATH = REPO / "deploy/prometheus/alerts.yml"
PROMETHEUS_PATH = REPO / "deploy/prometheus/prometheus.yml"
RUNBOOK_PATH = REPO / "docs/runbook.md"
DASHBOARD: dict[str, Any] = json.loads(DASHBOARD_PATH.read_text(encoding="utf-8"))
ALERTS: dict[str, Any] = yaml.safe_load(ALERTS_PATH.read_text(encoding="utf-8"))
RULES: list[dict[str, Any]] = [rule for group in ALERTS["groups"] for rule in group["rules"]]
SCRAPE_JOBS = {job["job_name"] for job in yaml.safe_load(PROMETHEUS_PATH.read_text())["scrape_configs"]}

# Series Prometheus makes itself for every target (not in our exposition).
PROMETHEUS_SERIES = {"up"}
SUFFIXES = {"counter": ("",), "gauge": ("",), "histogram": ("_bucket", "_sum", "_count", "_created"),
            "summary": ("", "_sum", "_count", "_created"), "untyped": ("",), "info": ("",)}
KEYWORDS = {"and", "or", "unless", "bool", "offset", "by", "without", "on", "ignoring", "group_left",
            "group_right", "inf", "nan"}
STRING = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`')
GROUPING = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)")
IDENTIFIER = re.compile(r"(?<![\w.$:])[A-Za-z_:][\w:]*(?![\w:])(?!\s*\()")
LABEL_VALUES = re.compile(r"label_values\(\s*([A-Za-z_:][\w:]*)")
GRAFANA_VARIABLE = re.compile(r"\$\{?(__\w+|\w+)\}?")
REQUIRED_ALERTS = {
    "IntegrationDeadLettersGrowing", "IntegrationProviderUnhealthy", "IntegrationConsumersGone",
    "IntegrationRateLimitStorm", "IntegrationOutboxBacklog", "IntegrationDaemonDown",
}


def exposed_series(text: str) -> set[str]:
    """Every series name a scrape of this exposition yields (``# TYPE`` names with their suffixes)."""
    names = set()
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split()
            names |= {name + suffix for suffix in SUFFIXES[kind]}
        elif line and not line.startswith("#"):
            names.add(re.split(r"[{ ]", line, maxsplit=1)[0])
    return names


METRICS_EXPOSED = exposed_series(Metrics().render().decode())


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression selects (not functions, labels, keywords or durations)."""
    text = STRING.sub('""', expr)
    text = re.sub(r"\{[^}]*\}", " ", text)
    text = re.sub(r"\[[^\]]*\]", " ", text)
    text = GROUPING.sub(" ", text)
    return {name for name in IDENTIFIER.findall(text) if name.lower() not in KEYWORDS}


def _panels(panels: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [p for panel in panels for p in [panel, *_panels(panel.get("panels", []))]]


def dashboard_exprs() -> list[str]:
    """Every PromQL expression of the dashboard's panels."""
    return [t["expr"] for p in _panels(DASHBOARD["panels"]) for t in p.get("targets", []) if t.get("expr")]


def dashboard_metric_names() -> set[str]:
    names = {name for expr in dashboard_exprs() for name in metric_names(expr)}
    for variable in DASHBOARD["templating"]["list"]:
        query = variable.get("query")
        text = query.get("query", "") if isinstance(query, dict) else str(query or "")
        names |= set(LABEL_VALUES.findall(text))
    return names


def as_promql(expr: str) -> str:
    """A dashboard expression with Grafana's variables replaced by values Prometheus accepts."""
    return GRAFANA_VARIABLE.sub(lambda m: "5m" if m.group(1).startswith("__") else ".*", expr)


def promtool() -> str:
    """The promtool binary; its absence fails the test (scripts/ensure-services.sh installs it)."""
    path = shutil.which("promtool")
    assert path is not None, "no promtool: apt-get install prometheus (scripts/ensure-services.sh does)"
    return path


def run_promtool(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([promtool(), *args], capture_output=True, text=True, timeout=60, check=False)


# The extraction and suffix rules themselves ------------------------------------------------

def test_metric_name_extraction() -> None:
    """Names come out; functions, labels, matchers, keywords, durations and variables do not."""
    expr = ('histogram_quantile(0.95, sum by (provider, le) (rate(a_seconds_bucket{provider=~"$provider"}'
            '[$__rate_interval]))) / on (provider) group_left b_total offset 5m or absent(up{job="x"})'
            ' > bool 1e3 unless sum without (queue) (c)')
    assert {"a_seconds_bucket", "b_total", "up", "c"} == metric_names(expr)
    assert {"x_total"} == metric_names('max by (p) (x_total{status_class!="2xx"}) + 2 * max(x_total)')


def test_suffix_rules_match_what_a_scrape_yields() -> None:
    """A counter is scraped as <name>_total, a histogram as _bucket/_sum/_count; the bare names are not."""
    registry = CollectorRegistry()
    Counter("integration_demo_total", "d", registry=registry).inc()
    Histogram("integration_demo_seconds", "d", registry=registry).observe(1)
    Gauge("integration_demo_items", "d", registry=registry).set(1)
    exposed = exposed_series(generate_latest(registry).decode())
    assert {"integration_demo_total", "integration_demo_seconds_bucket", "integration_demo_seconds_count",
            "integration_demo_seconds_sum", "integration_demo_items"} <= exposed
    assert set() == {"integration_demo", "integration_demo_seconds"} & exposed


# The dashboard ---------------------------------------------------------------------------

def test_dashboard_refers_only_to_metrics_that_exist() -> None:
    """Every metric a dashboard query or variable names is in a Metrics() exposition (or is `up`)."""
    names = dashboard_metric_names()
    assert len(names) >= 12
    assert [] == sorted(names - METRICS_EXPOSED - PROMETHEUS_SERIES)


def test_dashboard_shows_every_required_view() -> None:
    """RED per provider, consumes, jobs, limiter, 429s, dead letters, webhooks, refreshes, health, outbox."""
    required = {
        "integration_provider_calls_total", "integration_provider_call_duration_seconds_bucket",
        "integration_messages_consumed_total", "integration_job_duration_seconds_bucket",
        "integration_rate_limiter_wait_seconds_bucket", "integration_rate_limiter_tokens_available",
        "integration_provider_rate_limited_total", "integration_dead_lettered_total",
        "integration_webhooks_received_total", "integration_credential_refreshes_total",
        "integration_provider_health_state", "integration_outbox_pending_messages",
        "integration_consumers_attached", "up",
    }
    assert set() == required - dashboard_metric_names()


def test_dashboard_queries_are_valid_promql(tmp_path: Path) -> None:
    """promtool parses every dashboard query (as recording rules, Grafana variables filled in)."""
    exprs = dashboard_exprs()
    rules = [{"record": f"dashboard:query_{i}", "expr": as_promql(expr)} for i, expr in enumerate(exprs)]
    path = tmp_path / "dashboard-queries.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}), encoding="utf-8")
    result = run_promtool("check", "rules", str(path))
    assert 0 == result.returncode, result.stdout + result.stderr
    assert f"SUCCESS: {len(rules)} rules found" in result.stdout


def test_dashboard_is_well_formed_for_provisioning() -> None:
    """Unique panel ids, a grid position each, every query on the provisioned Prometheus data source."""
    panels = _panels(DASHBOARD["panels"])
    ids = [p["id"] for p in panels]
    assert sorted(set(ids)) == sorted(ids)
    assert [] == [p["title"] for p in panels if set(p["gridPos"]) != {"h", "w", "x", "y"}
                  or p["gridPos"]["x"] + p["gridPos"]["w"] > 24]
    assert [] == [p["title"] for p in panels if p["type"] != "row" and not p.get("targets")]
    datasource = yaml.safe_load((REPO / "deploy/grafana/provisioning/datasources/prometheus.yml").read_text())
    uid = datasource["datasources"][0]["uid"]
    uids = {t["datasource"]["uid"] for p in panels for t in p.get("targets", [])}
    uids |= {v["datasource"]["uid"] for v in DASHBOARD["templating"]["list"]}
    assert ({uid}, "integration-service") == (uids, DASHBOARD["uid"])


def test_jobs_named_in_queries_are_scrape_jobs() -> None:
    """job="..." matchers in the dashboard and the rules name prometheus.yml's scrape jobs."""
    exprs = dashboard_exprs() + [rule["expr"] for rule in RULES]
    matched = [value for expr in exprs for value in re.findall(r'job=~?"([^"]+)"', expr)]
    jobs = {job for value in matched for job in value.split("|")}
    assert {"integration-daemon", "integration-ingress"} == jobs
    assert set() == jobs - SCRAPE_JOBS


# The alert rules -------------------------------------------------------------------------

def test_promtool_accepts_the_alert_rules() -> None:
    """`promtool check rules deploy/prometheus/alerts.yml` succeeds."""
    result = run_promtool("check", "rules", str(ALERTS_PATH))
    assert 0 == result.returncode, result.stdout + result.stderr
    assert f"SUCCESS: {len(RULES)} rules found" in result.stdout


def test_alert_rules_refer_only_to_metrics_that_exist() -> None:
    """Every metric an alert expression names is in a Metrics() exposition (or is `up`)."""
    names = {name for rule in RULES for name in metric_names(rule["expr"])}
    assert len(names) >= 5
    assert [] == sorted(names - METRICS_EXPOSED - PROMETHEUS_SERIES)


def test_every_required_alert_is_there_with_a_runbook_section() -> None:
    """Each alert has a severity, a summary, a description and a runbook section under its own name."""
    runbook = RUNBOOK_PATH.read_text(encoding="utf-8")
    headings = {line.lstrip("#").strip() for line in runbook.splitlines() if line.startswith("#")}
    names = {rule["alert"] for rule in RULES}
    assert set() == REQUIRED_ALERTS - names
    for rule in RULES:
        name = rule["alert"]
        assert rule["labels"]["severity"] in {"warning", "critical"}, name
        assert {"summary", "description", "runbook_url"} <= set(rule["annotations"]), name
        assert f"docs/runbook.md#{name.lower()}" == rule["annotations"]["runbook_url"]
        assert name in headings, f"docs/runbook.md has no section {name}"


def test_prometheus_loads_the_rules_compose_mounts(tmp_path: Path) -> None:
    """prometheus.yml reads the rules where docker-compose mounts alerts.yml; promtool accepts the config."""
    config = yaml.safe_load(PROMETHEUS_PATH.read_text(encoding="utf-8"))
    compose = yaml.safe_load((REPO / "docker-compose.yml").read_text(encoding="utf-8"))
    mounts = dict(v.split(":")[:2] for v in compose["services"]["prometheus"]["volumes"])
    assert [mounts["./deploy/prometheus/alerts.yml"]] == config["rule_files"]
    local = tmp_path / "prometheus.yml"
    local.write_text(yaml.safe_dump({**config, "rule_files": [str(ALERTS_PATH)]}), encoding="utf-8")
    result = run_promtool("check", "config", str(local))
    assert 0 == result.returncode, result.stdout + result.stderr


# Alert behaviour on synthetic series (promtool test rules) ------------------------------------

def _expected(alert: str, labels: dict[str, str]) -> dict[str, Any]:
    """The alert promtool should see: the series' labels plus the rule's, annotations expanded."""
    rule = next(r for r in RULES if r["alert"] == alert)
    annotations = {k: re.sub(r"\{\{\s*\$labels\.(\w+)\s*\}\}", lambda m: labels.get(m.group(1), ""), v)
                   for k, v in rule["annotations"].items()}
    return {"exp_labels": {**labels, **rule["labels"]}, "exp_annotations": annotations}


def _case(series: dict[str, str], checks: list[tuple[str, str, list[dict[str, str]]]]) -> dict[str, Any]:
    return {
        "interval": "1m",
        "input_series": [{"series": s, "values": v} for s, v in series.items()],
        "alert_rule_test": [
            {"eval_time": at, "alertname": alert, "exp_alerts": [_expected(alert, lbl) for lbl in fired]}
            for at, alert, fired in checks],
    }


DAEMON = 'job="integration-daemon",instance="daemon:8081"'
INGRESS = 'job="integration-ingress",instance="ingress:8080"'
SYNC_Q, HOOK_Q = "integration.sync-requests", "integration.webhook-events"
ALERT_CASES = [
    _case({f"up{{{DAEMON}}}": "1 1 0x12", f"up{{{INGRESS}}}": "1x14"}, [
        ("1m", "IntegrationDaemonDown", []),
        ("8m", "IntegrationDaemonDown", [{"job": "integration-daemon", "instance": "daemon:8081"}]),
        ("8m", "IntegrationIngressDown", []),
    ]),
    _case({f"up{{{DAEMON}}}": "1x10"}, [
        ("5m", "IntegrationIngressDown", [{"job": "integration-ingress"}]),
        ("5m", "IntegrationConsumersGone", [{"job": "integration-daemon"}]),
    ]),
    _case({f'integration_consumers_attached{{{DAEMON},queue="{SYNC_Q}"}}': "1 1 0x12",
           f'integration_consumers_attached{{{DAEMON},queue="{HOOK_Q}"}}': "1x14",
           f'integration_consumers_attached{{{INGRESS},queue="{SYNC_Q}"}}': "0x14"}, [
        ("3m", "IntegrationConsumersGone", []),
        ("10m", "IntegrationConsumersGone", [{"queue": SYNC_Q}]),
    ]),
    _case({f'integration_dead_lettered_total{{{DAEMON},queue="{SYNC_Q}",category="validation"}}':
           "0 0 0 1x30",
           f'integration_dead_lettered_total{{{DAEMON},queue="{HOOK_Q}",category="data"}}': "0x33"}, [
        ("2m", "IntegrationDeadLettersGrowing", []),
        ("5m", "IntegrationDeadLettersGrowing", [{"queue": SYNC_Q, "category": "validation"}]),
        ("30m", "IntegrationDeadLettersGrowing", []),
    ]),
    _case({f'integration_provider_health_state{{{DAEMON},provider="square",state="unhealthy"}}': "0 0 1x10",
           f'integration_provider_health_state{{{DAEMON},provider="stripe",state="unhealthy"}}': "0x12",
           f'integration_provider_health_state{{{DAEMON},provider="stripe",state="degraded"}}': "1x12"}, [
        ("1m", "IntegrationProviderUnhealthy", []),
        ("6m", "IntegrationProviderUnhealthy", [{"provider": "square"}]),
    ]),
    _case({f'integration_provider_rate_limited_total{{{DAEMON},provider="quickbooks"}}': "0+60x30",
           f'integration_provider_rate_limited_total{{{DAEMON},provider="stripe"}}': "0+10x30"}, [
        ("5m", "IntegrationRateLimitStorm", []),
        ("20m", "IntegrationRateLimitStorm", [{"provider": "quickbooks"}]),
    ]),
    _case({f"integration_outbox_pending_messages{{{DAEMON}}}": "0 2000x20",
           f"integration_outbox_pending_messages{{{INGRESS}}}": "0x21"}, [
        ("5m", "IntegrationOutboxBacklog", []),
        ("15m", "IntegrationOutboxBacklog", [{}]),
    ]),
    _case({f"integration_outbox_pending_messages{{{DAEMON}}}": "100x20"}, [
        ("15m", "IntegrationOutboxBacklog", []),
    ]),
]


def test_alerts_fire_when_they_should_and_not_before(tmp_path: Path) -> None:
    """`promtool test rules`: each alert fires on its failure, only after its `for`, only where due."""
    tests = tmp_path / "alerts-test.yml"
    tests.write_text(yaml.safe_dump({"rule_files": [str(ALERTS_PATH)], "evaluation_interval": "1m",
                                     "tests": ALERT_CASES}), encoding="utf-8")
    assert REQUIRED_ALERTS <= {c["alertname"] for case in ALERT_CASES for c in case["alert_rule_test"]}
    result = run_promtool("test", "rules", str(tests))
    assert 0 == result.returncode, result.stdout + result.stderr


@pytest.mark.parametrize("expr", ["up{", "sum by (provider) (rate(x[5m])"])
def test_promtool_refuses_bad_rules(tmp_path: Path, expr: str) -> None:
    """The check can fail: promtool rejects a broken expression."""
    path = tmp_path / "bad.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "bad", "rules": [{"alert": "Bad", "expr": expr}]}]}))
    assert 0 != run_promtool("check", "rules", str(path)).returncode
