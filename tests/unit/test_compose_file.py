"""docker-compose.yml, the Dockerfile and deploy/: parsed and checked against the repo (no Docker here)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from service.cli import cli
from service.config import Settings, load_settings

REPO = Path(__file__).resolve().parents[2]
COMPOSE: dict[str, Any] = yaml.safe_load((REPO / "docker-compose.yml").read_text(encoding="utf-8"))
SERVICES: dict[str, Any] = COMPOSE["services"]
BUILT = sorted(name for name, spec in SERVICES.items() if "build" in spec)
# The container port each of our processes serves on (CONTRACT sections 1, 6, 7).
PROCESS_PORTS = {"run": 8081, "ingress": 8080, "sandbox": 8090}


def _load(relative: str) -> Any:
    return yaml.safe_load((REPO / relative).read_text(encoding="utf-8"))


def _bind_mounts(spec: dict[str, Any]) -> list[tuple[str, str]]:
    """(host path, container path) of every ./ bind mount of a service."""
    mounts = []
    for volume in spec.get("volumes", []):
        host, container = volume.split(":")[:2]
        if host.startswith("."):
            mounts.append((host, container))
    return mounts


def _container_ports(spec: dict[str, Any]) -> list[int]:
    return [int(str(port).split(":")[-1].split("/")[0]) for port in spec.get("ports", [])]


def test_every_expected_service_is_there() -> None:
    """The stack has the broker, database, migrate step, our three processes, Prometheus and Grafana."""
    expected = {"rabbitmq", "postgres", "migrate", "daemon", "ingress", "sandbox", "prometheus", "grafana"}
    assert expected == set(SERVICES)


def test_every_service_has_an_image_or_a_build_that_exists() -> None:
    """Images are pinned (a tag), builds point at a directory with a Dockerfile."""
    problems = []
    for name, spec in SERVICES.items():
        if "build" in spec:
            context = spec["build"] if isinstance(spec["build"], str) else spec["build"]["context"]
            if not (REPO / context / "Dockerfile").is_file():
                problems.append(f"{name}: no Dockerfile in {context}")
        elif not re.fullmatch(r"[\w./-]+:[\w.-]+", spec.get("image", "")):
            problems.append(f"{name}: image missing or without a tag")
    assert [] == problems
    assert "management" in SERVICES["rabbitmq"]["image"]


def test_built_services_run_real_commands_with_real_options() -> None:
    """Each built service's command is a registered CLI command, and its options exist."""
    expected = {"migrate": "migrate", "daemon": "run", "ingress": "ingress", "sandbox": "sandbox"}
    actual = {name: SERVICES[name]["command"][0] for name in BUILT}
    assert expected == actual
    for name in BUILT:
        command, *args = SERVICES[name]["command"]
        options = {opt for param in cli.commands[command].params for opt in param.opts}
        assert [] == [a for a in args if a.startswith("-") and a not in options], name


def test_processes_listen_where_they_are_published_and_scraped() -> None:
    """--port, the published container port, HTTP_HOST=0.0.0.0 and Prometheus' targets agree."""
    for name in ("daemon", "ingress", "sandbox"):
        command = SERVICES[name]["command"]
        port = int(command[command.index("--port") + 1])
        assert (PROCESS_PORTS[command[0]], [port], "0.0.0.0") == (
            port, _container_ports(SERVICES[name]), SERVICES[name]["environment"]["HTTP_HOST"])
    scrape = _load("deploy/prometheus/prometheus.yml")["scrape_configs"]
    targets = {(job["metrics_path"], target) for job in scrape
               for target in job["static_configs"][0]["targets"]}
    assert {("/metrics", "daemon:8081"), ("/metrics", "ingress:8080")} == targets


def test_host_ports_are_unique() -> None:
    """No two services publish the same host port."""
    host_ports = [str(p).split(":")[0] for spec in SERVICES.values() for p in spec.get("ports", [])]
    assert sorted(set(host_ports)) == sorted(host_ports)


def test_dependencies_exist_and_order_the_start() -> None:
    """depends_on targets exist; daemon and ingress wait for a successful migrate, which waits for health."""
    for name, spec in SERVICES.items():
        targets = spec.get("depends_on", [])
        assert set(targets) <= set(SERVICES), name
    for name in ("daemon", "ingress"):
        assert "service_completed_successfully" == SERVICES[name]["depends_on"]["migrate"]["condition"]
    migrate_deps = SERVICES["migrate"]["depends_on"]
    assert {"postgres": "service_healthy", "rabbitmq": "service_healthy"} == {
        k: v["condition"] for k, v in migrate_deps.items()}
    assert ("healthcheck" in SERVICES["postgres"], "healthcheck" in SERVICES["rabbitmq"]) == (True, True)


def test_mounted_config_files_exist_in_the_repo() -> None:
    """Every ./ bind mount points at a file or folder that is committed here."""
    mounts = [(name, host) for name, spec in SERVICES.items() for host, _ in _bind_mounts(spec)]
    assert [] == [(name, host) for name, host in mounts if not (REPO / host).exists()]
    assert {"prometheus", "grafana"} == {name for name, _ in mounts}


def test_grafana_provisions_prometheus_and_the_dashboards_folder() -> None:
    """The data source points at the prometheus service; the dashboard provider reads the mounted folder."""
    mounts = dict(_bind_mounts(SERVICES["grafana"]))
    datasource = _load("deploy/grafana/provisioning/datasources/prometheus.yml")["datasources"][0]
    provider = _load("deploy/grafana/provisioning/dashboards/dashboards.yml")["providers"][0]
    assert ("http://prometheus:9090", "prometheus", mounts["./deploy/grafana/dashboards"]) == (
        datasource["url"], datasource["type"], provider["options"]["path"])
    assert "/etc/grafana/provisioning" == mounts["./deploy/grafana/provisioning"]


@pytest.mark.parametrize("name", BUILT)
def test_service_environment_is_valid_settings(name: str) -> None:
    """Every variable given to our containers is a setting, and together they load cleanly."""
    environment = {k: str(v) for k, v in SERVICES[name]["environment"].items()}
    known = {field.upper() for field in Settings.model_fields}
    assert [] == sorted(set(environment) - known)
    settings = load_settings(**{k.lower(): v for k, v in environment.items()})
    assert ("rabbitmq", "postgres") == (
        re.split(r"[@:/]", settings.amqp_url.get_secret_value())[5],
        re.split(r"[@:/]", settings.database_url.get_secret_value())[5])


def test_dockerfile_builds_this_repo_on_python_311_slim() -> None:
    """python:3.11-slim, pip install -e ., the console script as entry point, and every COPY source exists."""
    text = (REPO / "Dockerfile").read_text(encoding="utf-8")
    copies = [src for line in text.splitlines() if line.startswith("COPY ")
              for src in line.split()[1:-1]]
    bases = [line for line in text.splitlines() if line.startswith("FROM ")]
    assert (["FROM python:3.11-slim"], True, True) == (
        bases, "pip install -e ." in text, 'ENTRYPOINT ["integration-service"]' in text)
    assert [] == [src for src in copies if not (REPO / src).exists()]
    assert {"service", "consumers", "providers", "sandbox", "schema.sql", "pyproject.toml"} <= set(copies)
