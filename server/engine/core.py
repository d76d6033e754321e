"""The engine's request path, whichever front end or protocol sent the request: admit,
select a level for the budget, queue, await the batch, account for it. Also the dry run
(``plan``), the checkpoint summary and exports: everything that needs the weights or the
queues lives here, behind :mod:`server.engine.client`."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Hashable, Iterator

import numpy as np

from model_store.checkpoint import Checkpoint
from model_store.costs import unit_param_bytes
from model_store.manifest import TaskEntry
from model_store.tasks import TaskSpec
from server.budget import Budget, parse_budget
from server.engine.accounting import Accounting
from server.engine.admission import Admission, shed_for
from server.engine.batching import Batcher
from server.engine.executor import Executor
from server.engine.forecast import Forecaster
from server.engine.outcome import Answer, ClientDisconnected, Handling
from server.engine.pending import Clock, Pending
from server.engine.profile import LatencyProfile, Pace, predict_latency
from server.engine.selection import (
    OnMiss,
    Selection,
    check_level,
    select_level,
)
from server.engine.wire import Infer, transit_s
from server.errors import (
    DeadlineExceeded,
    InvalidInput,
    InvalidParameter,
    ServeError,
    UnknownTask,
    shutting_down,
    too_many_inflight,
)
from server.metrics import Metrics
from server.settings import Settings


class Engine(Accounting):
    """Selection, admission, queues and accounting of every inference request, over the
    batcher and executor; the one request path whichever front end sent the request."""

    def __init__(
        self,
        checkpoint: Checkpoint,
        settings: Settings,
        executor: Executor,
        profile: LatencyProfile,
        metrics: Metrics,
        *,
        clock: Clock = time.perf_counter,
    ) -> None:
        self.checkpoint = checkpoint
        self.clock = clock  # arrivals, deadlines, queues and rates: all on this one
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
        self.draining = False
        self.unit_bytes = unit_param_bytes(checkpoint.model)
        self.param_bytes = sum(
            t.numel() * t.element_size() for t in checkpoint.model.state_dict().values()
        )
        self._idle = asyncio.Event()
        self._idle.set()
        self._waiting: dict[Hashable, Pending] = {}  # by key, for cancel()
        self.batcher = Batcher(
            executor,
            profile,
            max_batch_size=settings.max_batch_size,
            on_batch=self._batch_done,
            inline_s=settings.inline_forward_ms / 1e3,
            clock=clock,
        )
        self.forecast = Forecaster(profile, self.batcher, settings)
        self.pace = Pace(clock=clock)  # against the start-up profile, once measured

    # -- lookups ---------------------------------------------------------------------
    def task(self, name: str) -> TaskEntry:
        try:
            return self.tasks[name]
        except KeyError:
            valid = ", ".join(self.tasks)
            raise UnknownTask(f"unknown task {name!r}; this server serves: {valid}") from None

    def spec(self, name: str) -> TaskSpec:
        return self.checkpoint.model.config.tasks[self.task_index[name]]

    # -- prediction and selection --------------------------------------------------------
    def select(
        self,
        task: TaskEntry,
        examples: int,
        budget: Budget | None,
        level: int | None,
        on_miss: OnMiss,
    ) -> Selection:
        check_level(task, level)
        options = self.forecast.options(task, examples, budget, only=level)  # pinned: its own
        return select_level(task.name, options, budget, pinned=level, on_miss=on_miss)

    # -- admission -----------------------------------------------------------------------
    @contextlib.contextmanager
    def admitted(self) -> Iterator[None]:
        """Count a request in for as long as it is handled; refuse it while draining or
        when ``max_inflight`` requests are already being handled.

        Raises:
            NotReady: the engine is draining.
            ServerBusy: ``max_inflight`` requests in flight.
        """
        if self.draining:
            raise shutting_down()
        limit = self.settings.max_inflight
        if self.inflight >= limit:
            raise too_many_inflight(self.inflight, limit)
        self.inflight += 1
        self._idle.clear()
        self.metrics.inflight.set(self.inflight)
        try:
            yield
        finally:
            self.inflight -= 1
            self.metrics.inflight.set(self.inflight)
            if self.inflight == 0:
                self._idle.set()

    def admission(self, task: str) -> Admission:
        """What :func:`shed_for` weighs for ``task`` now: the queues and the running
        forward alone, not the measured per-request overhead, which only answered requests
        update (an estimate that refusals cannot correct would refuse for ever)."""
        first = self.tasks[task].levels[0].level
        key = (task, first)
        wait = predict_latency(
            self.profile, self.forecast.queue_state(), key, 1, self.settings.max_batch_size
        )
        return Admission(wait_s=wait, floor_s=self.profile.forward_s(key, 1))

    def admissions(self) -> dict[str, Admission]:
        return {name: self.admission(name) for name in self.tasks}

    def check_inputs(self, task: TaskEntry, inputs: np.ndarray) -> None:
        """The front end decoded and checked the inputs; a frame from elsewhere is checked
        again here, so that no request can fail a batch it shares with others.

        Raises:
            InvalidInput: not (B, C, H, W) float32 of the task's shape, or too many examples.
        """
        shape = tuple(self.spec(task.name).input_shape)
        limit = self.settings.max_request_batch
        if inputs.ndim != 4 or tuple(inputs.shape[1:]) != shape or inputs.dtype != np.float32:
            raise InvalidInput(
                f"inputs of shape {tuple(inputs.shape)} {inputs.dtype} do not match task "
                f"{task.name!r}: send (B, {', '.join(map(str, shape))}) float32"
            )
        if not 1 <= inputs.shape[0] <= limit:
            raise InvalidInput(
                f"{inputs.shape[0]} examples in one request; send 1..{limit} "
                "(DVN_MAX_REQUEST_BATCH)"
            )

    @contextlib.contextmanager
    def handling(self, task: str) -> Iterator[Handling]:
        """Admit a request (see :meth:`admitted`) and, however it ends, count it in the
        metrics: the one accounting path of every request the engine receives. Exceptions
        pass through.

        Raises:
            NotReady: the engine is draining.
            ServerBusy: ``max_inflight`` requests in flight.
        """
        handling: Handling | None = None
        try:
            with self.admitted():
                handling = Handling()
                yield handling
        except ServeError as e:
            self.account(task, None, e, handling.examples if handling is not None else 0)
            raise
        except ClientDisconnected:
            self.account_cancelled(task)
            raise
        answer = handling.answer if handling is not None else None
        if answer is not None:
            self.account(task, answer, None, handling.examples)

    async def wait_idle(self, timeout: float) -> bool:
        """Wait until no request is in flight; False on timeout."""
        try:
            async with asyncio.timeout(timeout):  # see MPClient._call_within
                await self._idle.wait()
        except TimeoutError:
            return False
        return True

    async def infer(self, request: Infer, inputs: np.ndarray, *, key: Hashable) -> Answer:
        """Answer ``inputs`` (B, C, H, W) for ``request``: admitted, checked, selected,
        queued, computed and accounted. ``key`` names the request for :meth:`cancel`.

        Raises:
            ServeError: every failure, typed.
            ClientDisconnected: :meth:`cancel` dropped it while it waited.
        """
        arrival = self.clock() - max(0.0, request.elapsed_s) - transit_s(request)
        with self.handling(request.task) as handling:
            entry = self.task(request.task)
            budget = parse_budget(request.budget)
            if request.on_miss not in ("degrade", "reject"):
                raise InvalidParameter(
                    f"on_miss={request.on_miss!r} is not one of: degrade, reject"
                )
            check_level(entry, request.level)
            self.check_inputs(entry, inputs)
            handling.examples = int(inputs.shape[0])
            handling.answer = await self._infer(
                entry,
                inputs,
                budget=budget,
                level=request.level,
                on_miss="reject" if request.on_miss == "reject" else "degrade",
                arrival=arrival,
                key=key,
            )
            return handling.answer
        raise AssertionError("unreachable")  # pragma: no cover (mypy: the with may swallow)

    def cancel(self, key: Hashable) -> bool:
        """Drop request ``key`` uncomputed if it still waits in a queue: its client went
        away. False when it is not waiting (answered, or never seen)."""
        pending = self._waiting.get(key)
        if pending is None or pending.future.done():
            return False
        pending.abandoned = True  # the batcher drops it uncomputed
        pending.future.cancel()
        return True

    async def _infer(
        self,
        task: TaskEntry,
        inputs: np.ndarray,
        *,
        budget: Budget | None,
        level: int | None,
        on_miss: OnMiss,
        arrival: float,
        key: Hashable,
    ) -> Answer:
        examples = int(inputs.shape[0])
        self.forecast.arrivals.add(examples)
        selection = self.select(task, examples, budget, level, on_miss)
        if level is None and on_miss == "degrade" and budget is not None and budget.latency_s:
            late = selection.predicted_latency_s > budget.latency_s
            elapsed = self.clock() - arrival
            refusal = late and shed_for(budget, self.admission(task.name), elapsed)
            if refusal:
                self.forecast.attainment.record(False)
                raise refusal
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
            clock=self.clock,
        )
        self.batcher.put(pending)
        self.metrics.queued(
            task=task.name, level=selection.level, depth=self.batcher.depth(pending.key)
        )
        selected = (task.name, selection.level)  # errors go to the level selected, not moved to
        self._waiting[key] = pending
        try:
            result = await pending.future
        except DeadlineExceeded:
            if budget is not None and budget.latency_s is not None:
                margin_s = budget.latency_s - selection.predicted_latency_s
                self.forecast.timed_out(selected, margin_s)
            raise
        except asyncio.CancelledError:
            if pending.abandoned:
                raise ClientDisconnected("client disconnected") from None
            raise
        finally:
            self._waiting.pop(key, None)
        self.metrics.waited(task=task.name, level=result.level, seconds=result.queue_wait_s)
        now = self.clock()
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
