"""The load generator's accounting matches the server's own metrics."""

from __future__ import annotations

import httpx
import pytest

from clients.loadtest import LoadTestConfig, arun_loadtest
from tests.conftest import ServeFactory
from tests.server.helpers import parse_metrics, series


def digits_requests(text: str) -> dict[tuple[str, str], float]:
    """``dvn_requests_total`` of task digits: (level, outcome) -> count."""
    found: dict[tuple[str, str], float] = {}
    for labels, value in series(parse_metrics(text), "dvn_requests_total").items():
        d = dict(labels)
        if d["task"] == "digits":
            found[(d["level"], d["outcome"])] = value
    return found


async def test_loadtest_accounting_matches_the_servers_metrics(serve: ServeFactory) -> None:
    """One-deep queues and one-example batches at a pinned level: some requests are shed
    with queue_full, and every request the load generator sent is counted once by the
    server."""
    http = await serve(max_queue_size=1, max_batch_size=1)
    before = digits_requests((await http.get("/metrics")).text)
    config = LoadTestConfig(
        url="http://test",
        transport=httpx.ASGITransport(app=http.app),
        mode="closed",
        concurrency=8,
        duration=1.5,
        warmup=0.3,
        task_mix="digits:1",
        level=4,
        seed=3,
        timeout=10.0,
    )
    report = await arun_loadtest(config)
    after = digits_requests((await http.get("/metrics")).text)

    assert report.sent == report.ok + report.errors + report.timeouts
    assert report.sent > 0 and report.warmup_sent > 0 and report.ok > 0
    assert report.timeouts == 0 and report.not_sent == 0
    assert report.errors_by_type == {"queue_full": report.errors}
    assert report.errors > 0
    assert report.levels == {"digits": {4: report.ok}}
    assert report.budget_attainment == {}
    assert report.met == 0 and report.goodput_rate == 0.0  # no budget: nothing to meet
    assert report.duration_s == 1.5
    assert report.achieved_rate == pytest.approx(report.ok / 1.5)
    assert report.offered_rate == pytest.approx(report.sent / 1.5)
    assert set(report.latency_ms) == {"p50", "p90", "p99", "p99.9", "max", "mean"}
    assert 0 < report.latency_ms["p50"] <= report.latency_ms["p99"] <= report.latency_ms["max"]
    assert report.config == {
        "url": "http://test",
        "mode": "closed",
        "concurrency": 8,
        "respect_retry_after": False,
        "duration_s": 1.5,
        "warmup_s": 0.3,
        "budget_mix": "none:1",
        "task_mix": "digits:1",
        "level": 4,
        "on_miss": None,
        "seed": 3,
        "timeout_s": 10.0,
    }
    delta = {k: after[k] - before.get(k, 0.0) for k in after if after[k] != before.get(k, 0.0)}
    assert sum(delta.values()) == report.sent + report.warmup_sent
    # answered at level 4; shed before a level was queued (no level label)
    assert set(delta) <= {("4", "ok"), ("none", "rejected")}
    assert delta[("4", "ok")] >= report.ok
    assert delta[("none", "rejected")] >= report.errors
