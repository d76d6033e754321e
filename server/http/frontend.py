"""What one front end holds: its settings, its engine client, its own HTTP-side metrics,
its in-flight count and drain state. Built by ``create_app``; nothing global."""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry, Histogram, generate_latest
from prometheus_client import multiprocess as prometheus_multiprocess

from model_store.manifest import TaskEntry
from model_store.tasks import TaskSpec
from server.engine.client import EngineClient
from server.errors import NotReady, UnknownTask, shutting_down, too_many_inflight
from server.http.limit import Gradient2
from server.settings import Settings

IPC_BUCKETS = (
    0.00005, 0.0001, 0.0002, 0.0003, 0.0005, 0.00075, 0.001, 0.002, 0.005, 0.01, 0.025, 0.1,
)  # fmt: skip


class FrontEndMetrics:
    """The front ends' own series: ``dvn_ipc_seconds`` (an answer's round trip to the
    engine, less the time the engine held it) and ``dvn_engine_up`` (this front end's view).
    With several front ends (``PROMETHEUS_MULTIPROC_DIR`` set by ``dvn serve``) the
    histogram is summed over all of them at every scrape, whichever one is scraped."""

    def __init__(self) -> None:
        self.multiprocess = bool(os.environ.get("PROMETHEUS_MULTIPROC_DIR"))
        self.registry = CollectorRegistry(auto_describe=True)
        self.ipc = Histogram(
            "dvn_ipc_seconds",
            "Round trip of an answered request between front end and engine, less the "
            "engine's own time.",
            buckets=IPC_BUCKETS,
            registry=None if self.multiprocess else self.registry,
        )

    def text(self, engine_up: bool) -> bytes:
        if self.multiprocess:
            registry = CollectorRegistry()
            prometheus_multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
        else:
            registry = self.registry
        up = (
            "# HELP dvn_engine_up Whether the engine answers this front end (1) or not (0).\n"
            f"# TYPE dvn_engine_up gauge\ndvn_engine_up {int(engine_up)}\n"
        )
        return up.encode() + generate_latest(registry)


@dataclass
class FrontEnd:
    settings: Settings
    client: EngineClient
    metrics: FrontEndMetrics = field(default_factory=FrontEndMetrics)
    inflight: int = 0
    draining: bool = False
    limiter: Gradient2 | None = None

    def __post_init__(self) -> None:
        self.client.observe_ipc = self.metrics.ipc.observe
        if self.settings.concurrency_limit == "gradient2":
            self.limiter = Gradient2(max_limit=self.settings.max_inflight)

    def check_ready(self, probe: bool = False) -> None:
        """Raises the 503 an inference request (``probe``: ``/readyz``) gets now, if any."""
        if self.draining:
            raise shutting_down(probe)
        self.client.status().check(probe)

    def check_inflight(self) -> None:
        limit = self.settings.max_inflight
        if self.inflight >= limit:
            # Before the body is read: a request past the bound costs no memory for it.
            raise too_many_inflight(self.inflight, limit)
        if self.limiter is not None and not self.limiter.allows(self.inflight):
            raise self.limiter.refusal(self.inflight)

    def answered(self, latency_s: float, inflight: int) -> None:
        """An inference request answered (or timed out) after ``latency_s``, with
        ``inflight`` requests in flight when it began: the adaptive limit's sample."""
        if self.limiter is not None:
            self.limiter.sample(latency_s, inflight)

    def task(self, name: str) -> TaskEntry:
        """Raises UnknownTask (404), naming the tasks served; NotReady before the checkpoint's
        manifest is known."""
        if not self.client.loaded():
            raise NotReady("the server is loading the checkpoint; retry shortly", retry_after_s=1)
        for entry in self.client.manifest.tasks:
            if entry.name == name:
                return entry
        valid = ", ".join(t.name for t in self.client.manifest.tasks)
        raise UnknownTask(f"unknown task {name!r}; this server serves: {valid}")

    def spec(self, name: str) -> TaskSpec:
        return self.client.specs[name]
