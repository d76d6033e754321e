"""The executor: the thread that runs forwards, one at a time, so that batches do not
compete for the device, and the start-up latency profile measured on it."""

from __future__ import annotations

import asyncio
import statistics
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch

from model_store.model import DVN
from server.engine.plans import PlanCache
from server.engine.profile import LatencyProfile

# (task index, level, inputs (B, C, H, W)) -> probabilities (B, classes)
ForwardFn = Callable[[int, int, np.ndarray], np.ndarray]


class NonFiniteOutput(RuntimeError):
    """The model produced NaN or Inf for a batch."""


def model_forward(model: DVN, device: torch.device, *, plan_bytes: int | None = None) -> ForwardFn:
    """The forward the executor runs: one level on one batch, softmax on the device.

    With ``plan_bytes`` > 0 the hottest (task, level)s run through their
    :class:`~model_store.inference.LevelPlan` (weight slices copied out once, batch norm
    folded into the convolutions), built from the model's weights the first time that level
    runs, as many as fit in ``plan_bytes`` (:class:`~server.engine.plans.PlanCache`); the
    rest, and every level with ``plan_bytes`` 0 or None, run on the one set of weights
    (``model(x, task, level)``). The server never changes the weights, so a plan never goes
    stale. Inputs are checked by the decoder, not again here.
    """
    cache = PlanCache(model, plan_bytes) if plan_bytes else None

    def run(x: torch.Tensor, task: int, level: int) -> torch.Tensor:
        if cache is None:
            out: torch.Tensor = model(x, task, level)
            return out
        return cache.forward(task, level)(x)

    def forward(task: int, level: int, inputs: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            x = torch.from_numpy(inputs)
            if x.device != device:
                x = x.to(device, non_blocking=True)
            probs = torch.softmax(run(x, task, level).float(), dim=1)
            out: np.ndarray = probs.cpu().numpy()  # waits for the forward's kernels
        return out

    return forward


class Executor:
    """Runs forwards on one worker thread (``dvn-executor``)."""

    def __init__(self, forward: ForwardFn) -> None:
        self.forward = forward
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="dvn-executor")

    def submit(
        self, task: int, level: int, inputs: np.ndarray
    ) -> asyncio.Future[tuple[np.ndarray, float]]:
        """Start the forward of ``inputs`` on the executor's thread now; the future gives
        the probabilities and the forward's wall time in seconds. The caller runs one
        forward at a time."""
        loop = asyncio.get_running_loop()
        return loop.run_in_executor(self._pool, self._timed, task, level, inputs)

    def call(self, task: int, level: int, inputs: np.ndarray) -> tuple[np.ndarray, float]:
        """The same, computed on the calling (event loop's) thread, which it blocks
        meanwhile: for a forward shorter than the hand-off to a thread and back."""
        return self._timed(task, level, inputs)

    def _timed(self, task: int, level: int, inputs: np.ndarray) -> tuple[np.ndarray, float]:
        start = time.perf_counter()
        out = self.forward(task, level, inputs)
        seconds = time.perf_counter() - start
        # Checked here, not in the forward, so that no forward (a wrapped one included) can
        # hand NaN to a client as an answer.
        if not np.isfinite(out).all():
            raise NonFiniteOutput("the model produced NaN or Inf for this batch")
        return out, seconds

    def profile(
        self,
        levels: list[tuple[str, int, int, tuple[int, int, int]]],
        batch_sizes: list[int],
        iters: int,
        on_progress: Callable[[int, int], None] | None = None,
    ) -> LatencyProfile:
        """Measure every (task, level) at every batch size: one warm-up forward, then the
        median of ``iters``. ``levels`` holds (task name, task index, level, input shape).
        Blocking; run before the server reports ready."""
        profile = LatencyProfile()
        rng = np.random.default_rng(0)
        total, done = len(levels) * len(batch_sizes), 0
        for name, t, level, shape in levels:
            for b in batch_sizes:
                x = rng.standard_normal((b, *shape), dtype=np.float32)
                self.forward(t, level, x)
                times = [self._timed(t, level, x)[1] for _ in range(iters)]
                profile.table.setdefault((name, level), {})[b] = statistics.median(times)
                done += 1
                if on_progress is not None:
                    on_progress(done, total)
        return profile

    def shutdown(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=False)
