"""The load generator against an in-process fake server (httpx.MockTransport): every
request accounted for, numbers computed from what the server answered."""

from __future__ import annotations

import json
import re
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
import pytest

from clients import errors
from clients._plot import plot_report
from clients.loadtest import LoadTestConfig, arun_loadtest, run_loadtest
from tests.clients.fakes import MODELS_RESPONSE, FakeServer, error_response

URL = "http://dvn.test"


def config(fake: FakeServer, **kwargs: Any) -> LoadTestConfig:
    # A 5 s timeout: no answer of the fake (3 ms) comes near it on a loaded CI machine;
    # tests of timeouts set their own and use the fake's slow requests (30 s).
    defaults: dict[str, Any] = {"duration": 1.0, "warmup": 0.0, "seed": 1, "timeout": 5.0}
    return LoadTestConfig(URL, transport=httpx.MockTransport(fake), **(defaults | kwargs))


async def test_open_loop_accounts_for_every_request() -> None:
    fake = FakeServer(slow_every=13, fail_every=10)
    # A 1.5 s timeout: far above the fake's 3 ms on a busy machine, far below its 30 s.
    mix = "5ms:0.5,20ms:0.3,1MiB:0.2"
    report = await arun_loadtest(config(fake, rate=250, budget_mix=mix, timeout=1.5))
    assert report.sent == fake.count and report.not_sent == 0 and report.warmup_sent == 0
    assert report.sent == report.ok + report.errors + report.timeouts
    assert 150 <= report.sent <= 350  # Poisson at 250/s for 1 s
    assert (report.ok, report.errors, report.timeouts) == (
        fake.intended["ok"],
        fake.intended["queue_full"],
        fake.intended["timeout"],
    )
    assert report.errors_by_type == {
        k: v for k, v in (("queue_full", report.errors), ("timeout", report.timeouts)) if v
    }
    assert report.timeouts > 0 and report.errors > 0
    statuses = Counter(o.status for o in report.outcomes)
    assert statuses == {200: report.ok, 429: report.errors, None: report.timeouts}
    # Level mix and budget attainment are what the server answered.
    levels = {(t, lv): n for t, per in report.levels.items() for lv, n in per.items()}
    assert levels == dict(fake.levels)
    attained = report.budget_attainment
    assert set(attained) == {"5ms", "20ms", "1MiB"}
    assert attained["5ms"].met == 0 and attained["5ms"].rate == 0.0
    assert attained["20ms"].met == attained["20ms"].ok == fake.budgets[("20ms", True)]
    assert attained["1MiB"].rate == 1.0
    assert sum(a.ok for a in attained.values()) == report.ok
    assert sum(a.sent for a in attained.values()) == report.sent
    # Goodput: the answers the fake said met their budget (all but 5ms's), per second.
    met = sum(n for (budget, ok), n in fake.budgets.items() if ok)
    assert report.met == met == attained["20ms"].met + attained["1MiB"].met > 0
    assert report.goodput_rate == pytest.approx(met / 1.0)
    # HDR percentiles of the ok requests: the fake takes 3 ms, nothing ok took 1.5 s.
    assert list(report.latency_ms) == ["p50", "p90", "p99", "p99.9", "max", "mean"]
    lat = report.latency_ms
    assert 3.0 <= lat["p50"] <= lat["p90"] <= lat["p99"] <= lat["p99.9"] <= lat["max"] < 1500
    assert report.offered_rate == pytest.approx(report.sent / 1.0)
    assert report.achieved_rate == pytest.approx(report.ok / 1.0)


async def test_warmup_requests_are_sent_but_not_reported() -> None:
    fake = FakeServer()
    report = await arun_loadtest(config(fake, rate=200, warmup=0.4, duration=0.6))
    assert report.warmup_sent > 0 and report.sent > 0
    assert fake.count == report.sent + report.warmup_sent
    assert report.sent == report.ok
    assert all(o.start >= 0 for o in report.outcomes)
    assert report.budget_attainment == {}  # no budget mix: nothing to attain
    assert (
        sum(report.levels["digits"].values()) + sum(report.levels["shapes"].values()) == report.ok
    )


async def test_open_loop_caps_outstanding_and_counts_not_sent() -> None:
    fake = FakeServer(latency=0.3)
    report = await arun_loadtest(config(fake, rate=200, duration=0.6, max_outstanding=4, timeout=2))
    assert fake.max_inflight <= 4
    assert report.not_sent > 0
    assert report.sent == fake.count == report.ok
    assert report.offered_rate == pytest.approx((report.sent + report.not_sent) / 0.6)


