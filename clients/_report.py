"""What a load test measured: the recorder the request loop writes into, and the report
(text, JSON) made from it. Latency percentiles come from an HDR histogram in microseconds.

Accounting: every request the load generator sends ends in exactly one outcome, ``ok``,
``error`` (an HTTP error or a failed connection) or ``timeout``, so
``sent == ok + errors + timeouts``; ``not_sent`` counts open-loop arrivals dropped because
``max_outstanding`` requests were already in flight. ``met`` counts the ``ok`` answers whose
budget was met (``X-DVN-Budget-Met: true``; an answer to a request without a budget is never
``met``): per second of the measured window it is the goodput, next to the ok rate. Warm-up
requests are sent but left out of every number except ``warmup_sent``.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Literal

from hdrh.histogram import HdrHistogram

from clients._workload import NO_BUDGET

PERCENTILES: tuple[tuple[str, float], ...] = (
    ("p50", 50.0),
    ("p90", 90.0),
    ("p99", 99.0),
    ("p99.9", 99.9),
)
OutcomeKind = Literal["ok", "error", "timeout"]


@dataclass(frozen=True)
class Outcome:
    """How one request ended. ``start`` is seconds since the measured window began
    (negative during warm-up); ``budget`` is the budget-mix item (``none`` for none);
    ``status`` the HTTP status (``None`` when no response came: a timeout, a failed
    connection)."""

    task: str
    budget: str
    start: float
    latency_s: float
    kind: OutcomeKind
    level: int | None = None
    met: bool | None = None
    error_type: str | None = None
    status: int | None = None


def new_histogram(highest_s: float) -> Any:
    """An HDR histogram of latencies in microseconds, 3 significant digits."""
    return HdrHistogram(1, max(int(highest_s * 1e6), 1_000_000), 3)


def _record_us(histogram: Any, seconds: float) -> None:
    highest = int(histogram.highest_trackable_value)
    histogram.record_value(min(max(round(seconds * 1e6), 1), highest))


@dataclass
class Recorder:
    """Counts and latencies of one load test, written to by the request loop."""

    highest_s: float
    latency: Any = None
    window: Any = None  # latencies since the progress line last looked (warm-up included)
    sent: int = 0
    not_sent: int = 0
    warmup_sent: int = 0
    live_sent: int = 0
    live_ok: int = 0
    live_failed: int = 0
    retry_waits: int = 0  # closed loop, respect_retry_after: waits before a next request
    retry_wait_s: float = 0.0  # the seconds those Retry-After headers asked for
    outcomes: list[Outcome] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.latency = new_histogram(self.highest_s)
        self.window = new_histogram(self.highest_s)

    def on_sent(self, measured: bool) -> None:
        self.live_sent += 1
        if measured:
            self.sent += 1
        else:
            self.warmup_sent += 1

    def on_not_sent(self, measured: bool) -> None:
        if measured:
            self.not_sent += 1

    def on_retry_wait(self, seconds: float, measured: bool) -> None:
        """A closed-loop worker waits ``seconds`` (a Retry-After) before its next request."""
        if measured:
            self.retry_waits += 1
            self.retry_wait_s += seconds

    def on_done(self, outcome: Outcome, measured: bool) -> None:
        if outcome.kind == "ok":
            self.live_ok += 1
            _record_us(self.window, outcome.latency_s)
        else:
            self.live_failed += 1
        if not measured:
            return
        self.outcomes.append(outcome)
        if outcome.kind == "ok":
            _record_us(self.latency, outcome.latency_s)

    def window_p50_ms(self) -> float | None:
        """Median latency since the last call (``None`` when nothing completed)."""
        if self.window.get_total_count() == 0:
            return None
        p50 = float(self.window.get_value_at_percentile(50.0)) / 1000
        self.window.reset()
        return p50

    def report(
        self, config: dict[str, Any], duration_s: float, *, respect_retry_after: bool = False
    ) -> LoadReport:
        """The report of everything measured.

        Raises:
            AssertionError: a sent request has no outcome (a bug in the load generator).
        """
        kinds = Counter(o.kind for o in self.outcomes)
        ok, errors, timeouts = kinds["ok"], kinds["error"], kinds["timeout"]
        met = sum(o.kind == "ok" and bool(o.met) for o in self.outcomes)
        if self.sent != ok + errors + timeouts:
            raise AssertionError(
                f"load test lost requests: sent {self.sent} != ok {ok} + errors {errors} "
                f"+ timeouts {timeouts}"
            )
        levels: dict[str, Counter[int]] = {}
        budgets: dict[str, Counter[str]] = {}
        error_types: Counter[str] = Counter()
        for o in self.outcomes:
            # Requests without a budget have nothing to attain; they still count elsewhere.
            per_budget = budgets.setdefault(o.budget, Counter()) if o.budget != NO_BUDGET else None
            if o.kind == "ok":
                levels.setdefault(o.task, Counter())[o.level or 0] += 1
            else:
                error_types[o.error_type or o.kind] += 1
            if per_budget is not None:
                per_budget["sent"] += 1
                per_budget["ok"] += o.kind == "ok"
                per_budget["met"] += o.kind == "ok" and bool(o.met)
        duration = max(duration_s, 1e-9)
        return LoadReport(
            config=config,
            duration_s=duration_s,
            sent=self.sent,
            ok=ok,
            met=met,
            errors=errors,
            timeouts=timeouts,
            not_sent=self.not_sent,
            warmup_sent=self.warmup_sent,
            offered_rate=(self.sent + self.not_sent) / duration,
            achieved_rate=ok / duration,
            goodput_rate=met / duration,
            latency_ms=_latency_summary(self.latency),
            latency_cdf=_latency_cdf(self.latency),
            levels={t: dict(sorted(c.items())) for t, c in sorted(levels.items())},
            budget_attainment={
                b: BudgetAttainment(c["sent"], c["ok"], c["met"])
                for b, c in sorted(budgets.items())
            },
            errors_by_type=dict(error_types.most_common()),
            retry_after=RetryAfterWaits(self.retry_waits, self.retry_wait_s)
            if respect_retry_after
            else None,
            outcomes=list(self.outcomes),
        )


def _latency_summary(histogram: Any) -> dict[str, float]:
    if histogram.get_total_count() == 0:
        return {}
    summary = {name: float(histogram.get_value_at_percentile(p)) / 1000 for name, p in PERCENTILES}
    summary["max"] = float(histogram.get_max_value()) / 1000
    summary["mean"] = float(histogram.get_mean_value()) / 1000
    return summary


def _latency_cdf(histogram: Any) -> list[tuple[float, float]]:
    """(percentile, latency ms) points, dense towards the tail, for the CDF plot."""
    if histogram.get_total_count() == 0:
        return []
    points = [100 * (1 - 10 ** (-k / 20)) for k in range(0, 81)]  # 0 .. 99.99
    return [(p, float(histogram.get_value_at_percentile(p)) / 1000) for p in [*points, 100.0]]


@dataclass(frozen=True)
class BudgetAttainment:
    """Of the requests sent with one budget: how many succeeded and how many met it."""

    sent: int
    ok: int
    met: int

    @property
    def rate(self) -> float | None:
        """``met / ok``; ``None`` when nothing succeeded."""
        return self.met / self.ok if self.ok else None


@dataclass(frozen=True)
class RetryAfterWaits:
    """With ``respect_retry_after``: how often measured closed-loop requests were followed
    by a wait for the server's Retry-After, and the seconds asked for in total (a wait is cut
    short at the end of the run)."""

    waits: int
    asked_s: float


@dataclass(frozen=True)
class LoadReport:
    """The result of a load test (see the module docstring for the accounting).

    ``achieved_rate`` is ok answers per second of the measured window, ``goodput_rate``
    ``met`` answers (budget met) per second; ``latency_ms`` holds p50, p90, p99, p99.9, max
    and mean of successful requests (empty when none succeeded); ``levels`` maps task to
    level to count; ``budget_attainment`` maps each budget-mix item (except ``none``) to its
    :class:`BudgetAttainment`; ``errors_by_type`` counts every failure by the server's
    ``error.type``, ``timeout`` or ``connection``; ``retry_after`` is ``None`` unless the run
    respected Retry-After.
    """

    config: dict[str, Any]
    duration_s: float
    sent: int
    ok: int
    met: int
    errors: int
    timeouts: int
    not_sent: int
    warmup_sent: int
    offered_rate: float
    achieved_rate: float
    goodput_rate: float
    latency_ms: dict[str, float]
    latency_cdf: list[tuple[float, float]]
    levels: dict[str, dict[int, int]]
    budget_attainment: dict[str, BudgetAttainment]
    errors_by_type: dict[str, int]
    retry_after: RetryAfterWaits | None = None
    outcomes: list[Outcome] = field(repr=False, default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """The report as JSON-ready data (without the per-request outcomes)."""
        data: dict[str, Any] = {
            "config": self.config,
            "duration_s": round(self.duration_s, 3),
            "totals": {
                "sent": self.sent,
                "ok": self.ok,
                "met": self.met,
                "errors": self.errors,
                "timeouts": self.timeouts,
                "not_sent": self.not_sent,
                "warmup_sent": self.warmup_sent,
            },
            "offered_rate_rps": round(self.offered_rate, 3),
            "achieved_rate_rps": round(self.achieved_rate, 3),
            "goodput_rps": round(self.goodput_rate, 3),
            "latency_ms": {k: round(v, 3) for k, v in self.latency_ms.items()},
            "levels": {t: {str(lv): n for lv, n in c.items()} for t, c in self.levels.items()},
            "budget_attainment": {
                b: {"sent": a.sent, "ok": a.ok, "met": a.met, "rate": a.rate}
                for b, a in self.budget_attainment.items()
            },
            "errors_by_type": self.errors_by_type,
        }
        if self.retry_after is not None:
            data["retry_after"] = {
                "waits": self.retry_after.waits,
                "asked_s": round(self.retry_after.asked_s, 3),
            }
        return data

    def format_text(self) -> str:
        """The report as the table ``dvn loadtest`` prints."""
        c = self.config
        head = f"dvn loadtest {c.get('url', '')}: {c.get('mode', '')} loop, "
        if c.get("mode") == "open":
            head += f"{c.get('rate')} req/s Poisson"
        else:
            head += f"{c.get('concurrency')} workers"
        head += f", {self.duration_s:.1f} s measured after {c.get('warmup_s', 0)} s warm-up"
        lines = [
            head,
            f"{'requests':<11} sent {self.sent}  ok {self.ok}  errors {self.errors}  "
            f"timeouts {self.timeouts}  not sent {self.not_sent}  "
            f"(warm-up: {self.warmup_sent} more, not counted)",
            f"{'rate':<11} offered {self.offered_rate:.1f}/s  ok {self.achieved_rate:.1f}/s  "
            f"met {self.goodput_rate:.1f}/s (goodput: {self.met} answers within budget)",
        ]
        if self.retry_after is not None:
            lines.append(
                f"{'retry-after':<11} waited {self.retry_after.waits} times before a next "
                f"request ({self.retry_after.asked_s:.1f} s asked)"
            )
        if self.latency_ms:
            cells = "  ".join(f"{k} {v:.2f}" for k, v in self.latency_ms.items() if k != "mean")
            lines.append(f"{'latency ms':<11} {cells}  (of {self.ok} ok)")
        else:
            lines.append(f"{'latency ms':<11} no successful request")
        lines.append("levels" if self.levels else f"{'levels':<11} none ok")
        for task, counts in self.levels.items():
            total = sum(counts.values())
            mix = "  ".join(f"L{lv} {n / total:6.1%} ({n})" for lv, n in counts.items())
            lines.append(f"  {task:<14}{mix}")
        lines.append(f"{'budget':<11} met / ok responses (sent)")
        for spec, a in self.budget_attainment.items():
            rate = "-" if a.rate is None else f"{a.rate:.1%}"
            lines.append(f"  {spec:<14}{a.met:>6} / {a.ok:<6} {rate:>7}   ({a.sent} sent)")
        errors = ", ".join(f"{k} {v}" for k, v in self.errors_by_type.items()) or "none"
        lines.append(f"{'errors':<11} {errors}")
        return "\n".join(lines)
