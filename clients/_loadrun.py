"""One load test in progress (``clients.loadtest``): what it sends, learnt from the server
(:func:`discover`), and the request loops that send it and record every outcome
(:class:`Run`: open or closed loop, and the progress line).
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import sys
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

import httpx
import numpy as np

from clients import _protocol as protocol
from clients._report import Outcome, Recorder
from clients._workload import Mix, budget_param, input_pool, parse_mix
from clients.errors import DVNError

if TYPE_CHECKING:
    from clients.loadtest import LoadTestConfig

PROGRESS_INTERVAL_S = 0.5


@dataclass(frozen=True)
class Workload:
    """What a load test sends: its task and budget mixes, an input pool per task, and the
    query of each budget-mix item."""

    tasks: Mix
    budgets: Mix
    pools: dict[str, list[bytes]]
    params: dict[str, dict[str, str]]  # budget-mix item -> query parameters


async def discover(http: httpx.AsyncClient, config: LoadTestConfig) -> Workload:
    """Learn the tasks and shapes from ``/v1/models``, build the input pools, and check
    every budget against the server's own grammar with a dry-run ``/plan``."""
    models = protocol.parse_models(await http.request(**protocol.models_call().request_kwargs()))
    names = [t.name for t in models.tasks]
    tasks = (
        Mix.uniform(names)
        if config.task_mix is None
        else parse_mix(config.task_mix, what="task mix")
    )
    unknown = [t for t in tasks.items if t not in names]
    if unknown:
        raise ValueError(
            f"task mix names {', '.join(unknown)}, which the server does not serve; "
            f"it has {', '.join(names)}"
        )
    rng = np.random.default_rng(config.seed)
    pools = {t: input_pool(models.task(t).input_shape, config.pool_size, rng) for t in tasks.items}
    budgets = config.budgets()
    params: dict[str, dict[str, str]] = {}
    for item in budgets.items:
        budget = budget_param(item)
        if budget is not None:
            response = await http.request(
                **protocol.plan_call(tasks.items[0], budget).request_kwargs()
            )
            if response.status_code == 422:
                error = protocol.error_from_response(response)
                if error.type == "invalid_budget":
                    raise ValueError(f"budget mix item {item!r}: {error.message}")
        query = {"budget": budget, "level": config.level, "on_miss": config.on_miss}
        params[item] = {k: str(v) for k, v in query.items() if v is not None}
    return Workload(tasks, budgets, pools, params)