async def test_closed_loop_keeps_concurrency_workers_busy() -> None:
    fake = FakeServer(latency=0.005)
    report = await arun_loadtest(
        config(fake, mode="closed", concurrency=3, warmup=0.2, duration=0.5, task_mix="shapes:1")
    )
    assert fake.max_inflight == 3
    assert fake.count == report.sent + report.warmup_sent
    assert report.sent == report.ok > 30
    assert set(report.levels) == {"shapes"}
    assert report.config["concurrency"] == 3 and "rate" not in report.config


@pytest.mark.parametrize(
    ("mode", "warmup"), [("closed", 0.0), ("closed", 0.2), ("open", 0.0), ("open", 0.2)]
)
async def test_max_requests_ends_the_measured_window_at_that_count(
    mode: str, warmup: float
) -> None:
    fake = FakeServer(latency=0.002)
    report = await arun_loadtest(
        config(
            fake, mode=mode, concurrency=4, rate=1000, warmup=warmup, duration=30,
            max_requests=57, timeout=5,
        )
    )  # fmt: skip
    # Exactly that many measured, each answered; warm-up requests on top, not counted.
    assert report.sent == 57 == report.ok + report.errors + report.timeouts
    assert fake.count == report.sent + report.warmup_sent
    assert (report.warmup_sent > 0) == (warmup > 0)
    # The window is the time it took, far short of the 30 s duration; rates are per it.
    assert 0 < report.duration_s < 5
    assert report.achieved_rate == pytest.approx(report.ok / report.duration_s)
    assert report.config["max_requests"] == 57


async def test_duration_still_bounds_a_max_requests_run() -> None:
    fake = FakeServer(latency=0.01)
    report = await arun_loadtest(
        config(fake, mode="closed", concurrency=2, duration=0.3, max_requests=10**6)
    )
    assert 0 < report.sent < 10**6
    assert report.duration_s == 0.3


