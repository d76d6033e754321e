"""Run a real Prometheus against a target and evaluate the project's PromQL.

Used by integration tests to prove that every expression of the Grafana
dashboard and of the alert rules is valid PromQL and means something against
the metrics a live server exports.

- `dashboard_expressions(path)`: every target `expr` of a Grafana dashboard,
  with Grafana's variables replaced by values Prometheus accepts.
- `alert_expressions(path)`: every `expr` of a Prometheus rules file (the alerts by
  default; `RECORDING_PATH` for the recording rules).
- `run_prometheus(target, tmp_path)`: a context manager that starts the
  `prometheus` binary scraping `target` as job "dvn", with the project's alert
  and recording rules loaded, and yields a `PrometheusHandle` to query it.

Errors: `PrometheusError` (Prometheus would not start, or answered a query
with an error; the message is Prometheus's own), `TimeoutError` from
`PrometheusHandle.wait_for`.
"""

from __future__ import annotations

import json
import re
import shutil
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import httpx
import yaml

REPO_ROOT = Path(__file__).resolve().parents[2]
DASHBOARD_PATH = REPO_ROOT / "deploy" / "grafana" / "dashboards" / "dvn.json"
ALERTS_PATH = REPO_ROOT / "deploy" / "prometheus" / "alerts.yml"
RECORDING_PATH = REPO_ROOT / "deploy" / "prometheus" / "recording.yml"

# Grafana's built-in interval variables, with the values a test query uses.
GRAFANA_BUILTINS: dict[str, str] = {
    "__rate_interval": "1m",
    "__interval": "15s",
    "__range": "1h",
}
# A multi-value variable set to "All" is a regex that matches everything.
DEFAULT_VARIABLE_VALUE = ".*"

Sample = dict[str, Any]


class PrometheusError(RuntimeError):
    """Prometheus failed to start, or answered a request with an error."""


def _substitute_variables(expr: str, variables: dict[str, str]) -> str:
    """Replace `$name`, `${name}` and `[[name]]` references by their values."""

    def replace(match: re.Match[str]) -> str:
        name = match.group("braced") or match.group("plain") or match.group("legacy")
        return variables.get(name, match.group(0))

    pattern = r"\$\{(?P<braced>\w+)(?::\w+)?\}|\$(?P<plain>\w+)|\[\[(?P<legacy>\w+)\]\]"
    return re.sub(pattern, replace, expr)


def _walk_panels(panels: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    for panel in panels:
        yield panel
        # Collapsed rows keep their panels inside the row.
        yield from _walk_panels(panel.get("panels", []))


def dashboard_expressions(path: Path | str = DASHBOARD_PATH) -> list[str]:
    """Return every target `expr` of the Grafana dashboard at `path`, in panel order.

    `$__rate_interval` becomes `1m`, `$__interval` `15s`, `$__range` `1h`; a
    dashboard template variable becomes its `allValue` (or `.*`). Raises
    `ValueError` if the file is not a dashboard with panels.
    """
    dashboard = json.loads(Path(path).read_text())
    if not isinstance(dashboard, dict) or not isinstance(dashboard.get("panels"), list):
        raise ValueError(f"{path} is not a Grafana dashboard: no top-level 'panels' list")
    variables = dict(GRAFANA_BUILTINS)
    for variable in dashboard.get("templating", {}).get("list", []):
        variables[variable["name"]] = variable.get("allValue") or DEFAULT_VARIABLE_VALUE
    expressions: list[str] = []
    for panel in _walk_panels(cast(list[dict[str, Any]], dashboard["panels"])):
        for target in panel.get("targets", []):
            expr = target.get("expr")
            if isinstance(expr, str) and expr.strip():
                expressions.append(_substitute_variables(expr, variables))
    return expressions


def alert_expressions(path: Path | str = ALERTS_PATH) -> list[str]:
    """Return the `expr` of every alerting and recording rule in the rules file at `path`.

    Raises `ValueError` if the file has no `groups` list.
    """
    rules = yaml.safe_load(Path(path).read_text())
    if not isinstance(rules, dict) or not isinstance(rules.get("groups"), list):
        raise ValueError(f"{path} is not a Prometheus rules file: no top-level 'groups' list")
    expressions: list[str] = []
    for group in rules["groups"]:
        for rule in group.get("rules", []):
            expressions.append(str(rule["expr"]).strip())
    return expressions


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class PrometheusHandle:
    """A running Prometheus: its base URL, its process, and an HTTP client for queries."""

    url: str
    process: subprocess.Popen[bytes]
    log_path: Path
    client: httpx.Client

    def query(self, expr: str) -> list[Sample]:
        """Evaluate `expr` as an instant query now and return its samples.

        A vector gives one dict per series (`metric`, `value`); a scalar or a
        string gives one dict with an empty `metric`. Raises `PrometheusError`
        with Prometheus's error text when the query is invalid or fails.
        """
        try:
            response = self.client.get("/api/v1/query", params={"query": expr})
        except httpx.HTTPError as exc:
            raise PrometheusError(f"query {expr!r}: {exc}") from exc
        try:
            body = response.json()
        except ValueError as exc:
            raise PrometheusError(
                f"query {expr!r}: HTTP {response.status_code}: {response.text[:500]}"
            ) from exc
        if response.status_code != 200 or body.get("status") != "success":
            raise PrometheusError(
                f"query {expr!r}: {body.get('errorType', 'error')}: {body.get('error', body)}"
            )
        data = cast(dict[str, Any], body["data"])
        if data["resultType"] in ("vector", "matrix"):
            return cast(list[Sample], data["result"])
        return [{"metric": {}, "value": data["result"]}]

    def wait_for(
        self,
        expr: str,
        predicate: Callable[[list[Sample]], bool],
        timeout: float = 10.0,
        interval: float = 0.25,
    ) -> list[Sample]:
        """Poll `expr` until `predicate(samples)` is true; return those samples.

        Raises `TimeoutError` (with the last samples) after `timeout` seconds,
        and `PrometheusError` if the query itself fails.
        """
        deadline = time.monotonic() + timeout
        while True:
            samples = self.query(expr)
            if predicate(samples):
                return samples
            if time.monotonic() >= deadline:
                raise TimeoutError(
                    f"{expr!r} did not satisfy the condition within {timeout}s; last: {samples}"
                )
            time.sleep(interval)


def _write_config(
    directory: Path, scrape_target: str, scrape_interval: str, rules: list[Path]
) -> Path:
    copies = []
    for i, path in enumerate(rules):
        copy = directory / f"rules-{i}-{path.name}"
        shutil.copyfile(path, copy)
        copies.append(copy.name)
    config = {
        "global": {"scrape_interval": scrape_interval, "evaluation_interval": scrape_interval},
        "rule_files": copies,  # relative to the config file, as in deploy/
        "scrape_configs": [
            {"job_name": "dvn", "static_configs": [{"targets": [scrape_target]}]},
        ],
    }
    config_path = directory / "prometheus.yml"
    config_path.write_text(yaml.safe_dump(config, sort_keys=False))
    return config_path


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=10)


