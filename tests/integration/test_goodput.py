"""Goodput under overload against a real ``dvn serve`` (the demo checkpoint, default
process tree): closed-loop clients far past capacity, every request with a latency budget
the idle server meets easily. Goodput (answers within budget per second) must hold at a
substantial share of what the same server does just below capacity, and the requests it
admits must meet their budget: the excess is refused (429 with Retry-After), not answered
late. Ratios of figures measured in the same test, never a time.
"""

from __future__ import annotations

from pathlib import Path

from bench._process import dvn_serve
from clients.loadtest import LoadTestConfig, run_loadtest
from server.settings import demo_checkpoint

BUDGET = "50ms"  # an idle level-1 answer takes a millisecond or two
# Closed-loop clients: under capacity, and 32 times that. The clients run in this process,
# on the server's two cores: at 256 their own CPU made 5-17% of the server's answers late
# (0.83-0.96 met, the test flaky in CI) where 128 gave 0.98-0.99 beside it.
BELOW, FAR_PAST = 4, 128
SHARE = 0.5  # goodput far past capacity, at least this share of goodput below it
MET_SHARE = 0.9  # of the answered requests, at least this share within budget
ENV = {"DVN_LOG_LEVEL": "warning"}  # no access line per request: CPU the clients need


def closed_loop(url: str, clients: int) -> tuple[float, float, int, dict[str, int]]:
    """(goodput/s, met/ok, ok, errors by type) of 3 s of ``clients`` closed-loop clients."""
    report = run_loadtest(
        LoadTestConfig(
            url=url,
            mode="closed",
            concurrency=clients,
            duration=3.0,
            warmup=0.5,
            budget_mix=f"{BUDGET}:1",
            task_mix="digits:1",
            timeout=30.0,
        )
    )
    return report.goodput_rate, report.met / max(1, report.ok), report.ok, report.errors_by_type


def test_goodput_holds_far_past_capacity(tmp_path: Path) -> None:
    with dvn_serve(demo_checkpoint(), tmp_path / "serve.log", env=ENV) as server:
        below, below_met, _, _ = closed_loop(server.url, BELOW)
        past, past_met, answered, errors = closed_loop(server.url, FAR_PAST)
    summary = f"below {below:.0f}/s ({below_met:.1%}), past {past:.0f}/s ({past_met:.1%}), {errors}"
    assert below_met >= MET_SHARE, summary
    assert past >= SHARE * below, summary
    assert answered > 0 and past_met >= MET_SHARE, summary
    # What was not answered was refused as overload, never lost: no timeouts or 5xx but
    # 503/504 from budgets.
    assert set(errors) <= {"server_busy", "queue_full", "deadline_exceeded"}, summary
