"""What one engine holds while it runs: settings, metrics, the loaded checkpoint and the
engine once warmed up; its start (load, warm-up) and its drain. Nothing global."""

from __future__ import annotations

import asyncio
import ctypes
import functools
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

from model_store.checkpoint import Checkpoint, load
from server.engine.core import Engine
from server.engine.executor import Executor, ForwardFn, model_forward
from server.engine.pending import Clock
from server.engine.profile import LatencyProfile, profile_batch_sizes
from server.errors import NotReady
from server.logs import SERVER
from server.metrics import Metrics
from server.settings import Settings
from server.shutdown import FINAL_GRACE_S

ForwardWrapper = Callable[[ForwardFn], ForwardFn]


def pick_device(name: str) -> torch.device:
    """``auto``: CUDA when present, else CPU."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def release_freed_heap() -> bool:
    """Hand the heap freed so far back to the OS (glibc's ``malloc_trim``): warm-up, timing
    each convolution's two kernels at batch sizes up to 64, frees memory that glibc would
    otherwise keep resident for good (docs/decisions.md has the figure). False where the C
    library has none (not glibc)."""
    try:
        trim = ctypes.CDLL(None).malloc_trim
    except (OSError, AttributeError):
        return False
    trim(0)
    return True


@dataclass
class Runtime:
    settings: Settings
    metrics: Metrics = field(default_factory=Metrics)
    checkpoint: Checkpoint | None = None
    forward_wrapper: ForwardWrapper | None = None
    service: Engine | None = None
    ready: bool = False
    warmup: asyncio.Task[None] | None = None
    failed: str | None = None  # why warm-up failed; the server then never turns ready
    started: float = field(default_factory=time.time)  # tells a restarted engine apart
    clock: Clock = time.perf_counter  # the engine's (tests drive one instead of sleeping)

    async def start(self) -> None:
        """Load the checkpoint (unless given), build the service, start warm-up."""
        s = self.settings
        device = pick_device(s.device)
        threads = s.torch_threads or default_torch_threads(device)
        if threads is not None:
            torch.set_num_threads(threads)
        if self.checkpoint is None:
            self.checkpoint = await asyncio.to_thread(load, s.checkpoint, device)
        else:
            self.checkpoint.model.to(device).eval()
        weights = sum(
            t.numel() * t.element_size() for t in self.checkpoint.model.state_dict().values()
        )
        plan_bytes = (weights if s.plan_bytes is None else s.plan_bytes) if s.level_plans else 0
        forward = model_forward(self.checkpoint.model, device, plan_bytes=plan_bytes)
        if self.forward_wrapper is not None:
            forward = self.forward_wrapper(forward)
        executor = Executor(forward)
        self.service = Engine(
            self.checkpoint, s, executor, LatencyProfile(), self.metrics, clock=self.clock
        )
        m = self.checkpoint.manifest
        self.metrics.describe_model(
            name=m.name,
            version=m.version,
            sha256=m.weights_sha256,
            device=str(device),
            param_bytes=self.service.param_bytes,
            unit_bytes=self.service.unit_bytes,
            levels=[(t.name, lv.level) for t in m.tasks for lv in t.levels],
            queue_capacity=s.max_queue_size,
        )
        self.service.batcher.start()
        self.warmup = asyncio.create_task(self._warm_up(), name="dvn-warmup")

    async def _warm_up(self) -> None:
        assert self.service is not None and self.checkpoint is not None
        service, started = self.service, time.perf_counter()
        levels = [
            (t.name, i, lv.level, spec.input_shape)
            for i, (t, spec) in enumerate(
                zip(self.checkpoint.manifest.tasks, self.checkpoint.model.config.tasks, strict=True)
            )
            for lv in t.levels
        ]
        sizes = profile_batch_sizes(self.settings.max_batch_size)
        SERVER.info(
            "warming up",
            extra={
                "fields": {"levels": len(levels), "batch_sizes": sizes, "device": service.device}
            },
        )

        def progress(done: int, total: int) -> None:
            if done == total or done % max(1, total // 4) == 0:
                SERVER.info("warm-up progress", extra={"fields": {"done": done, "total": total}})

        try:
            profile = await asyncio.to_thread(
                service.executor.profile, levels, sizes, self.settings.profile_iters, progress
            )
        except Exception as e:  # else it dies unseen in a task and /readyz says "warming up"
            self.failed = f"{type(e).__name__}: {e}"
            SERVER.exception("warm-up failed: the server will not turn ready")
            return
        service.profile.table.update(profile.table)
        service.pace.startup = LatencyProfile(table=profile.snapshot())
        await asyncio.to_thread(release_freed_heap)
        for task, level in profile.table:
            service.metrics.watch_predicted(
                task=task,
                level=level,
                predict=functools.partial(service.forecast.predicted_s, task, level),
            )
        for entry in service.tasks.values():
            service.metrics.watch_selection(
                task=entry.name,
                levels=[lv.level for lv in entry.levels],
                ceiling=functools.partial(service.forecast.ceiling, entry),
                error=functools.partial(service.forecast.error_quantile, entry.name),
            )
        self.ready = True
        SERVER.info(
            "ready", extra={"fields": {"warmup_s": round(time.perf_counter() - started, 2)}}
        )

    async def drain(self) -> None:
        """Refuse new work and answer what was accepted, for at most ``drain_timeout_s``;
        past it, answer every request still queued with 503 (retry elsewhere) rather than
        drop its connection, and give the batch running then ``FINAL_GRACE_S``. Idempotent:
        a second call finds nothing in flight."""
        self.ready = False
        service = self.service
        if service is None:
            return
        service.draining = True
        timeout = self.settings.drain_timeout_s
        if await service.wait_idle(timeout):
            return
        failed = service.batcher.fail_queued(
            NotReady(
                f"the server shut down before this request was computed (drain timeout "
                f"DVN_DRAIN_TIMEOUT_S={timeout:g} s); retry on another replica",
                retry_after_s=1,
            )
        )
        SERVER.warning(
            "drain timed out", extra={"fields": {"inflight": service.inflight, "refused": failed}}
        )
        await service.wait_idle(FINAL_GRACE_S)

    async def stop(self) -> None:
        """Drain (see :meth:`drain`), then stop the batcher and the executor."""
        if self.warmup is not None and not self.warmup.done():
            self.warmup.cancel()
        if self.service is None:
            return
        await self.drain()
        await self.service.batcher.stop()
        self.service.executor.shutdown()


def _cores() -> int:
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return cores or 1


def default_frontends(device: torch.device) -> int:
    """Front ends when ``--workers`` is not given: on a GPU, one for every core but one (the
    engine's); on a CPU, half the cores (the engine computes on the rest), at least one."""
    if device.type == "cuda":
        return max(1, _cores() - 1)
    return max(1, _cores() // 2)


def default_torch_threads(device: torch.device, frontends: int = 1) -> int | None:
    """The engine's intra-op threads when ``DVN_TORCH_THREADS`` is not set: on a CPU, the
    cores its ``frontends`` HTTP front ends leave, at least one (``dvn serve`` passes its
    ``--workers``; an engine in the front end's own process, ``--workers 0``, counts that
    one; so does a Ray replica, beside its HTTP proxy); the A/B is in docs/decisions.md.
    Elsewhere torch's default (``None``)."""
    if device.type != "cpu":
        return None
    return max(1, _cores() - max(1, frontends))


def engine_status(runtime: Runtime) -> dict[str, Any]:
    """What a front end needs to know of the engine: ready, why not, and who it is."""
    service = runtime.service
    return {
        "ready": runtime.ready and service is not None and not service.draining,
        "loaded": service is not None,
        "draining": service is not None and service.draining,
        "failed": runtime.failed,
        "pid": os.getpid(),
        "admissions": {}
        if service is None or not runtime.ready
        else {task: [a.wait_s, a.floor_s] for task, a in service.admissions().items()},
        "started": runtime.started,
    }
