"""``dvn bench overload`` at a tiny size against a real ``dvn serve`` of the tiny checkpoint:
the report's files, every point accounted for, the goals, the progress lines, and
``--server-args`` reaching the server. No figure is asserted: a smoke run's mean nothing."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

import bench.overload
from bench.overload import goals
from dvn.cli import main

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def test_bench_overload_writes_its_report(
    tiny_checkpoint: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("DVN_TORCH_THREADS", "1")
    started: list[tuple[str, ...]] = []
    real_serve = bench.overload.dvn_serve

    @contextmanager
    def spy(checkpoint: Path, log: Path, *args: str, **kwargs: Any) -> Iterator[Any]:
        started.append(args)
        with real_serve(checkpoint, log, *args, **kwargs) as server:
            yield server

    monkeypatch.setattr(bench.overload, "dvn_serve", spy)
    stderr = io.StringIO()
    monkeypatch.setattr("sys.stderr", stderr)
    out = tmp_path / "results"
    argv = ["bench", "overload", "--checkpoint", str(tiny_checkpoint), "--out", str(out),
            "--duration", "0.3", "--warmup", "0.1", "--capacity-clients", "2",
            "--factors", "1,2", "--loads", "0.5,1.5", "--budget", "2s", "--profile-iters", "1",
            "--server-args", "--max-queue-size 7 --log-level warning"]  # fmt: skip
    assert main(argv) == 0
    assert started == [("--max-queue-size", "7", "--log-level", "warning")]
    assert sorted(p.name for p in out.iterdir()) == [
        "overload.json",
        "overload.md",
        "overload.png",
    ]
    data = json.loads((out / "overload.json").read_text())
    assert (data["task"], data["budget"], data["duration_s"]) == ("digits", "2s", 0.3)
    assert data["server_args"] == ["--max-queue-size", "7", "--log-level", "warning"]
    capacity = data["capacity"]
    assert capacity["clients"] == 2 and capacity["level"] == 1 and capacity["rps"] > 0
    rows = data["rows"]
    assert [(r["mode"], r.get("clients"), r.get("load")) for r in rows] == [
        ("closed", 2, None),
        ("closed", 4, None),
        ("open", None, 0.5),
        ("open", None, 1.5),
    ]
    for r in rows:
        refused = sum(r["refused"].values())
        assert r["sent"] == r["ok"] + refused + r["other_failures"], r
        assert set(r["refused"]) == {"429", "503", "504"}
        assert 0 <= r["met"] <= r["ok"] and r["sent"] > 0
        assert r["goodput_rps"] == round(r["met"] / 0.3, 1)
        assert r["ok_rps"] == round(r["ok"] / 0.3, 1)
        if r["ok"]:
            assert r["met_share"] == round(r["met"] / r["ok"], 4)
            assert sum(r["levels"]["digits"].values()) == r["ok"]
    assert rows[2]["rate"] == round(0.5 * capacity["rps"], 1)
    reference, met = data["goals"]
    assert reference == {
        "goal": "goodput ≥ 80% of the goodput at 90% load, every overload point",
        "measured": "not measured: no open-loop point at 90% in this sweep",
        "met": False,
    }
    assert met["goal"] == "≥ 95% of answered requests within budget, every overload point"
    assert data["machine"]["cores"] >= 1

    md = (out / "overload.md").read_text()
    assert md == capsys.readouterr().out.removesuffix("\n")
    lines = md.splitlines()
    assert lines[0] == "## Goodput under overload"
    header = next(i for i, line in enumerate(lines) if line.startswith("| point |"))
    table = lines[header + 2 : header + 2 + len(rows)]
    assert [line.split(" | ")[0] for line in table] == [f"| {r['label']}" for r in rows]
    assert (out / "overload.png").read_bytes().startswith(PNG_MAGIC)
    # One progress line for the capacity and one per point.
    progress = [line for line in stderr.getvalue().splitlines() if line.startswith("overload:")]
    assert progress[0].startswith("overload: level-1 capacity ")
    assert [line.split()[1] for line in progress[1:]] == ["1/4", "2/4", "3/4", "4/4"]


def _row(mode: str, x: float, goodput: float, met_share: float | None, ok: int = 100) -> Any:
    key = "factor" if mode == "closed" else "load"
    return {"mode": mode, key: x, "label": f"{mode} {x:g}", "goodput_rps": goodput,
            "met_share": met_share, "ok": ok}  # fmt: skip


def test_goals_compare_every_overload_point_with_90_percent_load() -> None:
    rows = [
        _row("closed", 1, 950.0, 0.99),
        _row("closed", 16, 820.0, 0.96),
        _row("open", 0.5, 500.0, 0.50),  # below capacity: not an overload point
        _row("open", 0.9, 1000.0, 0.99),
        _row("open", 4.0, 790.0, None, ok=0),
    ]
    goodput, met = goals({"rows": rows})
    assert goodput == {
        "goal": "goodput ≥ 80% of the goodput at 90% load, every overload point",
        "measured": "worst open 4: 790.0 vs 1000.0 met/s (79%)",
        "met": False,
    }
    assert met == {
        "goal": "≥ 95% of answered requests within budget, every overload point",
        "measured": "worst open 4: 0.0% of 0",
        "met": False,
    }
    rows[-1] = _row("open", 4.0, 800.0, 0.95)
    assert [g["met"] for g in goals({"rows": rows})] == [True, True]


@pytest.mark.parametrize(
    ("flag", "value", "message"),
    [
        ("--loads", "0,1", "expected numbers > 0, e.g. 0.5,1,2; got '0,1'"),
        ("--factors", "1,x", "expected comma-separated whole numbers, e.g. 1,16,64; got '1,x'"),
        ("--duration", "0", "duration must be > 0 s, got 0.0"),
    ],
)
def test_bad_arguments_are_refused(
    flag: str, value: str, message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["bench", "overload", flag, value]) == 1
    assert capsys.readouterr().err == f"dvn bench: error: {message}\n"
