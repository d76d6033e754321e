"""Per-level queues and the batcher (Ray Serve's pattern: one future per request, a batch
closed by size, outputs checked against inputs, a failed batch failing only its own
futures).

One queue per (task, level); one scheduler loop feeds the executor, serving the most
urgent queue first: earliest deadline first, a request without a latency budget counting
as due ``NO_BUDGET_YIELD_S`` after it was queued (it yields to budgeted ones that long,
and no longer). One forward runs at a time, and a batch closes as soon as the executor is
free: it holds what queued while the last forward ran, up to ``max_batch_size`` examples
(waiting for more only added latency: docs/decisions.md, batch closing). At dequeue every
request with a latency deadline is re-checked: one whose deadline has passed is never
computed (504); one that its level can no longer answer in time moves to the largest
smaller level that can (``on_miss=degrade``; level 1 when none can) or fails with 504
(``on_miss=reject``); a request whose client went away is dropped uncomputed.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from collections.abc import Callable

import numpy as np

from server.engine.executor import Executor
from server.engine.pending import BatchEvent, BatchResult, Clock, Pending
from server.engine.profile import LatencyProfile, LevelKey
from server.errors import DeadlineExceeded, InferenceFailed, ServeError

# How long a request without a latency budget lets budgeted ones go first.
NO_BUDGET_YIELD_S = 1.0


class Batcher:
    def __init__(
        self,
        executor: Executor,
        profile: LatencyProfile,
        *,
        max_batch_size: int,
        on_batch: Callable[[BatchEvent], None],
        inline_s: float = 0.0,
        clock: Clock = time.perf_counter,
    ) -> None:
        self.executor = executor
        self.clock = clock  # deadlines, delays and predicted ends are on it
        self.profile = profile
        self.max_batch_size = max_batch_size
        self._on_batch = on_batch
        # Forwards predicted at most this long run on the loop's thread when nothing else
        # is queued or running: the hand-off to the executor thread and back costs more
        # than they do, and the loop has nothing else to do meanwhile.
        self.inline_s = inline_s
        self.queues: dict[LevelKey, deque[Pending]] = {}
        self.queued_examples: dict[LevelKey, int] = {}
        self.busy_until = 0.0  # predicted end of the forward running now
        self._running: asyncio.Future[tuple[np.ndarray, float]] | None = None
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    # -- queue state ------------------------------------------------------------------
    def depth(self, key: LevelKey) -> int:
        return len(self.queues.get(key, ()))

    def busy_remaining_s(self) -> float:
        return max(0.0, self.busy_until - self.clock())

    def total_queued(self) -> int:
        return sum(len(q) for q in self.queues.values())

    def put(self, pending: Pending, front: bool = False) -> None:
        queue = self.queues.setdefault(pending.key, deque())
        if front:
            queue.appendleft(pending)
        else:
            queue.append(pending)
        self.queued_examples[pending.key] = (
            self.queued_examples.get(pending.key, 0) + pending.examples
        )
        self._wake.set()

    def _pop(self, key: LevelKey) -> Pending:
        pending = self.queues[key].popleft()
        self.queued_examples[key] -= pending.examples
        return pending

    # -- the loop -----------------------------------------------------------------------
    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="dvn-batcher")

    async def stop(self) -> None:
        """Stop the loop; a forward running now finishes on its thread, and its requests
        get its answer (or its error) when it does."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    def fail_queued(self, error: ServeError) -> int:
        """Fail every queued request with ``error`` (a drain that ran out of time); the
        batch running now is not interrupted. Returns how many were failed."""
        failed = 0
        for key, queue in self.queues.items():
            while queue:
                pending = self._pop(key)
                if not pending.future.done():
                    pending.future.set_exception(error)
                    failed += 1
        return failed

    def urgency(self, pending: Pending) -> float:
        """When ``pending`` must start: its deadline, or, without a budget,
        ``NO_BUDGET_YIELD_S`` after it was queued (it yields to budgeted requests that long,
        no longer: nothing starves)."""
        if pending.deadline is not None:
            return pending.deadline
        return pending.enqueued + NO_BUDGET_YIELD_S

    def _most_urgent(self) -> LevelKey | None:
        """The queue to serve next: earliest deadline first, over the requests a batch of
        each queue would take."""
        best: tuple[float, LevelKey] | None = None
        for key, queue in self.queues.items():
            if not queue:
                continue
            urgent = min(
                self.urgency(queue[i]) for i in range(min(len(queue), self.max_batch_size))
            )
            if best is None or urgent < best[0]:
                best = (urgent, key)
        return None if best is None else best[1]

    async def _run(self) -> None:
        while True:
            key = self._most_urgent() if self._running is None else None
            if key is None:  # a forward is running, or nothing is queued
                self._wake.clear()
                await self._wake.wait()  # until something is queued or the forward ends
                continue
            batch = self._take(key)
            if batch:
                self._start(key, batch)

    def _take(self, key: LevelKey) -> list[Pending]:
        """Pop up to ``max_batch_size`` examples of whole requests, triaging each."""
        limit = self.max_batch_size
        queue = self.queues[key]
        batch: list[Pending] = []
        size = 0
        now = self.clock()
        while queue:
            head = queue[0]
            if batch and size + head.examples > limit:
                break
            pending = self._pop(key)
            if pending.abandoned or pending.future.done():
                continue
            if self._triage(pending, size + pending.examples, now):
                batch.append(pending)
                size += pending.examples
        return batch

    def _triage(self, pending: Pending, batch_examples: int, now: float) -> bool:
        """Keep ``pending`` in this batch if its deadline allows; otherwise move or fail it.

        Nothing is computed once its deadline has passed, whatever ``on_miss`` says (the
        answer could only arrive late): 504. Before that, a request its level is predicted
        to answer too late fails with 504 under ``reject`` and moves to the largest smaller
        level predicted in time (else level 1) under ``degrade``; a pinned level stays."""
        if pending.deadline is None:
            return True
        if now >= pending.deadline:
            late_ms = (now - pending.deadline) * 1e3
            pending.future.set_exception(
                DeadlineExceeded(
                    f"the latency budget of this task {pending.task!r} request ran out "
                    f"{late_ms:.1f} ms ago while it was queued; not computed (nothing is "
                    "computed after its deadline): retry with a larger budget, or none"
                )
            )
            return False
        expected = self.profile.forward_s(pending.key, batch_examples)
        if now + expected <= pending.deadline:
            return True
        if pending.on_miss == "reject":
            left_ms = (pending.deadline - now) * 1e3
            pending.future.set_exception(
                DeadlineExceeded(
                    f"the latency budget of this task {pending.task!r} request has "
                    f"{left_ms:.1f} ms left, and level {pending.level} is predicted to take "
                    f"{expected * 1e3:.1f} ms; not computed (on_miss=reject)"
                )
            )
            return False
        if pending.reason == "pinned" or pending.level == 1:
            return True  # degrade with nothing to move to: served, reported missed if late
        target = 1
        for level in range(pending.level - 1, 0, -1):
            if (
                now + self.profile.forward_s((pending.task, level), pending.examples)
                <= pending.deadline
            ):
                target = level
                break
        pending.level, pending.reason = target, "degraded"
        self.put(pending, front=True)
        return False

    def _start(self, key: LevelKey, batch: list[Pending]) -> None:
        """Start ``batch``'s forward now (no loop iteration in between); on an idle server a
        forward predicted within ``inline_s`` runs here, on the loop's thread."""
        inputs = batch[0].inputs if len(batch) == 1 else np.concatenate([p.inputs for p in batch])
        started = self.clock()
        expected = self.profile.forward_s(key, int(inputs.shape[0]))
        idle = not self.total_queued() and self._running is None
        if idle and 0 < expected <= self.inline_s:  # 0: not profiled, cost unknown
            forward: asyncio.Future[tuple[np.ndarray, float]] = (
                asyncio.get_running_loop().create_future()
            )
            try:
                forward.set_result(self.executor.call(batch[0].task_index, key[1], inputs))
            except Exception as e:
                forward.set_exception(e)
            self._finish(key, batch, inputs, started, forward)
            return
        self.busy_until = started + expected
        forward = self.executor.submit(batch[0].task_index, key[1], inputs)
        self._running = forward

        def done(_: asyncio.Future[tuple[np.ndarray, float]]) -> None:
            self._running = None
            self.busy_until = 0.0
            self._finish(key, batch, inputs, started, forward)
            self._wake.set()

        forward.add_done_callback(done)

    def _finish(
        self,
        key: LevelKey,
        batch: list[Pending],
        inputs: np.ndarray,
        started: float,
        forward: asyncio.Future[tuple[np.ndarray, float]],
    ) -> None:
        """Hand each request of ``batch`` its rows of the finished ``forward``, or its error:
        a failing batch fails only its own requests."""
        task, level = key
        n = int(inputs.shape[0])
        try:
            if forward.cancelled():
                raise RuntimeError("the forward was cancelled (the server is stopping)")
            probs, seconds = forward.result()
            if probs.shape[0] != n:
                raise RuntimeError(f"forward returned {probs.shape[0]} rows for {n} examples")
        except Exception as e:
            self._on_batch(BatchEvent(task, level, n, self.clock() - started, failed=True))
            error = (
                e
                if isinstance(e, ServeError)
                else InferenceFailed(
                    f"the batch of {n} examples this request was in failed at task {task!r} level "
                    f"{level} ({type(e).__name__}: {e}); other batches are unaffected, retry it"
                )
            )
            for p in batch:
                if not p.future.done():
                    p.future.set_exception(error)
            return
        self.profile.record(key, n, seconds)
        self._on_batch(BatchEvent(task, level, n, seconds, failed=False))
        offset = 0
        for p in batch:
            rows = probs[offset : offset + p.examples]
            offset += p.examples
            if not p.future.done():
                p.future.set_result(
                    BatchResult(
                        probabilities=rows,
                        level=level,
                        reason=p.reason,
                        queue_wait_s=started - p.enqueued,
                        compute_s=seconds,
                        batch_examples=n,
                    )
                )
