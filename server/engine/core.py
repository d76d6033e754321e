"""The one request path both front ends (``/infer`` and the Open Inference Protocol) go
through: select a level for the budget, queue, await the batch, account for it."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import numpy as np

from model_store.checkpoint import Checkpoint
from model_store.costs import unit_param_bytes
from model_store.manifest import TaskEntry
from model_store.tasks import TaskSpec
from server.budget import Budget
from server.engine.batching import Batcher
from server.engine.capacity import SHED_FACTOR, EventRate, backlog_seconds
from server.engine.executor import Executor
from server.engine.forecast import Forecaster
from server.engine.outcome import Answer, ClientDisconnected, Handling, Ticket, outcome_of
from server.engine.pending import BatchEvent, BatchResult, Pending
from server.engine.profile import LatencyProfile
from server.engine.selection import OnMiss, Selection, select_level
from server.errors import (
    BudgetUnsatisfiable,
    DeadlineExceeded,
    DeadlineUnmeetable,
    InvalidParameter,
    NotReady,
    ServeError,
    ServerBusy,
    UnknownTask,
)
from server.metrics import Metrics
from server.settings import Settings


class InferenceService:
    def __init__(
        self,
        checkpoint: Checkpoint,
        settings: Settings,
        executor: Executor,
        profile: LatencyProfile,
        metrics: Metrics,
    ) -> None:
        self.checkpoint = checkpoint
        self.manifest = checkpoint.manifest
        self.settings = settings
        self.metrics = metrics
        self.profile = profile
        self.executor = executor
        self.tasks = {t.name: t for t in self.manifest.tasks}
        self.task_index = {t.name: i for i, t in enumerate(self.manifest.tasks)}
        self.archives: dict[tuple[str, int], bytes] = {}  # exported levels, built on demand
        self.device = str(next(checkpoint.model.parameters()).device)
        self.inflight = 0
        self.arriving = 0
        self.draining = False
        self.unit_bytes = unit_param_bytes(checkpoint.model)
        self.param_bytes = sum(
            t.numel() * t.element_size() for t in checkpoint.model.state_dict().values()
        )
        # Requests past the backlog check and still in flight, and how fast they finish:
        # by Little's law their ratio is how long a new one will take to get through.
        self.serving = 0
        self.served = EventRate()
        self._idle = asyncio.Event()
        self._idle.set()
        self.batcher = Batcher(
            executor,
            profile,
            max_batch_size=settings.max_batch_size,
            max_batch_delay_s=settings.max_batch_delay_ms / 1e3,
            arriving=lambda: self.arriving,
            on_batch=self._batch_done,
            inline_s=settings.inline_forward_ms / 1e3,
            express_s=settings.express_forward_ms / 1e3,
        )
        self.forecast = Forecaster(profile, self.batcher, settings)

    # -- lookups ---------------------------------------------------------------------
    def task(self, name: str) -> TaskEntry:
        try:
            return self.tasks[name]
        except KeyError:
            valid = ", ".join(self.tasks)
            raise UnknownTask(f"unknown task {name!r}; this server serves: {valid}") from None

    def spec(self, name: str) -> TaskSpec:
        return self.checkpoint.model.config.tasks[self.task_index[name]]

    def summary(self) -> dict[str, Any]:
        """The checkpoint as ``GET /v1/models`` shows it."""
        m = self.manifest
        tasks = []
        for t in m.tasks:
            levels = []
            for lv in t.levels:
                row = self.profile.table.get((t.name, lv.level), {})
                levels.append(
                    {
                        **lv.model_dump(exclude={"accuracy"}),
                        "accuracy": None if lv.accuracy is None else lv.accuracy.value,
                        "latency_ms": {str(b): round(s * 1e3, 4) for b, s in sorted(row.items())},
                    }
                )
            tasks.append({**t.model_dump(exclude={"levels"}), "levels": levels})
        return {
            "name": m.name,
            "version": m.version,
            "sha256": m.weights_sha256,
            "device": self.device,
            "num_units": m.num_units,
            "param_bytes": self.param_bytes,
            "unit_param_bytes": {str(u): n for u, n in self.unit_bytes.items()},
            "tasks": tasks,
        }

    def check_level(self, task: TaskEntry, level: int | None) -> None:
        if level is not None and not 1 <= level <= len(task.levels):
            raise InvalidParameter(
                f"level {level} is out of range for task {task.name!r}: use 1..{len(task.levels)}"
            )

    # -- prediction and selection --------------------------------------------------------
    def select(
        self,
        task: TaskEntry,
        examples: int,
        budget: Budget | None,
        level: int | None,
        on_miss: OnMiss,
    ) -> Selection:
        self.check_level(task, level)
        options = self.forecast.options(task, examples, budget, only=level)  # pinned: its own
        return select_level(task.name, options, budget, pinned=level, on_miss=on_miss)

    # -- admission -----------------------------------------------------------------------
    @contextlib.contextmanager
    def admitted(self) -> Iterator[Ticket]:
        """Count a request in for as long as it is handled; refuse it while draining or
        when ``max_inflight`` requests are already being handled.

        Raises:
            NotReady: the server is draining.
            ServerBusy: ``max_inflight`` requests in flight.
        """
        if self.draining:
            raise NotReady("the server is shutting down; retry on another replica", retry_after_s=1)
        limit = self.settings.max_inflight
        if self.inflight >= limit:
            # Before the body is read: a request past the bound costs no memory for it.
            raise ServerBusy(
                f"the server is already handling {self.inflight} inference requests, its "
                f"limit (DVN_MAX_INFLIGHT={limit}); retry after Retry-After, or on another "
                "replica",
                retry_after_s=1,
            )
        ticket = Ticket()
        self.inflight += 1
        self.arriving += 1
        self._idle.clear()
        self.metrics.inflight.set(self.inflight)
        try:
            yield ticket
        finally:
            if not ticket.queued:
                self.arriving -= 1
            if ticket.serving:
                self.serving -= 1
                self.served.add(1)
            self.inflight -= 1
            self.metrics.inflight.set(self.inflight)
            if self.inflight == 0:
                self._idle.set()

    def check_backlog(self, budget: Budget | None, ticket: Ticket) -> None:
        """Refuse, before its body is read, a request whose latency budget is under
        1 / ``SHED_FACTOR`` of the time the requests already in flight are expected to take
        to get through (in flight / finished per second, Little's law): it would only wait
        out its deadline, and its work would slow the others. Otherwise count it in.

        Raises:
            ServerBusy: the backlog alone is expected to outlast the budget.
        """
        if budget is not None and budget.latency_s is not None:
            backlog_s = backlog_seconds(self.serving, self.served, self.settings.max_batch_size)
            if backlog_s > SHED_FACTOR * budget.latency_s:
                self.forecast.attainment.record(False)
                raise ServerBusy(
                    f"the {self.serving} requests in flight are expected to take "
                    f"{backlog_s * 1e3:.1f} ms to get through, over {SHED_FACTOR:g} times this "
                    f"request's latency budget of {budget.latency_s * 1e3:g} ms; retry after "
                    "Retry-After, raise the budget, or send to another replica",
                    retry_after_s=backlog_s,
                )
        ticket.serving = True
        self.serving += 1

    @contextlib.contextmanager
    def handling(self, task: str, log: dict[str, Any]) -> Iterator[Handling]:
        """Admit a request (see :meth:`admitted`) and, however it ends, count it in the
        metrics and note its outcome in ``log`` (the access line): the one accounting path
        of every front end. Exceptions pass through.

        Raises:
            NotReady: the server is draining.
            ServerBusy: ``max_inflight`` requests in flight.
        """
        handling: Handling | None = None
        try:
            with self.admitted() as ticket:
                handling = Handling(ticket)
                yield handling
        except ServeError as e:
            self.account(task, None, e, handling.examples if handling is not None else 0)
            log.update(outcome=e.type)
            raise
        except ClientDisconnected:
            self.account_cancelled(task)
            log.update(outcome="client_disconnected")
            raise
        except asyncio.CancelledError:
            log.update(outcome="client_disconnected")
            raise
        answer = handling.answer if handling is not None else None
        if answer is not None:
            self.account(task, answer, None, handling.examples)
            log.update(
                level=answer.level,
                outcome="ok",
                selection=answer.reason,
                budget_met=answer.budget_met,
            )

    async def wait_idle(self, timeout: float) -> bool:
        """Wait until no request is in flight; False on timeout."""
        try:
            await asyncio.wait_for(self._idle.wait(), timeout)
        except TimeoutError:
            return False
        return True

    async def infer(
        self,
        task: TaskEntry,
        inputs: np.ndarray,
        *,
        budget: Budget | None,
        level: int | None,
        on_miss: OnMiss,
        arrival: float,
        ticket: Ticket,
        disconnected: Callable[[], Awaitable[None]] | None = None,
    ) -> Answer:
        """Answer ``inputs`` (B, C, H, W) for ``task`` within ``budget``, inside
        :meth:`admitted`; :meth:`account` counts the result.

        Raises:
            ServeError: every failure, typed.
        """
        examples = int(inputs.shape[0])
        self.forecast.arrivals.add(examples)
        selection = self.select(task, examples, budget, level, on_miss)
        deadline = None
        if budget is not None and budget.latency_s is not None:
            deadline = arrival + budget.latency_s
        loop = asyncio.get_running_loop()
        pending = Pending(
            task=task.name,
            task_index=self.task_index[task.name],
            level=selection.level,
            reason=selection.reason,
            inputs=inputs,
            deadline=deadline,
            on_miss=on_miss,
            future=loop.create_future(),
        )
        self.batcher.put(pending)
        ticket.queued = True
        self.arriving -= 1
        self.metrics.queued(
            task=task.name, level=selection.level, depth=self.batcher.depth(pending.key)
        )
        selected = (task.name, selection.level)  # errors go to the level selected, not moved to
        try:
            result = await self._wait(pending, disconnected)
        except DeadlineExceeded:
            if budget is not None and budget.latency_s is not None:
                margin_s = budget.latency_s - selection.predicted_latency_s
                self.forecast.timed_out(selected, margin_s)
            raise
        self.metrics.waited(task=task.name, level=result.level, seconds=result.queue_wait_s)
        now = time.perf_counter()
        measured = now - arrival
        entry = task.levels[result.level - 1]
        latency_met = memory_met = None
        if budget is not None:
            if budget.latency_s is not None:
                latency_met = measured <= budget.latency_s
                error_s = measured - selection.predicted_latency_s
                self.forecast.answered(selected, error_s, latency_met)
            if budget.memory_bytes is not None:
                memory_met = entry.param_bytes <= budget.memory_bytes
        forecast = self.forecast
        forecast.overhead_s = 0.9 * forecast.overhead_s + 0.1 * max(
            0.0, measured - result.queue_wait_s - result.compute_s
        )
        return Answer(
            task=task,
            level=result.level,
            units=list(entry.units),
            reason=result.reason,
            probabilities=result.probabilities,
            budget=budget,
            latency_met=latency_met,
            memory_met=memory_met,
            predicted_latency_s=selection.predicted_latency_s,
            measured_latency_s=measured,
            queue_wait_s=result.queue_wait_s,
            compute_s=result.compute_s,
        )

    async def _wait(
        self, pending: Pending, disconnected: Callable[[], Awaitable[None]] | None
    ) -> BatchResult:
        if disconnected is None:
            return await pending.future
        watcher: asyncio.Future[None] = asyncio.ensure_future(disconnected())

        def gone(_: asyncio.Future[None]) -> None:
            if watcher.cancelled():
                return
            watcher.exception()  # retrieved: a failed receive() means the client is gone too
            if not pending.future.done():
                pending.abandoned = True  # the batcher drops it uncomputed
                pending.future.cancel()

        # A callback, not asyncio.wait over both: no extra future and set per request.
        watcher.add_done_callback(gone)
        try:
            return await pending.future
        except asyncio.CancelledError:
            if pending.abandoned:
                raise ClientDisconnected("client disconnected") from None
            raise
        finally:
            watcher.cancel()

    # -- accounting --------------------------------------------------------------------
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
            missed = None
            if isinstance(error, DeadlineUnmeetable | DeadlineExceeded):
                missed = "latency"
            elif isinstance(error, BudgetUnsatisfiable):
                missed = "memory"
            self.metrics.refused(task=label, level=None, outcome=outcome_of(error), missed=missed)

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
        entry = self.tasks[event.task].levels[event.level - 1]
        self.metrics.batch_done(
            task=event.task, level=event.level, units=entry.units, examples=event.examples,
            seconds=event.seconds, express=event.express,
        )  # fmt: skip
