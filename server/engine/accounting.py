"""The engine's accounting: every finished, refused and cancelled request and every batch,
counted in the engine's metrics (the one registry every front end's ``/metrics`` relays)."""

from __future__ import annotations

from model_store.manifest import TaskEntry
from server.engine.batching import Batcher
from server.engine.forecast import Forecaster
from server.engine.outcome import Answer, missed_kind, outcome_of
from server.engine.pending import BatchEvent
from server.engine.profile import Pace
from server.errors import ServeError
from server.metrics import Metrics


class Accounting:
    """Mixed into :class:`server.engine.core.Engine`, whose attributes these are."""

    metrics: Metrics
    forecast: Forecaster
    batcher: Batcher
    tasks: dict[str, TaskEntry]
    pace: Pace

    def account(
        self, task: str, answer: Answer | None, error: ServeError | None, examples: int
    ) -> None:
        """Count a finished request in the metrics."""
        if answer is not None:
            results: dict[str, bool] = {}
            if answer.latency_met is not None:
                results["latency"] = answer.latency_met
            if answer.memory_met is not None:
                results["memory"] = answer.memory_met
            self.metrics.answered(
                task=task,
                level=answer.level,
                units=answer.units,
                examples=examples,
                reason=answer.reason,
                duration_s=answer.measured_latency_s,
                budget_results=results,
            )
        elif error is not None:
            label = task if task in self.tasks else "unknown"
            missed = missed_kind(error)
            self.metrics.refused(task=label, level=None, outcome=outcome_of(error), missed=missed)

    def count_refused(
        self, task: str, outcome: str, missed: str | None, n: int = 1, shed: bool = False
    ) -> None:
        """Count ``n`` requests a front end refused before they reached the engine;
        ``shed``: refused for the backlog (:func:`shed_for`), a latency budget missed."""
        if shed:
            self.forecast.attainment.record(False, n=n)
        label = task if task in self.tasks else "unknown"
        self.metrics.refused(task=label, level=None, outcome=outcome, missed=missed, n=n)

    def account_cancelled(self, task: str) -> None:
        """Count a request whose client went away before its answer."""
        label = task if task in self.tasks else "unknown"
        self.metrics.refused(task=label, level=None, outcome="cancelled", missed=None)

    def _batch_done(self, event: BatchEvent) -> None:
        depth = self.batcher.depth((event.task, event.level))
        self.metrics.queued(task=event.task, level=event.level, depth=depth)
        if event.failed:
            self.metrics.batch_failed(task=event.task, level=event.level)
            return
        self.pace.record((event.task, event.level), event.examples, event.seconds)
        entry = self.tasks[event.task].levels[event.level - 1]
        self.metrics.batch_done(
            task=event.task, level=event.level, units=entry.units, examples=event.examples,
            seconds=event.seconds,
        )  # fmt: skip
