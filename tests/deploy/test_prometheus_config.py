"""promtool accepts the Prometheus config and the alert rules, and the alerts fire when they should.

`promtool test rules` replays synthetic series through the real rule engine:
each alert is checked to fire (with its labels) on a series that means
trouble and to stay silent on a healthy one. Annotations are stripped from the
copy under test so that rewording a description does not break a test; their
templates are still checked by `promtool check rules`.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO_ROOT = Path(__file__).resolve().parents[2]
PROMETHEUS_DIR = REPO_ROOT / "deploy" / "prometheus"
ALERTS = PROMETHEUS_DIR / "alerts.yml"
CONFIG = PROMETHEUS_DIR / "prometheus.yml"

pytestmark = pytest.mark.skipif(
    shutil.which("promtool") is None,
    reason="promtool is not installed (bash scripts/system-deps.sh installs Debian's prometheus)",
)


def promtool(*args: str, cwd: Path = REPO_ROOT) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["promtool", *args], capture_output=True, text=True, timeout=60, cwd=cwd)


def test_check_rules() -> None:
    result = promtool("check", "rules", str(ALERTS))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS: 4 rules found" in result.stdout


def test_check_config() -> None:
    result = promtool("check", "config", str(CONFIG))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS: 1 rule files found" in result.stdout


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
