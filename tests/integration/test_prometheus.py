"""A real Prometheus scraping a real ``dvn serve``: the unit-usage and budget series hold the
values the requests imply, the alert and recording rules load, and every dashboard, alert
and recording expression evaluates."""

from __future__ import annotations

import io
import subprocess
from collections import Counter

import httpx
import numpy as np
import pytest

from bench._process import dvn_serve
from model_store.manifest import read_manifest
from server.settings import demo_checkpoint
from tests.integration.promql import (
    RECORDING_PATH,
    alert_expressions,
    dashboard_expressions,
    run_prometheus,
)

DEMO = demo_checkpoint()


def npy(shape: tuple[int, ...], seed: int) -> bytes:
    buf = io.BytesIO()
    np.save(buf, np.random.default_rng(seed).standard_normal(shape, dtype=np.float32))
    return buf.getvalue()


# (task, query, examples per request, number of requests)
MIX = [
    ("digits", "level=1", 1, 5),
    ("digits", "budget=200KiB", 2, 3),
    ("shapes", "level=2", 1, 4),
    ("textures", "budget=1GiB", 3, 2),
    ("textures", "level=4", 1, 1),
]


def scalar(samples: list[dict[str, object]]) -> float:
    assert len(samples) == 1, samples
    value = samples[0]["value"]
    assert isinstance(value, list)
    return float(value[1])


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    tmp = tmp_path_factory.mktemp("prom")
    manifest = read_manifest(DEMO)
    shapes = {t.name: tuple(t.input_shape) for t in manifest.tasks}
    with dvn_serve(DEMO, tmp / "serve.log") as server:
        target = server.url.removeprefix("http://")
        with run_prometheus(target, tmp) as prom:
            served_levels: list[tuple[str, int, int]] = []
            for task, query, examples, count in MIX:
                for i in range(count):
                    r = httpx.post(
                        f"{server.url}/infer/{task}?{query}",
                        content=npy((examples, *shapes[task]), i),
                        headers={"content-type": "application/x-npy"},
                        timeout=30,
                    )
                    assert r.status_code == 200, r.text
                    served_levels.append((task, r.json()["level"], examples))
            bad = httpx.post(f"{server.url}/infer/digits?budget=5xs", content=b"", timeout=30)
            assert bad.status_code == 422
            metrics_text = httpx.get(server.url + "/metrics").text
            prom.wait_for(
                'sum(dvn_requests_total{outcome="ok"})',
                lambda s: bool(s) and scalar(s) == len(served_levels),
                timeout=30,
            )
            yield prom, manifest, served_levels, metrics_text


def test_unit_usage_series_match_the_levels_served(served) -> None:  # type: ignore[no-untyped-def]
    prom, manifest, served_levels, _ = served
    want_requests: Counter[tuple[str, str]] = Counter()
    want_examples: Counter[str] = Counter()
    for task, level, examples in served_levels:
        for unit in manifest.task(task).levels[level - 1].units:
            want_requests[(str(unit), task)] += 1
            want_examples[str(unit)] += examples
    got_requests = {
        (s["metric"]["unit"], s["metric"]["task"]): float(s["value"][1])
        for s in prom.query("dvn_unit_requests_total")
    }
    got_examples = {
        s["metric"]["unit"]: float(s["value"][1]) for s in prom.query("dvn_unit_examples_total")
    }
    assert got_requests == {k: float(v) for k, v in want_requests.items()}
    assert got_examples == {k: float(v) for k, v in want_examples.items()}


def test_budget_and_request_series(served) -> None:  # type: ignore[no-untyped-def]
    prom, _, _, _ = served
    memory_met = prom.query('sum(dvn_budget_total{kind="memory",result="met"})')
    assert scalar(memory_met) == 3 + 2  # the 200KiB and 1GiB requests
    assert prom.query('dvn_budget_total{kind="latency"}') == []
    invalid = prom.query('sum(dvn_requests_total{outcome="invalid"})')
    assert scalar(invalid) == 1
    pinned = prom.query('sum(dvn_level_selected_total{reason="pinned"})')
    assert scalar(pinned) == 5 + 4 + 1


@pytest.mark.parametrize(
    "expr", dashboard_expressions() + alert_expressions() + alert_expressions(RECORDING_PATH)
)
def test_every_dashboard_and_alert_expression_evaluates(served, expr: str) -> None:  # type: ignore[no-untyped-def]
    prom, _, _, _ = served
    prom.query(expr)  # raises PrometheusError with Prometheus's message on any error


def test_promtool_accepts_the_metrics_output(served) -> None:  # type: ignore[no-untyped-def]
    _, _, _, metrics_text = served
    done = subprocess.run(
        ["promtool", "check", "metrics"], input=metrics_text, capture_output=True, text=True
    )
    assert (done.returncode, done.stdout, done.stderr) == (0, "", "")


def test_the_alert_rules_are_loaded(served) -> None:  # type: ignore[no-untyped-def]
    prom, _, _, _ = served
    rules = httpx.get(prom.url + "/api/v1/rules").json()["data"]["groups"]
    names = {r["name"] for g in rules for r in g["rules"]}
    assert len(names) == 4 + 3  # the alerts, and goodput, answered and shed recorded
    assert {"dvn:goodput:rate1m", "dvn:answered:rate1m", "dvn:shed:rate1m"} <= names
    assert all(r["health"] != "err" for g in rules for r in g["rules"])
