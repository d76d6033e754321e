"""tests/integration/promql.py against a real Prometheus that scrapes itself.

Prometheus's own /metrics stands in for dvn-serve here, so the helper is
proven before a server exists: the scrape shows up as `up{job="dvn"}`, the
alert and recording rules load, every dashboard, alert and recording expression is
valid PromQL (empty results are fine: the dvn_* series are absent), and a broken
expression raises with Prometheus's own message.
"""

from __future__ import annotations

import json
import re
import shutil
import socket
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest

from tests.integration.promql import (
    ALERTS_PATH,
    DASHBOARD_PATH,
    RECORDING_PATH,
    PrometheusError,
    PrometheusHandle,
    alert_expressions,
    dashboard_expressions,
    free_port,
    run_prometheus,
)

pytestmark = pytest.mark.skipif(
    shutil.which("prometheus") is None,
    reason="prometheus is not installed (bash scripts/system-deps.sh installs it)",
)

DASHBOARD_EXPRESSIONS = dashboard_expressions()
ALERT_EXPRESSIONS = alert_expressions()
RECORDING_EXPRESSIONS = alert_expressions(RECORDING_PATH)
ALERTS = {"DVNBudgetMissRatioHigh", "DVNQueueNearCapacity", "DVNServerErrors", "DVNDown"}
RECORDED = {"dvn:goodput:rate1m", "dvn:answered:rate1m", "dvn:shed:rate1m"}

# The metrics of docs/api.md (plus the queue bound and what selection weighs) the dashboard
# must show.
DASHBOARD_METRICS = [
    "dvn_requests_total",
    "dvn_unit_examples_total",
    "dvn_unit_requests_total",
    "dvn_level_selected_total",
    "dvn_budget_total",
    "dvn_request_duration_seconds_bucket",
    "dvn_queue_wait_seconds_bucket",
    "dvn_compute_seconds_bucket",
    "dvn_batch_size_bucket",
    "dvn_queue_depth",
    "dvn_queue_capacity",
    "dvn_inflight_requests",
    "dvn_level_predicted_latency_seconds",
    "dvn_model_info",
    "dvn_model_param_bytes",
    "dvn_level_ceiling",
    "dvn_prediction_error_seconds",
]


@pytest.fixture(scope="module")
def prometheus(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrometheusHandle]:
    port = free_port()
    with run_prometheus(
        f"127.0.0.1:{port}", tmp_path_factory.mktemp("self-scrape"), port=port
    ) as handle:
        yield handle


def test_dashboard_expressions_cover_the_metrics() -> None:
    joined = "\n".join(DASHBOARD_EXPRESSIONS)
    missing = [m for m in DASHBOARD_METRICS if not re.search(rf"\b{m}\b", joined)]
    assert not missing, f"the dashboard shows none of {missing}"
    assert "$" not in joined, "a Grafana variable was left unreplaced"
    raw = DASHBOARD_PATH.read_text()
    assert raw.count("$__rate_interval") == joined.count("[1m]")


def test_alert_expressions_are_the_rules() -> None:
    assert len(ALERT_EXPRESSIONS) == 4
    assert 'up{job="dvn"} == 0' in ALERT_EXPRESSIONS


def test_dashboard_variables_are_substituted(tmp_path: Path) -> None:
    dashboard = {
        "templating": {"list": [{"name": "task", "allValue": ".+"}, {"name": "level"}]},
        "panels": [
            {"targets": [{"expr": 'rate(x{task=~"$task"}[$__rate_interval])'}, {"refId": "B"}]},
            {
                "type": "row",
                "panels": [{"targets": [{"expr": 'y{level=~"${level}"}[${__interval}]'}]}],
            },
        ],
    }
    path = tmp_path / "dashboard.json"
    path.write_text(json.dumps(dashboard))
    assert dashboard_expressions(path) == ['rate(x{task=~".+"}[1m])', 'y{level=~".*"}[15s]']


