"""The transport benchmark's arithmetic, without running it: medians per point, the ratio
to the hand-written baseline, the goal's verdict and the report's table."""

from __future__ import annotations

from typing import Any

import httpx

from bench.transport import BASELINE, GOAL_RATIO, NEW, PATHS, _markdown, summarise, verdict
from bench.transport_measure import BASELINE_REV
from bench.transport_server import ANSWER, _app


def row(path: str, clients: int, kind: str, cpu: float, rps: float = 100.0) -> dict[str, Any]:
    return {"path": path, "clients": clients, "transport": kind, "cpu_ms_per_request": cpu,
            "rps": rps}  # fmt: skip


ROWS = [
    row("loadtest", 1, NEW, 0.10),
    row("loadtest", 1, BASELINE, 0.08),
    row("loadtest", 1, NEW, 0.14),
    row("loadtest", 1, BASELINE, 0.10),
    row("loadtest", 16, NEW, 0.05),
    row("loadtest", 16, BASELINE, 0.05),
    row("transport", 1, NEW, 0.02),
    row("transport", 1, "httpx", 0.06),
]


def test_summary_is_the_median_of_the_rounds_against_the_baseline() -> None:
    summary = summarise(ROWS)
    first = summary[0]
    assert first == {"path": "loadtest", "clients": 1, "transport": NEW, "rounds": 2,
                     "rps": 100.0, "cpu_ms_per_request": 0.12, "vs_baseline": 1.333}  # fmt: skip
    assert [(r["path"], r["clients"], r["transport"]) for r in summary] == [
        ("loadtest", 1, NEW), ("loadtest", 1, BASELINE), ("loadtest", 16, NEW),
        ("loadtest", 16, BASELINE), ("transport", 1, NEW), ("transport", 1, "httpx"),
    ]  # fmt: skip
    assert [r["vs_baseline"] for r in summary if r["path"] == "transport"] == [None, None]


def test_verdict_is_the_worst_concurrency_of_the_loadtest_path() -> None:
    goal = verdict(summarise(ROWS))
    assert goal == {"worst_ratio": 1.333, "goal_ratio": GOAL_RATIO, "met": False}
    assert verdict(summarise([r for r in ROWS if r["transport"] != BASELINE])) is None


def test_report_has_a_table_per_path_and_the_goal() -> None:
    summary = summarise(ROWS)
    data = {"duration_s": 3.0, "rounds": 2, "baseline_rev": BASELINE_REV, "summary": summary,
            "goal": verdict(summary), "rows": ROWS}  # fmt: skip
    md = _markdown(data)
    assert md.startswith("## Load generator: CPU per request by HTTP transport\n")
    assert md.count("| clients | transport |") == len(PATHS)
    assert f"| 1 | {NEW} | 100.0 | 0.120 | 1.33x |" in md
    assert "Worst concurrency: 1.33x, **NOT met**." in md
    assert f"fixed {len(ANSWER)} B infer response" in md


async def test_the_server_answers_the_fixed_body() -> None:
    transport = httpx.ASGITransport(app=_app())
    async with httpx.AsyncClient(transport=transport, base_url="http://bench") as client:
        r = await client.post("/infer/shapes", content=b"x")
        assert (r.status_code, r.content) == (200, ANSWER)
        assert (await client.get("/v1/models")).json()["tasks"][0]["name"] == "shapes"
