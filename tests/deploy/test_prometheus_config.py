"""promtool accepts the Prometheus config, the alert rules and the recording rules; the
alerts fire when they should and the recording rules compute what they promise.

`promtool test rules` replays synthetic series through the real rule engine:
each alert is checked to fire (with its labels) on a series that means
trouble and to stay silent on a healthy one, and each recorded series (goodput,
answered, shed) is checked against the rate its input series imply. Annotations are
stripped from the copy under test so that rewording a description does not break a
test; their templates are still checked by `promtool check rules`.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO_ROOT = Path(__file__).resolve().parents[2]
PROMETHEUS_DIR = REPO_ROOT / "deploy" / "prometheus"
ALERTS = PROMETHEUS_DIR / "alerts.yml"
RECORDING = PROMETHEUS_DIR / "recording.yml"
CONFIG = PROMETHEUS_DIR / "prometheus.yml"
DASHBOARD = REPO_ROOT / "deploy" / "grafana" / "dashboards" / "dvn.json"
RECORDED = {"dvn:goodput:rate1m", "dvn:answered:rate1m", "dvn:shed:rate1m"}

pytestmark = pytest.mark.skipif(
    shutil.which("promtool") is None,
    reason="promtool is not installed (bash scripts/system-deps.sh installs Debian's prometheus)",
)


def promtool(*args: str, cwd: Path = REPO_ROOT) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["promtool", *args], capture_output=True, text=True, timeout=60, cwd=cwd)


@pytest.mark.parametrize(("rules", "count"), [(ALERTS, 4), (RECORDING, 3)])
def test_check_rules(rules: Path, count: int) -> None:
    result = promtool("check", "rules", str(rules))
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {count} rules found" in result.stdout


def test_check_config() -> None:
    result = promtool("check", "config", str(CONFIG))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS: 2 rule files found" in result.stdout


def test_every_alert_has_for_severity_and_annotations() -> None:
    rules = [r for g in yaml.safe_load(ALERTS.read_text())["groups"] for r in g["rules"]]
    assert {r["alert"] for r in rules} == {
        "DVNBudgetMissRatioHigh",
        "DVNQueueNearCapacity",
        "DVNServerErrors",
        "DVNDown",
    }
    for rule in rules:
        assert rule.get("for"), rule["alert"]
        assert rule["labels"]["severity"] in {"warning", "critical"}, rule["alert"]
        assert set(rule["annotations"]) >= {"summary", "description"}, rule["alert"]


def _case(
    series: list[tuple[str, str]], eval_time: str, alert: str, fired: list[dict[str, str]]
) -> dict[str, Any]:
    return {
        "interval": "1m",
        "input_series": [{"series": s, "values": v} for s, v in series],
        "alert_rule_test": [
            {
                "eval_time": eval_time,
                "alertname": alert,
                "exp_alerts": [{"exp_labels": labels} for labels in fired],
            }
        ],
    }


INSTANCE = {"instance": "dvn:8000", "job": "dvn"}
SEL = 'instance="dvn:8000", job="dvn"'

CASES = {
    "down fires": _case(
        [(f"up{{{SEL}}}", "0x10")],
        "5m",
        "DVNDown",
        [{**INSTANCE, "severity": "critical"}],
    ),
    "up stays silent": _case([(f"up{{{SEL}}}", "1x10")], "5m", "DVNDown", []),
    "queue 82% full fires": _case(
        [
            (f'dvn_queue_depth{{{SEL}, task="digits", level="0"}}', "210x10"),
            (f'dvn_queue_capacity{{{SEL}, task="digits", level="0"}}', "256x10"),
        ],
        "5m",
        "DVNQueueNearCapacity",
        [{**INSTANCE, "task": "digits", "level": "0", "severity": "warning"}],
    ),
    "queue 40% full stays silent": _case(
        [
            (f'dvn_queue_depth{{{SEL}, task="digits", level="0"}}', "100x10"),
            (f'dvn_queue_capacity{{{SEL}, task="digits", level="0"}}', "256x10"),
        ],
        "5m",
        "DVNQueueNearCapacity",
        [],
    ),
    "errors fire": _case(
        [
            (f'dvn_requests_total{{{SEL}, task="digits", level="2", outcome="error"}}', "0+3x10"),
            (f'dvn_requests_total{{{SEL}, task="digits", level="2", outcome="ok"}}', "0+60x10"),
        ],
        "5m",
        "DVNServerErrors",
        [{"instance": "dvn:8000", "task": "digits", "level": "2", "severity": "critical"}],
    ),
    "old errors stay silent": _case(
        [
            (f'dvn_requests_total{{{SEL}, task="digits", level="2", outcome="error"}}', "3x10"),
            (f'dvn_requests_total{{{SEL}, task="digits", level="2", outcome="ok"}}', "0+60x10"),
        ],
        "8m",
        "DVNServerErrors",
        [],
    ),
    "20% latency misses fire": _case(
        [
            (
                f'dvn_budget_total{{{SEL}, task="digits", kind="latency", result="missed"}}',
                "0+2x15",
            ),
            (f'dvn_budget_total{{{SEL}, task="digits", kind="latency", result="met"}}', "0+8x15"),
            (f'dvn_budget_total{{{SEL}, task="digits", kind="memory", result="met"}}', "0+10x15"),
        ],
        "12m",
        "DVNBudgetMissRatioHigh",
        [{"task": "digits", "kind": "latency", "severity": "warning"}],
    ),
    "5% latency misses stay silent": _case(
        [
            (
                f'dvn_budget_total{{{SEL}, task="digits", kind="latency", result="missed"}}',
                "0+1x15",
            ),
            (f'dvn_budget_total{{{SEL}, task="digits", kind="latency", result="met"}}', "0+19x15"),
        ],
        "12m",
        "DVNBudgetMissRatioHigh",
        [],
    ),
    "no traffic stays silent": _case(
        [(f'dvn_budget_total{{{SEL}, task="digits", kind="latency", result="met"}}', "5x15")],
        "12m",
        "DVNBudgetMissRatioHigh",
        [],
    ),
}


def test_alerts_fire_on_trouble_and_stay_silent_otherwise(tmp_path: Path) -> None:
    rules = yaml.safe_load(ALERTS.read_text())
    for group in rules["groups"]:
        for rule in group["rules"]:
            rule.pop("annotations", None)
    (tmp_path / "alerts.yml").write_text(yaml.safe_dump(rules, sort_keys=False))
    tests = {
        "rule_files": ["alerts.yml"],
        "evaluation_interval": "1m",
        "tests": [{"name": name, **case} for name, case in CASES.items()],
    }
    (tmp_path / "alerts_test.yml").write_text(yaml.safe_dump(tests, sort_keys=False))
    result = promtool("test", "rules", "alerts_test.yml", cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr


def _recorded(rules: Path = RECORDING) -> dict[str, str]:
    return {
        r["record"]: r["expr"]
        for g in yaml.safe_load(rules.read_text())["groups"]
        for r in g["rules"]
    }


def test_recording_rules_are_the_goodput_set() -> None:
    assert set(_recorded()) == RECORDED


def test_every_recorded_series_the_dashboard_reads_is_recorded() -> None:
    exprs = [
        t["expr"] for p in json.loads(DASHBOARD.read_text())["panels"] for t in p.get("targets", [])
    ]
    read = {name for e in exprs for name in re.findall(r"\bdvn:[a-z_]+:[a-z0-9_]+", e)}
    assert read == RECORDED  # the goodput panel and stat read all three, and nothing else


def _two_instances(metric: str, labels: str, per_minute: tuple[int, int]) -> list[dict[str, str]]:
    """One counter series per instance, rising by ``per_minute`` a minute on each."""
    return [
        {
            "series": f'{metric}{{instance="dvn-{i}:8000", job="dvn", {labels}}}',
            "values": f"0+{n}x10",
        }
        for i, n in enumerate(per_minute)
    ]


def test_recording_rules_compute_goodput_answered_and_shed(tmp_path: Path) -> None:
    """Two instances of the server, task digits: 90 latency budgets met a minute (60 + 30),
    30 missed and 120 memory budgets met (neither is goodput); 150 answers and 45 refusals
    a minute. Task shapes answers without budgets: no goodput at all."""
    budget = "dvn_budget_total"
    requests = "dvn_requests_total"
    series = [
        *_two_instances(budget, 'task="digits", kind="latency", result="met"', (60, 30)),
        *_two_instances(budget, 'task="digits", kind="latency", result="missed"', (20, 10)),
        *_two_instances(budget, 'task="digits", kind="memory", result="met"', (60, 60)),
        *_two_instances(requests, 'task="digits", level="1", outcome="ok"', (100, 50)),
        *_two_instances(requests, 'task="digits", level="none", outcome="rejected"', (30, 15)),
        *_two_instances(requests, 'task="shapes", level="2", outcome="ok"', (60, 0)),
    ]

    def expect(expr: str, *samples: tuple[str, float]) -> dict[str, object]:
        return {
            "expr": expr,
            "eval_time": "5m",
            "exp_samples": [
                {"labels": f'{expr}{{task="{task}"}}', "value": value} for task, value in samples
            ],
        }

    tests = {
        "rule_files": [str(RECORDING)],
        "evaluation_interval": "1m",
        "tests": [
            {
                "interval": "1m",
                "input_series": series,
                "promql_expr_test": [
                    expect("dvn:goodput:rate1m", ("digits", 90 / 60)),
                    expect("dvn:answered:rate1m", ("digits", 150 / 60), ("shapes", 1.0)),
                    expect("dvn:shed:rate1m", ("digits", 45 / 60)),
                ],
            }
        ],
    }
    (tmp_path / "recording_test.yml").write_text(yaml.safe_dump(tests, sort_keys=False))
    result = promtool("test", "rules", "recording_test.yml", cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