def test_self_scrape_is_up(prometheus: PrometheusHandle) -> None:
    samples = prometheus.wait_for(
        'up{job="dvn"} == 1', lambda samples: len(samples) == 1, timeout=15
    )
    assert samples[0]["metric"]["job"] == "dvn"
    assert samples[0]["value"][1] == "1"


def test_alert_rules_are_loaded(prometheus: PrometheusHandle) -> None:
    body = httpx.get(f"{prometheus.url}/api/v1/rules", timeout=5).json()
    loaded = {rule["name"] for g in body["data"]["groups"] for rule in g["rules"]}
    assert loaded == ALERTS | RECORDED
    health = {rule["name"]: rule["health"] for g in body["data"]["groups"] for rule in g["rules"]}
    assert "err" not in health.values(), health


@pytest.mark.parametrize("expr", DASHBOARD_EXPRESSIONS)
def test_dashboard_expression_evaluates(prometheus: PrometheusHandle, expr: str) -> None:
    assert isinstance(prometheus.query(expr), list)


@pytest.mark.parametrize("expr", ALERT_EXPRESSIONS + RECORDING_EXPRESSIONS)
def test_alert_and_recording_expression_evaluates(prometheus: PrometheusHandle, expr: str) -> None:
    assert isinstance(prometheus.query(expr), list)


def test_scalar_results_are_wrapped(prometheus: PrometheusHandle) -> None:
    ((sample),) = prometheus.query("1 + 1")
    assert sample["metric"] == {}
    assert sample["value"][1] == "2"


def test_broken_expression_raises_with_prometheus_message(prometheus: PrometheusHandle) -> None:
    with pytest.raises(PrometheusError, match=r"bad_data: .*parse error.*unclosed left paren"):
        prometheus.query("sum(rate(dvn_requests_total[1m])")


def test_wait_for_times_out_with_the_last_result(prometheus: PrometheusHandle) -> None:
    with pytest.raises(TimeoutError, match="did not satisfy"):
        prometheus.wait_for("vector(0)", lambda samples: False, timeout=0.3, interval=0.1)


def _listening(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.5)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def test_prometheus_is_stopped_on_exit(tmp_path: Path) -> None:
    with run_prometheus("127.0.0.1:9", tmp_path) as handle:
        port = int(handle.url.rsplit(":", 1)[1])
        assert _listening(port)
    assert handle.process.poll() is not None
    assert not _listening(port)


def test_bad_rules_fail_fast_with_the_log(tmp_path: Path) -> None:
    broken = tmp_path / "broken.yml"
    broken.write_text(ALERTS_PATH.read_text().replace("up{job=", "up{{job=", 1))
    with (
        pytest.raises(
            PrometheusError, match=r"(?s)exited with code 1 .*DVNDown.*could not parse expression"
        ),
        run_prometheus("127.0.0.1:9", tmp_path, alerts_path=broken),
    ):
        pass


# A stand-in exporter with the label sets of docs/api.md's metrics: every scrape
# advances the counters, so rates, ratios and quantiles have data. It proves
# the dashboard's vector matching (group_left, ignoring) works on real series,
# which an empty Prometheus cannot show.
_SERIES = 'task="digits",level="{level}"'
_BUCKETS = ["0.001", "0.005", "0.01", "0.05", "+Inf"]