class Run:
    """One load test in progress: the request loop and the progress line."""

    def __init__(
        self,
        http: httpx.AsyncClient,
        config: LoadTestConfig,
        workload: Workload,
        direct: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.http = http
        self.direct = direct
        self.config = config
        self.workload = workload
        self.rng = random.Random(config.seed)
        self.recorder = Recorder(highest_s=max(1.0, config.timeout * 1.5))
        self.t0 = time.perf_counter()
        self.measure_from = self.t0 + config.warmup
        self.end = self.measure_from + config.duration
        self.capped_at: float | None = None  # when max_requests were sent
        self._requests: dict[tuple[str, str, int], httpx.Request] = {}

    def _capped(self, now: float) -> bool:
        """Whether ``max_requests`` measured requests were sent (noting when, once)."""
        cap = self.config.max_requests
        if cap is None or now < self.measure_from or self.recorder.sent < cap:
            return False
        if self.capped_at is None:
            self.capped_at = now
        return True

    def window_s(self) -> float:
        """Seconds of the measured window: the duration, or less when capped."""
        if self.capped_at is None:
            return self.config.duration
        return max(self.capped_at - self.measure_from, 1e-9)

    def _pick(self) -> tuple[str, str, int]:
        task = self.workload.tasks.choose(self.rng)
        budget = self.workload.budgets.choose(self.rng)
        return task, budget, self.rng.randrange(len(self.workload.pools[task]))

    def _built(self, task: str, budget: str, example: int) -> httpx.Request:
        """The request for (task, budget item, pool example), built once and sent as often
        as it is picked: building one (URL merging and parsing, headers) is about a third
        of the generator's CPU per request, and there are only tasks x budgets x pool size
        different ones."""
        key = (task, budget, example)
        request = self._requests.get(key)
        if request is None:
            body = self.workload.pools[task][example]
            call = protocol.npy_infer_call(task, body, self.workload.params[budget])
            request = self._requests[key] = self.http.build_request(**call.request_kwargs())
        return request

    async def _send(self, request: httpx.Request) -> httpx.Response:
        """The answer to ``request``. With a transport chosen here (the light one, or one
        the config injects) the client is skipped: what it adds per request (cookie
        extraction through urllib's adapters, auth and redirect wrappers, stream
        bookkeeping) is a third of the generator's remaining CPU, and an infer call uses
        none of it (no cookies, no redirects, the API key is a header of the built
        request)."""
        if self.direct is None:
            return await self.http.send(request)
        response = await self.direct.handle_async_request(request)
        response.request = request
        await response.aread()
        return response

    async def _request(self, task: str, budget: str, example: int, start: float) -> float | None:
        """Send one request whose clock started at ``start`` and record how it ended; return
        the Retry-After of a 429 or 503 answer (seconds), else ``None``."""
        measured = start >= self.measure_from
        level: int | None = None
        met: bool | None = None
        error_type: str | None = None
        retry_after: float | None = None
        status: int | None = None
        kind: Literal["ok", "error", "timeout"] = "ok"
        try:
            async with asyncio.timeout(self.config.timeout):
                response = await self._send(self._built(task, budget, example))
            status = response.status_code
            result = protocol.parse_infer(response)
            level, met = result.level, result.budget_met
        except (TimeoutError, httpx.TimeoutException):
            kind, error_type = "timeout", "timeout"
        except httpx.TransportError:
            kind, error_type = "error", "connection"
        except DVNError as e:
            kind, error_type, status = "error", e.type or f"http_{e.status}", e.status
            if e.status in (429, 503):
                retry_after = e.retry_after
        except Exception as e:  # every sent request must end in an outcome
            kind, error_type = "error", f"client_{type(e).__name__}"
        latency = time.perf_counter() - start
        outcome = Outcome(
            task, budget, start - self.measure_from, latency, kind, level, met, error_type, status
        )
        self.recorder.on_done(outcome, measured)
        return retry_after

    async def open_loop(self) -> None:
        inflight: set[asyncio.Task[float | None]] = set()
        arrival = self.t0
        while True:
            arrival += self.rng.expovariate(self.config.rate)
            if arrival >= self.end or self._capped(arrival):
                break
            task, budget, example = self._pick()
            delay = arrival - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            measured = arrival >= self.measure_from
            if len(inflight) >= self.config.max_outstanding:
                self.recorder.on_not_sent(measured)
                continue
            self.recorder.on_sent(measured)
            request = asyncio.create_task(self._request(task, budget, example, arrival))
            inflight.add(request)
            request.add_done_callback(inflight.discard)
        await asyncio.gather(*inflight)

    async def closed_loop(self) -> None:
        async def worker() -> None:
            while (start := time.perf_counter()) < self.end and not self._capped(start):
                task, budget, example = self._pick()
                measured = start >= self.measure_from
                self.recorder.on_sent(measured)
                wait = await self._request(task, budget, example, start)
                pause = 0.0
                if wait is not None and self.config.respect_retry_after:
                    self.recorder.on_retry_wait(wait, measured)
                    # Never past the run's end: that would only delay the report.
                    pause = max(0.0, min(wait, self.end - time.perf_counter()))
                # Sleep even for 0 s: against an in-process app an instant answer (a 429)
                # never suspends, and the workers would starve the server's own tasks.
                await asyncio.sleep(pause)

        await asyncio.gather(*(worker() for _ in range(self.config.concurrency)))

    async def progress(self) -> None:
        """Rewrite one status line on stderr about twice a second."""
        stream = sys.stderr
        tty = stream.isatty()
        last_t, last_sent, ticks = self.t0, 0, 0
        while True:
            await asyncio.sleep(PROGRESS_INTERVAL_S)
            now, rec = time.perf_counter(), self.recorder
            rate = (rec.live_sent - last_sent) / max(now - last_t, 1e-9)
            last_t, last_sent, ticks = now, rec.live_sent, ticks + 1
            p50 = rec.window_p50_ms()
            phase = "warm-up " if now < self.measure_from else ""
            line = (
                f"[{phase}{now - self.t0:6.1f}s] sent {rec.live_sent}  ok {rec.live_ok}  "
                f"errors {rec.live_failed}  rate {rate:7.1f}/s  "
                f"p50 {'-' if p50 is None else f'{p50:.2f}ms'}"
            )
            if tty:
                stream.write("\r\x1b[2K" + line)
                stream.flush()
            elif ticks % 10 == 0:
                print(line, file=stream, flush=True)

    async def run(self) -> None:
        ticker = asyncio.create_task(self.progress()) if self.config.progress else None
        try:
            await (self.open_loop() if self.config.mode == "open" else self.closed_loop())
        finally:
            if ticker is not None:
                ticker.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await ticker
                if sys.stderr.isatty():
                    sys.stderr.write("\n")
