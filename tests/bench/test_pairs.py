"""``dvn bench pairs`` against real processes: each counterfactual front end answers (the run
raises otherwise), and the report holds a ratio per round for every pair measured."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench.pairs import FRONTEND_PAIRS, run


def test_bench_pairs_measures_the_front_ends_and_the_inline_forward(tmp_path: Path) -> None:
    data = run(tmp_path, parts=("frontend", "inline"), rounds=1, requests=40, clients=2)
    ratios = data["frontend"]["ratios"]
    assert set(ratios) == {f"{a}/{b}" for a, b, _ in FRONTEND_PAIRS}
    assert all(len(r["cpu_us"]) == len(r["rps"]) == 1 for r in ratios.values())
    # CPU time under the clock's tick may read 0 in so short a run: rates and latencies do not
    assert all(
        x["rps"] > 0 and x["p50_ms"] > 0 for r in data["frontend"]["rounds"] for x in r.values()
    )
    assert data["inline"]["rounds"][0]["shipped"]["p50_ms"] > 0
    assert len(data["inline"]["cpu_ratio"]) == 1
    assert "threads" not in json.loads((tmp_path / "pairs.json").read_text())
    report = (tmp_path / "pairs.md").read_text()
    assert "| DirectInfer vs FastAPI's routing | front-end CPU per request (2 clients) |" in report
    assert "| inline forward vs executor thread |" in report


def test_bench_pairs_refuses_an_unknown_part(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unknown parts"):
        run(tmp_path, parts=("express",))
