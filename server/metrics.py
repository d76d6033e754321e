"""Prometheus metrics of one app instance (own registry; names are a contract, see
docs/api.md). Recorded from plain facts by :class:`Metrics`; nothing else touches the
prometheus_client objects."""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable
from typing import Any

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    Info,
    disable_created_metrics,
)

LATENCY_BUCKETS = (
    0.0005, 0.001, 0.002, 0.003, 0.005, 0.0075, 0.01, 0.015, 0.02, 0.03, 0.05, 0.075,
    0.1, 0.15, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
)  # fmt: skip
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)

# dvn_requests_total{outcome}: ok (answered), invalid (the client's mistake, 4xx),
# rejected (load shedding: 429/503/504), error (the server failed, 5xx), cancelled (the
# client went away before its answer; not computed if its batch had not started).
OUTCOMES = ("ok", "invalid", "rejected", "error", "cancelled")
# dvn_prediction_error_seconds{q}
PREDICTION_ERROR_QUANTILES = (0.5, 0.95)


class Metrics:
    def __init__(self) -> None:
        # No *_created series: they double the series count and no dashboard reads them.
        # (A process-wide switch in prometheus_client; setting it again is harmless.)
        disable_created_metrics()  # type: ignore[no-untyped-call]
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.requests = Counter(
            "dvn_requests", "Inference requests by task, level and outcome.",
            ["task", "level", "outcome"], registry=r,
        )  # fmt: skip
        self.unit_requests = Counter(
            "dvn_unit_requests", "Requests whose level used the unit.", ["unit", "task"], registry=r
        )
        self.unit_examples = Counter(
            "dvn_unit_examples", "Examples computed through the unit.", ["unit"], registry=r
        )
        self.level_selected = Counter(
            "dvn_level_selected", "Levels chosen, by reason (budget, default, pinned, degraded).",
            ["task", "level", "reason"], registry=r,
        )  # fmt: skip
        self.budget = Counter(
            "dvn_budget", "Budget constraints met or missed, by kind (latency, memory).",
            ["task", "kind", "result"], registry=r,
        )  # fmt: skip
        self.request_duration = Histogram(
            "dvn_request_duration_seconds", "Arrival to response, queueing included.",
            ["task", "level"], buckets=LATENCY_BUCKETS, registry=r,
        )  # fmt: skip
        self.queue_wait = Histogram(
            "dvn_queue_wait_seconds", "Time a request waited in its level's queue.",
            ["task", "level"], buckets=LATENCY_BUCKETS, registry=r,
        )  # fmt: skip
        self.compute = Histogram(
            "dvn_compute_seconds", "Forward time of one batch.",
            ["task", "level"], buckets=LATENCY_BUCKETS, registry=r,
        )  # fmt: skip
        self.batch_size = Histogram(
            "dvn_batch_size", "Examples per batch.", ["task", "level"],
            buckets=BATCH_BUCKETS, registry=r,
        )  # fmt: skip
        self.queue_depth = Gauge(
            "dvn_queue_depth", "Requests waiting per level.", ["task", "level"], registry=r
        )
        self.queue_capacity = Gauge(
            "dvn_queue_capacity", "Queue bound per level (requests).", ["task", "level"], registry=r
        )
        self.inflight = Gauge(
            "dvn_inflight_requests", "Inference requests being handled.", registry=r
        )
        self.predicted_latency = Gauge(
            "dvn_level_predicted_latency_seconds",
            "Predicted time to answer one example now, queueing included.",
            ["task", "level"], registry=r,
        )  # fmt: skip
        self.ceiling = Gauge(
            "dvn_level_ceiling",
            "Largest level latency-budgeted requests may use at the current arrival rate.",
            ["task"], registry=r,
        )  # fmt: skip
        self.prediction_error = Gauge(
            "dvn_prediction_error_seconds",
            "Measured minus predicted latency of recent budgeted requests: quantile q.",
            ["task", "level", "q"], registry=r,
        )  # fmt: skip
        self.batch_failures = Counter(
            "dvn_batch_failures", "Batches whose forward failed.", ["task", "level"], registry=r
        )
        self.model_info = Info("dvn_model", "The loaded checkpoint.", registry=r)
        self.model_param_bytes = Gauge(
            "dvn_model_param_bytes", "Bytes of the loaded weights.", registry=r
        )
        self.unit_param_bytes = Gauge(
            "dvn_unit_param_bytes", "Shared-trunk bytes of each unit.", ["unit"], registry=r
        )
        # Labelled children by (metric, label values): ``labels()`` validates and locks on
        # every call, a dozen times a request; the label sets here are few and fixed.
        self._children: dict[tuple[object, tuple[str, ...]], Any] = {}

    def _child(self, metric: Counter | Gauge | Histogram, *values: str) -> Any:
        key = (metric, values)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = metric.labels(*values)
        return child

    def describe_model(
        self,
        *,
        name: str,
        version: str,
        sha256: str,
        device: str,
        param_bytes: int,
        unit_bytes: dict[int, int],
        levels: Iterable[tuple[str, int]],
        queue_capacity: int,
    ) -> None:
        self.model_info.info({"name": name, "version": version, "sha256": sha256, "device": device})
        self.model_param_bytes.set(param_bytes)
        for unit, n in unit_bytes.items():
            self.unit_param_bytes.labels(str(unit)).set(n)
        for task, level in levels:
            lv = str(level)
            self.queue_capacity.labels(task, lv).set(queue_capacity)
            self.queue_depth.labels(task, lv).set(0)
            # Zero series up front so rate() and the dashboards see them from the start.
            for outcome in OUTCOMES:
                self.requests.labels(task, lv, outcome)

    def answered(
        self,
        *,
        task: str,
        level: int,
        units: Iterable[int],
        examples: int,
        reason: str,
        duration_s: float,
        budget_results: dict[str, bool],
    ) -> None:
        """A request answered at ``level``."""
        lv = str(level)
        self._child(self.requests, task, lv, "ok").inc()
        self._child(self.level_selected, task, lv, reason).inc()
        self._child(self.request_duration, task, lv).observe(duration_s)
        for unit in units:
            self._child(self.unit_requests, str(unit), task).inc()
        for kind, met in budget_results.items():
            self._child(self.budget, task, kind, "met" if met else "missed").inc()
        del examples  # examples are counted per batch, in batch_done

    def refused(
        self, *, task: str, level: int | None, outcome: str, missed: str | None, n: int = 1
    ) -> None:
        """``n`` requests not answered: ``invalid``, ``rejected``, ``error`` or
        ``cancelled``; ``missed`` names the budget kind that refused them, if one did."""
        self._child(self.requests, task, "none" if level is None else str(level), outcome).inc(n)
        if missed is not None:
            self._child(self.budget, task, missed, "missed").inc(n)

    def batch_done(
        self,
        *,
        task: str,
        level: int,
        units: Iterable[int],
        examples: int,
        seconds: float,
    ) -> None:
        lv = str(level)
        self._child(self.compute, task, lv).observe(seconds)
        self._child(self.batch_size, task, lv).observe(examples)
        for unit in units:
            self._child(self.unit_examples, str(unit)).inc(examples)

    def batch_failed(self, *, task: str, level: int) -> None:
        self._child(self.batch_failures, task, str(level)).inc()

    def queued(self, *, task: str, level: int, depth: int) -> None:
        """The depth of a level's queue now."""
        self._child(self.queue_depth, task, str(level)).set(depth)

    def waited(self, *, task: str, level: int, seconds: float) -> None:
        """A request's time in its level's queue."""
        self._child(self.queue_wait, task, str(level)).observe(seconds)

    def watch_predicted(self, *, task: str, level: int, predict: Callable[[], float]) -> None:
        """Report ``predict()`` (the latency one example at ``level`` would see now) at
        each scrape, rather than setting it on every request."""
        self._child(self.predicted_latency, task, str(level)).set_function(predict)

    def watch_selection(
        self,
        *,
        task: str,
        levels: Iterable[int],
        ceiling: Callable[[], float],
        error: Callable[[int, float], float],
    ) -> None:
        """Report, at each scrape, ``ceiling()`` (the capacity ceiling of ``task``) and
        ``error(level, q)`` (the ``q`` quantile of a level's recent prediction errors)
        for q = 0.5 and 0.95: what latency selection weighs, seen from outside."""
        self._child(self.ceiling, task).set_function(ceiling)
        for level in levels:
            for q in PREDICTION_ERROR_QUANTILES:
                self._child(self.prediction_error, task, str(level), str(q)).set_function(
                    functools.partial(error, level, q)
                )
