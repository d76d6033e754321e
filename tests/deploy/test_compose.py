"""docker-compose.yml validates, and every file it mounts fits together.

No Docker engine runs here: `docker-compose config` validates the file, and
the rest reads the YAML to check that the mounts exist in the repository and
that the paths inside the containers agree (Prometheus finds its rules,
Grafana finds its datasource and dashboard, the dashboard names the
provisioned datasource).
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path, PurePosixPath
from typing import Any

import pytest
import yaml

REPO_ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILE = REPO_ROOT / "docker-compose.yml"
DASHBOARD = REPO_ROOT / "deploy" / "grafana" / "dashboards" / "dvn.json"


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load(COMPOSE_FILE.read_text())
    return data


def _mounts(service: dict[str, Any]) -> dict[str, PurePosixPath]:
    """Bind mounts of a service: repository path -> container path."""
    mounts: dict[str, PurePosixPath] = {}
    for volume in service.get("volumes", []):
        source, target, *_ = volume.split(":")
        if source.startswith("."):
            mounts[source.removeprefix("./")] = PurePosixPath(target)
    return mounts


def _load_yaml(path: Path) -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load(path.read_text())
    return data


@pytest.mark.skipif(
    shutil.which("docker-compose") is None,
    reason="docker-compose is not installed (bash scripts/system-deps.sh installs it)",
)
def test_docker_compose_config_validates() -> None:
    result = subprocess.run(
        ["docker-compose", "-f", str(COMPOSE_FILE), "config", "-q"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=REPO_ROOT,
    )
    assert result.returncode == 0, result.stderr


def test_services(compose: dict[str, Any]) -> None:
    default = {n for n, s in compose["services"].items() if not s.get("profiles")}
    assert default == {"dvn", "prometheus", "grafana"}
    ray = {n for n, s in compose["services"].items() if "ray" in s.get("profiles", [])}
    assert ray == {"ray-head", "ray-worker"}


def test_ray_profile_runs_the_serve_config_on_a_head_and_a_worker(
    compose: dict[str, Any],
) -> None:
    head, worker = compose["services"]["ray-head"], compose["services"]["ray-worker"]
    assert head["build"]["args"]["EXTRAS"] == "ray"  # pyproject's ray extra
    assert worker["image"] == head["image"]
    head_command = " ".join(head["command"])
    assert "ray start --head --port=6379" in head_command
    mounts = _mounts(head)
    config = mounts["deploy/ray/serve.yaml"]
    assert f"serve run {config}" in head_command
    assert "--address=ray-head:6379" in " ".join(worker["command"])


def test_dvn_service_builds_the_dockerfile_and_checks_readiness(compose: dict[str, Any]) -> None:
    dvn = compose["services"]["dvn"]
    assert (REPO_ROOT / dvn["build"]["context"] / dvn["build"]["dockerfile"]).is_file()
    assert "8000:8000" in dvn["ports"]
    assert "http://127.0.0.1:8000/readyz" in " ".join(dvn["healthcheck"]["test"])


def test_every_bind_mount_exists_in_the_repository(compose: dict[str, Any]) -> None:
    missing = [
        f"{name}: {source}"
        for name, service in compose["services"].items()
        for source in _mounts(service)
        if not (REPO_ROOT / source).exists()
    ]
    assert not missing, f"docker-compose.yml mounts paths the repository lacks: {missing}"


def test_prometheus_loads_the_mounted_config_and_rules(compose: dict[str, Any]) -> None:
    prometheus = compose["services"]["prometheus"]
    mounts = _mounts(prometheus)
    config_target = mounts["deploy/prometheus/prometheus.yml"]
    assert f"--config.file={config_target}" in prometheus["command"]
    config = _load_yaml(REPO_ROOT / "deploy" / "prometheus" / "prometheus.yml")
    # rule_files resolve relative to the config file: in the container and in the repo.
    for rule_file in config["rule_files"]:
        assert (REPO_ROOT / "deploy" / "prometheus" / rule_file).is_file()
        assert config_target.parent / rule_file in mounts.values()
    (dvn_job,) = [job for job in config["scrape_configs"] if job["job_name"] == "dvn"]
    assert dvn_job["static_configs"] == [{"targets": ["dvn:8000"]}]
    assert dvn_job.get("scrape_interval", config["global"]["scrape_interval"]) == "5s"


def test_grafana_provisions_datasource_and_dashboard(compose: dict[str, Any]) -> None:
    grafana = compose["services"]["grafana"]
    assert "3000:3000" in grafana["ports"]
    env = grafana["environment"]
    assert (env["GF_AUTH_ANONYMOUS_ENABLED"], env["GF_AUTH_ANONYMOUS_ORG_ROLE"]) == (
        "true",
        "Viewer",
    )
    mounts = _mounts(grafana)
    assert mounts["deploy/grafana/provisioning"] == PurePosixPath("/etc/grafana/provisioning")
    provisioning = REPO_ROOT / "deploy" / "grafana" / "provisioning"

    (datasource,) = _load_yaml(provisioning / "datasources" / "prometheus.yml")["datasources"]
    assert datasource["type"] == "prometheus"
    assert datasource["url"] == "http://prometheus:9090"

    (provider,) = _load_yaml(provisioning / "dashboards" / "dvn.yml")["providers"]
    assert PurePosixPath(provider["options"]["path"]) == mounts["deploy/grafana/dashboards"]
    home = PurePosixPath(env["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"])
    assert home == mounts["deploy/grafana/dashboards"] / DASHBOARD.name

    dashboard = json.loads(DASHBOARD.read_text())
    assert dashboard["uid"] == "dvn-serve"
    used = {
        json.dumps(thing["datasource"], sort_keys=True)
        for panel in dashboard["panels"]
        if panel["type"] != "row"
        for thing in [panel, *panel["targets"]]
    }
    assert used == {json.dumps({"type": "prometheus", "uid": datasource["uid"]}, sort_keys=True)}
