"""``bench levels``: one row per (task, level), the top level as the FLOP reference."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from bench.levels import run_levels
from model_store.manifest import read_manifest

HEADER = (
    "| task | level | MFLOPs | FLOP ratio | ms @1 | ms @32 | speed-up @1 | speed-up @32 "
    "| model ms @1 | model ms @32 | model speed-up @32 | goal @32 | goal @1 |"
)


@pytest.fixture(autouse=True)
def one_torch_thread() -> Iterator[None]:
    before = torch.get_num_threads()
    torch.set_num_threads(1)  # the box is shared; timings are not asserted
    yield
    torch.set_num_threads(before)


def test_run_levels_writes_every_row(tiny_checkpoint: Path, tmp_path: Path) -> None:
    out = tmp_path / "bench"
    torch.set_num_threads(2)
    md = run_levels(tiny_checkpoint, out, repeats=2, device="cpu", threads=1)
    assert torch.get_num_threads() == 2  # timed with 1, and put back
    assert md == out / "levels.md"
    assert sorted(p.name for p in out.iterdir()) == ["levels.json", "levels.md", "levels.png"]

    manifest = read_manifest(tiny_checkpoint)
    report = json.loads((out / "levels.json").read_text())
    assert report["device"] == "cpu"
    assert report["threads"] == 1
    assert report["machine"]["torch"] == torch.__version__
    rows = report["rows"]
    assert [(r["task"], r["level"]) for r in rows] == [
        (t.name, lv.level) for t in manifest.tasks for lv in t.levels
    ]
    for task in manifest.tasks:
        mine = [r for r in rows if r["task"] == task.name]
        top = task.levels[-1]
        assert [r["flops"] for r in mine] == [lv.flops for lv in task.levels]
        assert [r["flop_ratio"] for r in mine] == [
            round(top.flops / lv.flops, 2) for lv in task.levels
        ]
        assert mine[-1]["flop_ratio"] == 1.0
        assert mine[-1]["speedup_batch1"] == 1.0
        assert mine[-1]["speedup_batch32"] == 1.0
        assert mine[-1]["goal_met"] is True  # 1.0 >= 0.5 * 1.0
        ratios = [r["flop_ratio"] for r in mine]
        assert ratios == sorted(ratios, reverse=True)
        for r in mine:
            assert r["ms_batch1"] > 0 and r["ms_batch32"] > 0
            assert r["model_ms_batch1"] > 0 and r["model_ms_batch32"] > 0
            for batch, met in ((32, "goal_met"), (1, "goal_met_batch1")):
                speedup = r[f"speedup_batch{batch}"]
                assert r[met] == (speedup >= 0.5 * r["flop_ratio"]) or (
                    abs(speedup - 0.5 * r["flop_ratio"]) < 0.01  # rounded values
                )

    lines = md.read_text().splitlines()
    assert lines[0] == "## Levels: forward time vs FLOPs"
    assert "Device: cpu, 1 torch thread(s) while timing" in lines[2]
    assert HEADER in lines
    table = lines[lines.index(HEADER) + 2 :]
    assert len(table) == len(rows)
    for line, r in zip(table, rows, strict=True):
        assert line.startswith(f"| {r['task']} | {r['level']} | {r['flops'] / 1e6:.2f} | ")
    assert (out / "levels.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