def _exposition(n: int) -> str:
    lines = [
        f'dvn_requests_total{{{_SERIES.format(level=0)},outcome="ok"}} {10 * n}',
        f'dvn_requests_total{{{_SERIES.format(level=1)},outcome="error"}} {n}',
        f'dvn_requests_total{{task="digits",level="none",outcome="rejected"}} {3 * n}',
        f'dvn_unit_requests_total{{unit="0",task="digits"}} {10 * n}',
        f'dvn_unit_requests_total{{unit="1",task="digits"}} {n}',
        f'dvn_unit_examples_total{{unit="0"}} {20 * n}',
        f'dvn_unit_examples_total{{unit="1"}} {2 * n}',
        f'dvn_level_selected_total{{{_SERIES.format(level=0)},reason="budget"}} {10 * n}',
        f'dvn_level_selected_total{{{_SERIES.format(level=1)},reason="degraded"}} {n}',
        f'dvn_budget_total{{task="digits",kind="latency",result="met"}} {8 * n}',
        f'dvn_budget_total{{task="digits",kind="latency",result="missed"}} {2 * n}',
        f'dvn_budget_total{{task="digits",kind="memory",result="met"}} {5 * n}',
        f"dvn_queue_depth{{{_SERIES.format(level=0)}}} 5",
        f"dvn_queue_capacity{{{_SERIES.format(level=0)}}} 256",
        "dvn_inflight_requests 3",
        f"dvn_level_predicted_latency_seconds{{{_SERIES.format(level=0)}}} 0.004",
        'dvn_level_ceiling{task="digits"} 4',
        f'dvn_prediction_error_seconds{{{_SERIES.format(level=0)},q="0.5"}} 0.001',
        f'dvn_prediction_error_seconds{{{_SERIES.format(level=0)},q="0.95"}} 0.003',
        'dvn_model_info{name="demo",version="1",sha256="ab12",device="cpu"} 1',
        "dvn_model_param_bytes 123456",
        'dvn_unit_param_bytes{unit="0"} 1000',
    ]
    for metric in (
        "dvn_request_duration_seconds",
        "dvn_queue_wait_seconds",
        "dvn_compute_seconds",
        "dvn_batch_size",
    ):
        for i, le in enumerate(_BUCKETS):
            lines.append(f'{metric}_bucket{{{_SERIES.format(level=0)},le="{le}"}} {(i + 1) * n}')
        lines.append(f"{metric}_sum{{{_SERIES.format(level=0)}}} {0.02 * n}")
        lines.append(f"{metric}_count{{{_SERIES.format(level=0)}}} {len(_BUCKETS) * n}")
    return "\n".join(lines) + "\n"


class _FakeExporter(BaseHTTPRequestHandler):
    scrapes = 0

    def do_GET(self) -> None:
        type(self).scrapes += 1
        body = _exposition(type(self).scrapes).encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/plain; version=0.0.4")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture(scope="module")
def fed_prometheus(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrometheusHandle]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _FakeExporter)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        target = f"127.0.0.1:{server.server_address[1]}"
        with run_prometheus(target, tmp_path_factory.mktemp("fake-dvn")) as handle:
            # Two scrapes at least, so every rate() over 1m has data, and the recording
            # rules evaluated since (the goodput panel reads what they record).
            handle.wait_for("count_over_time(dvn_inflight_requests[1m]) >= 3", bool, timeout=20)
            for recorded in sorted(RECORDED):
                handle.wait_for(recorded, bool, timeout=20)
            yield handle
    finally:
        server.shutdown()
        server.server_close()


def test_every_dashboard_expression_has_data_on_contract_metrics(
    fed_prometheus: PrometheusHandle,
) -> None:
    empty = [e for e in DASHBOARD_EXPRESSIONS if not fed_prometheus.query(e)]
    assert not empty, f"no data for: {empty}"
    nan = [
        e
        for e in DASHBOARD_EXPRESSIONS
        for s in fed_prometheus.query(e)
        if s["value"][1] in ("NaN", "+Inf", "-Inf")
    ]
    assert not nan, f"not a number for: {nan}"


def test_alerts_that_should_fire_on_the_fake_data_do(fed_prometheus: PrometheusHandle) -> None:
    # 20% latency budgets missed and errors present: two alert conditions hold;
    # the queue is 5/256 full and the target is up: those two do not.
    firing = [e for e in ALERT_EXPRESSIONS if fed_prometheus.query(e)]
    assert len(firing) == 2
    assert any("dvn_budget_total" in e for e in firing)
    assert any('outcome="error"' in e for e in firing)
