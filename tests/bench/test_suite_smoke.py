"""The benchmark suite end to end on the shipped demo checkpoint, with tiny durations: every
part runs real processes (dvn serve, the LitServe and FastAPI peers, the baselines) and
writes its JSON and markdown (and plot), and ``docs/benchmarks.md`` is assembled from them.
No timing is asserted: the figures of a smoke run mean nothing."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench._common import cpu_times, steal_share
from bench.all import PARTS
from bench.budgets import derive_budget_mix, goals, merge_rounds
from dvn.cli import build_parser, main
from model_store.manifest import read_manifest
from server.settings import demo_checkpoint

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
PLOTTED = ("levels", "peers", "memory", "budgets", "overload")


def top_level(task: str = "shapes") -> int:
    tasks = read_manifest(demo_checkpoint()).tasks
    return next(t for t in tasks if t.name == task).levels[-1].level


@pytest.fixture(scope="module")
def suite(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("bench")
    out, docs = root / "results", root / "docs" / "benchmarks.md"
    argv = ["bench", "all", "--out", str(out), "--docs", str(docs), "--duration", "0.3",
            "--warmup", "0.1", "--clients", "1", "--points", "2", "--peer-levels", "top",
            "--repeats", "2", "--requests", "5", "--profile-iters", "1"]  # fmt: skip
    assert main(argv) == 0
    return out, docs


def test_every_part_writes_json_and_markdown(suite: tuple[Path, Path]) -> None:
    out, _ = suite
    for part in PARTS:
        data = json.loads((out / f"{part}.json").read_text())
        assert "cores" in data["machine"], part
        assert (out / f"{part}.md").read_text().startswith("## "), part
    for part in PLOTTED:
        assert (out / f"{part}.png").read_bytes().startswith(PNG_MAGIC), part


def test_peers_answered_every_server(suite: tuple[Path, Path]) -> None:
    rows = json.loads((suite[0] / "peers.json").read_text())["rows"]
    top = top_level()
    assert {(r["server"], r["level"], r["clients"]) for r in rows} == {
        ("dvn-serve", top, 1),
        ("litserve", top, 1),
        ("fastapi", top, 1),
    }
    assert all(r["ok"] > 0 and r["errors"] == 0 for r in rows), rows


def test_budgets_ran_three_policies_at_each_load(suite: tuple[Path, Path]) -> None:
    data = json.loads((suite[0] / "budgets.json").read_text())
    assert [(r["load"], r["policy"]) for r in data["rows"]] == [
        (load, policy)
        for load in (0.1, 1.5)
        for policy in ("load-aware", f"fixed level {top_level()}", "fixed level 1")
    ]
    assert all(r["sent"] > 0 for r in data["rows"])
    assert all(len(r["rounds"]) == 2 for r in data["rows"])  # the default: two rounds
    assert all(0 <= r["steal"] <= 1 for r in data["rows"])  # this VM has /proc/stat
    assert len(data["goals"]) == 2


def test_overload_swept_closed_and_open_loop(suite: tuple[Path, Path]) -> None:
    rows = json.loads((suite[0] / "overload.json").read_text())["rows"]
    assert [(r["mode"], r.get("factor", r.get("load"))) for r in rows] == [
        *(("closed", f) for f in (1, 2, 4, 8, 16)),
        *(("open", x) for x in (0.5, 0.9, 1.0, 1.5, 2.0, 4.0)),
    ]
    # A smoke run's points last a fraction of a second: on a loaded box one of them may send
    # nothing inside its window; the first (under capacity) and the sweep as a whole must.
    assert rows[0]["sent"] > 0
    assert sum(r["sent"] for r in rows) > len(rows)


def test_memory_readings_are_positive(suite: tuple[Path, Path]) -> None:
    data = json.loads((suite[0] / "memory.json").read_text())
    for key in ("bare_torch_rss", "bare_web_rss", "server_rss_warm", "server_rss_loaded"):
        assert data[key] > 0, key
    assert data["weights_bytes"] < data["separate_networks_bytes"]


def test_docs_page_has_goals_sections_and_working_plot_links(suite: tuple[Path, Path]) -> None:
    _, docs = suite
    page = docs.read_text()
    assert "## Goals" in page
    parts_with_goals = ("| levels |", "| serve |", "| peers |", "| memory |", "| budgets |",
                        "| overload |")  # fmt: skip
    goal_rows = [line for line in page.splitlines() if line.startswith(parts_with_goals)]
    assert len(goal_rows) == 10  # levels 2, serve 1, peers 2, memory 1, budgets 2, overload 2
    assert all(row.rstrip().endswith(("| met |", "| **NOT met** |")) for row in goal_rows)
    for part in PARTS:
        assert (suite[0] / f"{part}.md").read_text().splitlines()[0] in page
    for part in PLOTTED:
        assert f"](benchmarks/{part}.png)" in page
        assert (docs.parent / "benchmarks" / f"{part}.png").read_bytes().startswith(PNG_MAGIC)


@pytest.mark.parametrize(
    "part", ["peers", "memory", "budgets", "all", "levels", "serve", "transport", "overload"]
)
def test_each_part_has_its_own_command(part: str) -> None:
    args = build_parser().parse_args(["bench", part, "--out", "x"])
    assert args.handler.__name__ == f"cmd_{part}"


def test_budget_mix_is_derived_from_the_profile() -> None:
    task = {
        "levels": [
            {"level": 1, "latency_ms": {"1": 1.0, "32": 3.0}},
            {"level": 2, "latency_ms": {"1": 2.0, "32": 12.0}},
        ]
    }
    plan = {
        "levels": [
            {"level": 1, "predicted_latency_ms": 1.5},
            {"level": 2, "predicted_latency_ms": 2.5},
        ]
    }
    mix, basis = derive_budget_mix(task, plan)
    # tight 0.5 + 2 + 2*3 = 8.5; medium 0.5 + 2 + 2*12 = 26.5; loose 2.5 * 26.5 = 66.25,
    # each rounded up to two significant digits
    assert mix == "8.5ms:0.4,27ms:0.3,67ms:0.3"
    assert basis["overhead_ms"] == 0.5


def _row(
    load: float, policy: str, rps: float, met_sent: float, accuracy: float
) -> dict[str, object]:
    return {"load": load, "policy": policy, "rate": rps, "met_sent": met_sent,
            "effective_accuracy": accuracy}  # fmt: skip


def test_budget_goals_count_only_loads_up_to_80_percent_of_level_one_capacity() -> None:
    rows = [
        _row(0.5, "load-aware", 50, 0.995, 0.93),
        _row(0.5, "fixed level 4", 50, 0.90, 0.85),
        _row(0.5, "fixed level 1", 50, 1.0, 0.87),
        _row(0.9, "load-aware", 100, 0.80, 0.80),  # past 80% of level 1's (96): out of scope
        _row(0.9, "fixed level 4", 100, 0.70, 0.79),
        _row(0.9, "fixed level 1", 100, 0.85, 0.805),  # 0.005 ahead: within the 0.01 margin
        _row(1.5, "load-aware", 150, 0.40, 0.50),
        _row(1.5, "fixed level 4", 150, 0.10, 0.10),
        _row(1.5, "fixed level 1", 150, 0.55, 0.52),
    ]
    attainment, accuracy = goals({"rows": rows, "capacity_rps": {"level1": 120.0}})
    assert attainment["met"] and attainment["measured"] == "worst 99.5% over 1 load points"
    assert not accuracy["met"] and accuracy["measured"].startswith("smallest margin -0.0200")


def test_rounds_merge_by_summing_counts() -> None:
    def run(
        sent: int, met: int, score: float, p50: float, p99: float, steal: float | None
    ) -> dict[str, object]:
        return {"offered_rps": 100.0, "score": score, "sent": sent, "answered": sent - 1,
                "met": met, "effective_accuracy": round(score / sent, 4),
                "levels": {"1": sent - 1}, "p50_ms": p50, "p99_ms": p99,
                "per_budget": {"5ms": {"sent": sent, "ok": sent - 1, "met": met}},
                "errors": {"queue_full": 1}, "steal": steal}  # fmt: skip

    merged = merge_rounds(
        [run(100, 90, 81.0, 3.0, 9.0, 0.02), run(300, 210, 189.0, 5.0, 7.0, 0.15)]
    )
    assert merged == {
        "offered_rps": 100.0, "score": 270.0, "sent": 400, "answered": 398, "met": 300,
        "met_answered": round(300 / 398, 4), "met_sent": 0.75, "effective_accuracy": 0.675,
        "rounds": [0.81, 0.63], "levels": {"1": 398}, "p50_ms": 5.0, "p99_ms": 9.0,
        "per_budget": {"5ms": {"sent": 400, "ok": 398, "met": 300}},
        "errors": {"queue_full": 2}, "steal": 0.15,
    }  # fmt: skip
    assert merge_rounds([run(10, 9, 8.1, 3.0, 9.0, None)])["steal"] is None


def test_steal_share_is_the_stolen_part_of_the_cpu_time_between_readings() -> None:
    assert steal_share((100, 1000), (130, 1200)) == 0.15
    assert steal_share(None, (130, 1200)) is None
    assert steal_share((100, 1000), (100, 1000)) is None  # no time passed
    reading = cpu_times()
    assert reading is not None and 0 <= reading[0] <= reading[1]
