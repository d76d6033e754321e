"""``dvn bench refusal`` against a real server: every kind answered with its status (the run
raises otherwise), a report per process."""

from __future__ import annotations

import json
from pathlib import Path

from bench.refusal import KINDS, run


def test_bench_refusal_writes_cpu_per_request_per_process(tmp_path: Path) -> None:
    data = run(tmp_path, requests=40, clients=2, rounds=1)
    per = data["cpu_us_per_request"]
    assert set(per) == set(KINDS) == {"answered", "refused", "refused_body"}
    assert all(set(cost) == {"frontend", "engine"} for cost in per.values())
    assert per["answered"]["engine"] > 0  # the forwards ran in the engine process
    assert json.loads((tmp_path / "refusal.json").read_text())["requests_per_kind"] == 40
    assert "| refused | 422 |" in (tmp_path / "refusal.md").read_text()