async def test_arrivals_are_reproducible_with_a_seed() -> None:
    counts = []
    for _ in range(2):
        fake = FakeServer()
        cfg = config(fake, rate=300, duration=0.4, seed=7, timeout=5, budget_mix="5ms:1,20ms:1")
        report = await arun_loadtest(cfg)
        counts.append((report.sent, dict(report.levels)))
    assert counts[0] == counts[1]


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        (
            {"task_mix": "digits:1,cats:1"},
            "cats, which the server does not serve; it has digits, shapes",
        ),
        ({"budget_mix": "5xs:1"}, "budget mix item '5xs': budget '5xs': unknown unit 'xs'"),
    ],
)
async def test_bad_mix_fails_before_any_request(kwargs: dict[str, Any], match: str) -> None:
    fake = FakeServer()
    with pytest.raises(ValueError, match=match):
        await arun_loadtest(config(fake, rate=100, **kwargs))
    assert fake.count == 0


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"rate": 0}, "rate must be > 0"),
        ({"mode": "half-open"}, "mode must be open or closed"),
        ({"budget_mix": "5ms:-1"}, "weight of '5ms' must be positive"),
        ({"duration": 0}, "duration must be > 0"),
        ({"max_requests": 0}, "max_requests must be >= 1, got 0"),
        (
            {"respect_retry_after": True},
            re.escape(
                "respect_retry_after needs the closed loop (mode='closed', --mode closed): "
                "open-loop arrivals do not wait for answers"
            ),
        ),
    ],
)
def test_config_is_validated(kwargs: dict[str, Any], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        LoadTestConfig(URL, **kwargs)


def test_server_down_is_a_connection_error() -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused")

    cfg = LoadTestConfig(URL, duration=0.1, transport=httpx.MockTransport(refuse))
    with pytest.raises(
        errors.ConnectionFailedError, match=re.escape("GET http://dvn.test/v1/models")
    ):
        run_loadtest(cfg)


def test_report_json_and_plot(tmp_path: Path) -> None:
    fake = FakeServer(fail_every=5)
    report = run_loadtest(config(fake, rate=150, duration=0.6, budget_mix="5ms:1,20ms:1,none:1"))
    data = json.loads(json.dumps(report.to_dict()))
    totals = data["totals"]
    assert totals["sent"] == totals["ok"] + totals["errors"] + totals["timeouts"] == fake.count
    # Goodput counts 20ms's answers only: 5ms is always missed, none has nothing to meet.
    assert totals["met"] == fake.budgets[("20ms", True)] == data["budget_attainment"]["20ms"]["met"]
    assert data["goodput_rps"] == round(totals["met"] / 0.6, 3)
    assert data["achieved_rate_rps"] == round(totals["ok"] / 0.6, 3)
    assert "retry_after" not in data  # only when it was respected
    assert data["errors_by_type"] == {"queue_full": fake.intended["queue_full"]}
    assert set(data["latency_ms"]) == {"p50", "p90", "p99", "p99.9", "max", "mean"}
    assert data["budget_attainment"]["5ms"]["rate"] == 0.0
    assert data["config"]["budget_mix"] == "5ms:1,20ms:1,none:1"
    text = report.format_text()
    assert "p99.9" in text and "queue_full" in text and "5ms" in text
    rate_line = next(line for line in text.splitlines() if line.startswith("rate "))
    assert rate_line == (
        f"rate        offered {report.offered_rate:.1f}/s  ok {report.achieved_rate:.1f}/s  "
        f"met {report.goodput_rate:.1f}/s (goodput: {totals['met']} answers within budget)"
    )
    png = plot_report(report, tmp_path / "lt.png")
    assert png.read_bytes().startswith(b"\x89PNG")


class Refuser:
    """Answers every infer request with ``status`` and a Retry-After of ``retry_after``
    seconds (``None``: no header); counts them."""

    def __init__(self, status: int, type_: str, retry_after: str | None) -> None:
        self.status, self.type, self.retry_after = status, type_, retry_after
        self.count = 0

    def __call__(self, request: httpx.Request) -> httpx.Response:
        if request.url.path == "/v1/models":
            return httpx.Response(200, json=MODELS_RESPONSE)
        self.count += 1
        return error_response(self.status, self.type, "busy", retry_after=self.retry_after)


def refusing(refuser: Refuser, **kwargs: Any) -> LoadTestConfig:
    # Two workers, 0.3 s: a 30 s Retry-After outlasts the run, so a worker that honours it
    # sends exactly one request; one that ignores it sends many.
    return LoadTestConfig(
        URL, mode="closed", concurrency=2, duration=0.3, warmup=0.0, timeout=5.0,
        task_mix="digits:1", transport=httpx.MockTransport(refuser), **kwargs,
    )  # fmt: skip


@pytest.mark.parametrize(
    ("status", "type_"), [(429, "queue_full"), (429, "server_busy"), (503, "not_ready")]
)
async def test_closed_loop_workers_wait_out_retry_after_when_asked(status: int, type_: str) -> None:
    refuser = Refuser(status, type_, "30")
    report = await arun_loadtest(refusing(refuser, respect_retry_after=True))
    assert report.sent == refuser.count == report.errors == 2  # one per worker, then waiting
    assert report.errors_by_type == {type_: 2}
    assert report.retry_after is not None
    assert (report.retry_after.waits, report.retry_after.asked_s) == (2, 60.0)
    assert report.duration_s == 0.3  # the waits were cut at the end of the run
    data = report.to_dict()
    assert data["retry_after"] == {"waits": 2, "asked_s": 60.0}
    assert data["config"]["respect_retry_after"] is True
    assert "retry-after waited 2 times before a next request (60.0 s asked)" in (
        report.format_text().splitlines()
    )


async def test_closed_loop_ignores_retry_after_by_default() -> None:
    refuser = Refuser(429, "queue_full", "30")
    report = await arun_loadtest(refusing(refuser))
    assert report.sent == refuser.count > 2
    assert report.retry_after is None and report.config["respect_retry_after"] is False


@pytest.mark.parametrize(
    ("status", "type_", "retry_after"),
    [(504, "deadline_exceeded", "30"), (429, "queue_full", None)],
)
async def test_only_a_429_or_503_with_retry_after_makes_a_worker_wait(
    status: int, type_: str, retry_after: str | None
) -> None:
    refuser = Refuser(status, type_, retry_after)
    report = await arun_loadtest(refusing(refuser, respect_retry_after=True))
    assert report.sent == refuser.count > 2
    assert report.retry_after is not None and report.retry_after.waits == 0
