"""``dvn loadtest`` and ``dvn infer`` as subprocesses against a real ``dvn serve`` of the
demo checkpoint: the load report agrees exactly with the server's own counters."""

from __future__ import annotations

import json
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import torch
from PIL import Image

from bench._process import ROOT, ServerProcess, dvn_serve
from model_store.checkpoint import load
from server.settings import demo_checkpoint
from tests.server.helpers import parse_metrics

DEMO = demo_checkpoint()
# 20 ms is sometimes missed on this box: a late answer (met false) or, when the deadline
# passed while the request was queued, 504 deadline_exceeded (never computed). Nothing else
# fails. (Most 5 ms requests are refused here at concurrency 4: too few answers to check.)
MIX = "20ms:0.5,200KiB:0.3,none:0.2"
TASKS = ("digits", "shapes", "textures")


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    log = tmp_path_factory.mktemp("serve") / "serve.log"
    # One torch thread: the load generator needs a core of the shared box too.
    with dvn_serve(DEMO, log, env={"DVN_TORCH_THREADS": "1"}) as process:
        yield process


def dvn(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "dvn", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


Counts = Counter[tuple[str, ...]]


def scrape(server: ServerProcess) -> dict[str, Counts]:
    """The counters the checks use, keyed by their labels:
    ``requests[(task, level, outcome)]``, ``selected[(task, level, reason)]``,
    ``budget[(task, kind, result)]``."""
    samples = parse_metrics(httpx.get(server.url + "/metrics", timeout=10).text)
    wanted = {
        "dvn_requests_total": ("requests", ("task", "level", "outcome")),
        "dvn_level_selected_total": ("selected", ("task", "level", "reason")),
        "dvn_budget_total": ("budget", ("task", "kind", "result")),
    }
    found: dict[str, Counts] = {key: Counter() for key, _ in wanted.values()}
    for (name, labels), value in samples.items():
        if name in wanted:
            key, names = wanted[name]
            d = dict(labels)
            assert value == int(value)
            found[key][tuple(d[n] for n in names)] += int(value)
    return found


def increase(before: dict[str, Counts], after: dict[str, Counts]) -> dict[str, Counts]:
    """What the run added to each counter (zero increases dropped)."""
    out: dict[str, Counts] = {}
    for key, counts in after.items():
        diff = Counter({k: v - before[key][k] for k, v in counts.items()})
        assert all(v >= 0 for v in diff.values()), (key, diff)
        out[key] = +diff
    return out


def by(counts: Counts, *positions: int) -> Counts:
    """``counts`` summed onto the label positions given."""
    out: Counts = Counter()
    for labels, n in counts.items():
        out[tuple(labels[i] for i in positions)] += n
    return out


def report_levels(report: dict[str, Any]) -> Counts:
    """The report's level counts keyed as the metrics are: (task, level)."""
    found: Counts = Counter()
    for task, levels in report["levels"].items():
        for level, n in levels.items():
            found[(task, level)] += n
    return found


def run_loadtest(server: ServerProcess, out: Path, *extra: str) -> tuple[dict[str, Any], str]:
    done = dvn(
        "loadtest", server.url, "--mode", "closed", "--concurrency", "4",
        "--budget-mix", MIX, "--json", str(out), *extra,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    report: dict[str, Any] = json.loads(out.read_text())
    totals = report["totals"]
    # every request that was sent ended exactly once; nothing failed on an idle 256-deep
    # queue but 5 ms requests whose deadline passed in it
    assert totals["sent"] == totals["ok"] + totals["errors"] + totals["timeouts"]
    assert totals["sent"] > 0
    assert (totals["timeouts"], totals["not_sent"]) == (0, 0)
    assert report["errors_by_type"] == ({"deadline_exceeded": totals["errors"]} if totals["errors"] else {})  # fmt: skip
    assert set(report["levels"]) == set(TASKS)
    assert sum(n for levels in report["levels"].values() for n in levels.values()) == totals["ok"]
    attainment = report["budget_attainment"]
    assert set(attainment) == {"20ms", "200KiB"}  # requests without a budget have none
    assert attainment["20ms"]["sent"] == attainment["20ms"]["ok"] + totals["errors"]
    assert attainment["200KiB"]["sent"] == attainment["200KiB"]["ok"]
    for a in attainment.values():
        assert a["ok"] > 0
        assert 0 <= a["met"] <= a["ok"]
        assert a["rate"] == a["met"] / a["ok"]
        assert 0.0 <= a["rate"] <= 1.0
    # a memory budget is a property of the level: the chosen level always fits it
    assert attainment["200KiB"]["met"] == attainment["200KiB"]["ok"]
    assert attainment["200KiB"]["rate"] == 1.0
    assert report["config"]["budget_mix"] == MIX
    assert report["config"]["task_mix"] == "digits:1,shapes:1,textures:1"
    assert (report["config"]["mode"], report["config"]["concurrency"]) == ("closed", 4)
    assert f"wrote {out}" in done.stdout
    return report, done.stdout


def test_loadtest_report_agrees_with_the_servers_counters(
    server: ServerProcess, tmp_path: Path
) -> None:
    """With warm-up: the totals are exact, warm-up requests included; the report leaves
    the warm-up's levels out, so per (task, level) it is at most the server's count and
    the server's surplus is exactly the warm-up requests."""
    before = scrape(server)
    report, stdout = run_loadtest(
        server, tmp_path / "lt.json",
        "--duration", "2.5", "--warmup", "0.5", "--plot", str(tmp_path / "lt.png"),
    )  # fmt: skip
    delta = increase(before, scrape(server))
    totals = report["totals"]
    sent, warmup = totals["sent"], totals["warmup_sent"]
    assert warmup > 0
    assert (report["config"]["duration_s"], report["config"]["warmup_s"]) == (2.5, 0.5)

    # every request sent, measured or warm-up, was counted once by the server ...
    assert sum(delta["requests"].values()) == sent + warmup
    # ... answered, or refused past its deadline (measured ones as the report says)
    outcomes = by(delta["requests"], 2)
    assert set(outcomes) <= {("ok",), ("rejected",)}
    assert totals["ok"] <= outcomes[("ok",)] <= totals["ok"] + warmup
    assert totals["errors"] <= outcomes[("rejected",)] <= totals["errors"] + warmup
    answered = outcomes[("ok",)]

    # levels: the server chose a level for each answered request, warm-up included
    selected = by(delta["selected"], 0, 1)
    assert sum(selected.values()) == answered
    assert by({k: v for k, v in delta["requests"].items() if k[2] == "ok"}, 0, 1) == selected
    reported = report_levels(report)
    assert all(reported[k] <= selected[k] for k in reported | selected)
    assert sum((selected - reported).values()) == answered - totals["ok"]

    # budget outcomes: one constraint per budgeted request, so at least the measured ones
    budget = by(delta["budget"], 1, 2)
    attainment = report["budget_attainment"]
    assert budget[("memory", "missed")] == 0
    assert budget[("memory", "met")] >= attainment["200KiB"]["met"]
    assert budget[("latency", "met")] >= attainment["20ms"]["met"]
    late = attainment["20ms"]["ok"] - attainment["20ms"]["met"]
    assert budget[("latency", "missed")] >= late + totals["errors"]
    with_budget = sum(a["sent"] for a in attainment.values())  # a 504 counts as missed
    assert with_budget <= sum(budget.values()) <= with_budget + warmup

    # the text report says the same, and the figure is a PNG
    assert (
        f"requests    sent {sent}  ok {totals['ok']}  errors {totals['errors']}  timeouts 0"
        in stdout
    )
    assert f"(warm-up: {warmup} more, not counted)" in stdout
    png = tmp_path / "lt.png"
    assert f"wrote {png}" in stdout
    assert png.read_bytes().startswith(b"\x89PNG\r\n\x1a\n")
    with Image.open(png) as image:
        assert image.format == "PNG"
        assert image.size[0] > 200 and image.size[1] > 200


def test_loadtest_without_warmup_matches_level_and_budget_counters_exactly(
    server: ServerProcess, tmp_path: Path
) -> None:
    """Without warm-up every request sent is in the report, so the report's levels and
    budget attainment equal the server's counter increases exactly."""
    before = scrape(server)
    report, _ = run_loadtest(server, tmp_path / "lt.json", "--duration", "1.5", "--warmup", "0")
    delta = increase(before, scrape(server))
    totals = report["totals"]
    assert totals["warmup_sent"] == 0
    assert sum(delta["requests"].values()) == totals["sent"]
    assert by(delta["requests"], 2) == +Counter(
        {("ok",): totals["ok"], ("rejected",): totals["errors"]}
    )

    reported = report_levels(report)
    assert by(delta["selected"], 0, 1) == reported
    # requests without a budget got the default level; the others were chosen by budget
    attainment = report["budget_attainment"]
    reasons = by(delta["selected"], 2)
    no_budget = totals["sent"] - sum(a["sent"] for a in attainment.values())
    assert reasons[("default",)] == no_budget
    assert reasons[("budget",)] + reasons[("degraded",)] == totals["ok"] - no_budget
    assert set(reasons) <= {("default",), ("budget",), ("degraded",)}

    # each budget of the mix has one constraint, so each answered budgeted request adds
    # one dvn_budget_total sample whose result is the response's budget.met
    budget = by(delta["budget"], 1, 2)
    assert budget == +Counter(
        {
            ("latency", "met"): attainment["20ms"]["met"],
            # a late answer, or a 504: its deadline passed before it was computed
            ("latency", "missed"): attainment["20ms"]["ok"]
            - attainment["20ms"]["met"]
            + totals["errors"],
            ("memory", "met"): attainment["200KiB"]["met"],
        }
    )


def expected_probs(task: str, level: int, x: np.ndarray) -> np.ndarray:
    ckpt = load(DEMO)
    with torch.no_grad():
        logits = ckpt.model(torch.from_numpy(x), task, level)
    return torch.softmax(logits, 1).numpy()


def test_dvn_infer_prints_json(server: ServerProcess) -> None:
    done = dvn("infer", server.url, "digits", "examples/demo/digit.npy", "--json")
    assert done.returncode == 0, done.stderr
    (doc,) = json.loads(done.stdout)
    assert doc["file"] == "examples/demo/digit.npy"
    assert (doc["task"], doc["level"], doc["units"], doc["selection"]) == (
        "digits",
        4,
        [0, 1, 2, 3],
        "default",
    )
    assert doc["budget"] is None
    assert doc["model"]["name"] == "demo"
    x = np.load(ROOT / "examples" / "demo" / "digit.npy")[None]
    want = expected_probs("digits", 4, x)[0]
    (pred,) = doc["predictions"]
    assert pred["class_index"] == int(want.argmax())
    assert pred["class_name"] == str(int(want.argmax()))
    np.testing.assert_allclose(pred["probabilities"], want, rtol=0, atol=1e-5)
    assert abs(pred["probability"] - float(want.max())) <= 1e-5


def test_dvn_infer_unknown_task_exits_1(server: ServerProcess) -> None:
    done = dvn("infer", server.url, "nope", "examples/demo/digit.npy")
    assert done.returncode == 1
    assert done.stdout == ""
    assert done.stderr.startswith("dvn infer: error: ")
    assert "unknown task 'nope'; this server serves: digits, shapes, textures" in done.stderr
    assert done.stderr == (
        "dvn infer: error: unknown task 'nope'; this server serves: digits, shapes, textures\n"
    )