def _wait_ready(
    client: httpx.Client, process: subprocess.Popen[bytes], log_path: Path, timeout: float
) -> None:
    deadline = time.monotonic() + timeout
    while True:
        if process.poll() is not None:
            raise PrometheusError(
                f"prometheus exited with code {process.returncode} before it was ready:\n"
                f"{log_path.read_text()[-4000:]}"
            )
        try:
            if client.get("/-/ready").status_code == 200:
                return
        except httpx.HTTPError:
            pass
        if time.monotonic() >= deadline:
            raise PrometheusError(
                f"prometheus was not ready within {timeout}s:\n{log_path.read_text()[-4000:]}"
            )
        time.sleep(0.1)


@contextmanager
def run_prometheus(
    scrape_target: str,
    tmp_path: Path,
    scrape_interval: str = "1s",
    *,
    port: int | None = None,
    alerts_path: Path = ALERTS_PATH,
    recording_path: Path = RECORDING_PATH,
    ready_timeout: float = 30.0,
) -> Iterator[PrometheusHandle]:
    """Start Prometheus scraping `scrape_target` (`host:port`) as job "dvn"; stop it on exit.

    The config and a copy of the alert and recording rules are written to `tmp_path`, the
    TSDB lives in `tmp_path/data`, and Prometheus listens on 127.0.0.1:`port`
    (a free port when `port` is None; pass one to let Prometheus scrape
    itself). The first scrape lands about 5 s after start (Prometheus batches
    target discovery updates every 5 s), so wait with `wait_for` for the data
    a test needs. Raises `PrometheusError` if the binary is missing or Prometheus
    exits or is not ready within `ready_timeout` seconds (the message carries
    its log).
    """
    binary = shutil.which("prometheus")
    if binary is None:
        raise PrometheusError(
            "the `prometheus` binary is not on PATH; install it with scripts/system-deps.sh "
            "(Debian package `prometheus`)"
        )
    directory = tmp_path / "prometheus"
    directory.mkdir(parents=True, exist_ok=True)
    config_path = _write_config(
        directory, scrape_target, scrape_interval, [alerts_path, recording_path]
    )
    listen = f"127.0.0.1:{port if port is not None else free_port()}"
    log_path = directory / "prometheus.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [
                binary,
                f"--config.file={config_path}",
                f"--storage.tsdb.path={directory / 'data'}",
                f"--web.listen-address={listen}",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
    try:
        with httpx.Client(base_url=f"http://{listen}", timeout=10.0) as client:
            _wait_ready(client, process, log_path, ready_timeout)
            yield PrometheusHandle(
                url=f"http://{listen}", process=process, log_path=log_path, client=client
            )
    finally:
        _stop(process)
