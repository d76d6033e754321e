"""``dvn bench scale`` at a tiny size on the tiny checkpoint: one local Ray session (the
benchmark's own), a real ``dvn serve`` beside it, two applications in turn (2 replicas with
BudgetRouter, then with power of two choices; the default adds one with 1 replica first).
Checked: the report's files, every run accounted for, the slow replica named and counted,
the progress lines. No figure is asserted: a smoke run's mean nothing."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import pytest

from bench.scale import verdict
from dvn.cli import main

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def test_bench_scale_writes_its_report(
    tiny_checkpoint: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    pytest.importorskip("ray.serve")
    monkeypatch.setenv("DVN_TORCH_THREADS", "1")
    stderr = io.StringIO()
    monkeypatch.setattr("sys.stderr", stderr)
    out = tmp_path / "results"
    argv = ["bench", "scale", "--checkpoint", str(tiny_checkpoint), "--out", str(out),
            "--duration", "0.6", "--warmup", "0.2", "--clients", "2", "--latency-rounds", "1",
            "--budget-mix", "1s:1,50ms:1", "--slow-ms", "5", "--skew-rate", "20",
            "--profile-iters", "1", "--replicas", "2"]  # fmt: skip
    assert main(argv) == 0
    assert sorted(p.name for p in out.iterdir()) == ["scale.json", "scale.md", "scale.png"]
    data = json.loads((out / "scale.json").read_text())
    assert (data["task"], data["level"]) == ("digits", 4)  # the tiny checkpoint's top level
    assert data["ray_start_s"] > 0
    assert list(data["deploy_s"]) == ["r2-budget", "r2-pow2"]
    for server in ("direct", "ray"):
        latency = data["latency"][server]
        assert latency["ok"] > 0 and latency["p50_ms"] <= latency["p99_ms"]
        assert len(latency["turns"]) == 1
    assert [r["replicas"] for r in data["replicas"]] == [2]
    runs = [(r["router"], r["skew"]) for r in data["routers"]]
    assert runs == [("budget", False), ("budget", True), ("pow2", True), ("pow2", False)]
    for r in [*data["replicas"], *data["routers"]]:
        assert r["sent"] > 0 and 0 <= r["met"] <= r["ok"] <= r["sent"], r
        assert r["ok"] + sum(r["errors"].values()) == r["sent"], r
        assert set(r["budgets"]) == {"1s", "50ms"}
    assert data["skew_rate"] == 20
    for r in data["routers"]:
        assert r["offered_rps"] > 0
        assert sum(r["by_replica"].values()) > 0, r["by_replica"]
        assert r["slow_share"] is not None and 0 <= r["slow_share"] <= 1
    assert data["verdict"].startswith("under skew, BudgetRouter against pow2: goodput ")

    md = (out / "scale.md").read_text()
    assert md == capsys.readouterr().out.removesuffix("\n")
    assert md.startswith("## Scale-out on Ray Serve\n")
    for heading in ("### Ray path overhead", "### Throughput and budget", "### BudgetRouter"):
        assert f"\n{heading}" in md
    assert (out / "scale.png").read_bytes().startswith(PNG_MAGIC)
    progress = [line for line in stderr.getvalue().splitlines() if line.startswith("scale:")]
    assert progress[0].startswith("scale: Ray up in ")
    assert len(progress) == 1 + 2 + 1 + 4, progress


def _run(router: str, goodput: float, p99: float | None) -> dict[str, Any]:
    return {"router": router, "skew": True, "goodput_rps": goodput, "p99_ms": p99,
            "met_share": 0.9, "slow_share": 0.25}  # fmt: skip


@pytest.mark.parametrize(
    ("ours", "pow2", "word"),
    [
        ((50.0, 80.0), (40.0, 120.0), "better"),
        ((50.0, 121.0), (40.0, 120.0), "better"),  # p99 within 5%: goodput decides
        ((40.0, 120.0), (50.0, 80.0), "worse"),
        ((50.0, 130.0), (40.0, 120.0), "mixed"),
        ((50.0, None), (40.0, 120.0), "mixed"),  # no answer, no p99: the worst p99
        ((41.0, 118.0), (40.0, 120.0), "no difference beyond 5%"),
    ],
)
def test_verdict_weighs_goodput_and_p99_under_skew(
    ours: tuple[float, float | None], pow2: tuple[float, float | None], word: str
) -> None:
    rows = [_run("budget", *ours), _run("pow2", *pow2), {**_run("pow2", 0.0, 1.0), "skew": False}]
    assert verdict(rows).endswith(f": {word}")
    assert verdict(rows[:1]) == "not measured: the router comparison needs 2 or more replicas"


@pytest.mark.parametrize(
    ("flag", "value", "message"),
    [
        ("--replicas", "0,2", "expected numbers >= 1, e.g. 1,16,64; got '0,2'"),
        ("--duration", "0", "duration must be > 0 s and warmup >= 0 s, got 0.0, 2.0"),
        ("--skew-rate", "-1", "skew rate must be > 0, got -1.0"),
    ],
)
def test_bad_arguments_are_refused(
    flag: str, value: str, message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["bench", "scale", flag, value]) == 1
    assert capsys.readouterr().err == f"dvn bench: error: {message}\n"
