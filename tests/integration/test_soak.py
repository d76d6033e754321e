"""A soak against a real ``dvn serve`` of the tiny checkpoint: 20,000 requests with mixed
tasks and budgets (closed loop), none lost, none a 5xx, each counted once by the server, and
its memory flat. The same measurement as ``dvn bench soak`` (bench/soak.py), at a fifth of
its default size."""

from __future__ import annotations

from pathlib import Path

from bench._process import dvn_serve
from bench.soak import soak

REQUESTS = 20_000
CONCURRENCY = 8  # what this 2-core box answers fastest; more only queues in the client
# Every kind of budget, each met by some level of both tiny tasks: no budget (level 4);
# latency only; memory only (2 KiB: level 1, 6 KiB: level 2); both (level 3). The latency
# budgets are ones this box always meets at this concurrency: a budget that runs out while
# its request is queued is a 504 by contract (never computed late), which this test, about
# losing nothing, must not count on either way (tests/integration/test_deadlines.py does).
MIX = "none:0.25,2s:0.15,500ms:0.15,2KiB:0.15,6KiB:0.15,1s+13000B:0.15"
ENV = {"DVN_TORCH_THREADS": "1", "DVN_LOG_LEVEL": "warning"}  # no access line per request
RSS_GROWTH_LIMIT_MIB = 50.0


def test_soak_loses_nothing_and_counts_everything(tiny_checkpoint: Path, tmp_path: Path) -> None:
    with dvn_serve(tiny_checkpoint, tmp_path / "serve.log", env=ENV) as server:
        result = soak(
            server, REQUESTS, concurrency=CONCURRENCY, budget_mix=MIX, timeout=30,
            max_duration=240,
        )  # fmt: skip
    summary = {k: v for k, v in result.to_dict().items() if k != "rss_timeline"}
    assert result.sent == REQUESTS, summary
    # Nothing lost: every request sent has an outcome, and none is a timeout.
    assert result.lost == 0 and result.timeouts == 0, summary
    # Nothing failed: every answer a 200 (the queues never fill at this concurrency).
    assert result.statuses == {200: REQUESTS}, summary
    assert result.server_errors == 0 and result.errors == 0, summary
    # The server counted each request exactly once.
    assert result.counted == REQUESTS, summary
    # Both tasks, at every level (the mix's budgets reach each one).
    assert {t: sorted(per) for t, per in result.levels.items()} == {
        "digits": [1, 2, 3, 4], "shapes": [1, 2, 3, 4],
    }, summary  # fmt: skip
    # Memory flat: no per-request leak (a kilobyte a request would be 20 MiB here).
    assert result.rss_growth_mib < RSS_GROWTH_LIMIT_MIB, summary
