"""The load generator behind ``dvn loadtest``: open-loop (Poisson arrivals) or closed-loop
(N workers) traffic with a mix of tasks and budgets, measured into a :class:`LoadReport`.

    report = run_loadtest(LoadTestConfig("http://127.0.0.1:8000", rate=100, duration=10,
                                         budget_mix="5ms:0.5,20ms:0.3,1MiB:0.2"))
    print(report.format_text())

Open loop: arrival times come from a Poisson process at ``rate``; each request is sent at
its arrival time however slow the responses are, and its latency is measured from that
arrival time (no coordinated omission); arrivals finding
``max_outstanding`` requests in flight are dropped and counted as ``not_sent``. Closed
loop: ``concurrency`` workers each send a request, wait for it, and send the next; with
``respect_retry_after`` a worker refused with 429 or 503 and a ``Retry-After`` waits that
long first (as a well-behaved client does; off by default, since not every client behaves).
``max_requests`` ends the measured window early, once that many requests were sent in it
(a soak of a fixed size); rates are then per second of the window it took.

HTTP: ``http_client="wire"`` (the default) sends ``http://`` requests through the light
transport of ``clients/_wire.py`` (httptools parses the responses), which costs a fraction of
a millisecond of CPU a request where httpx's own transport costs several under many clients
(docs/benchmarks.md); ``"httpx"`` uses httpx's own, and ``https://`` URLs always do. An
injected ``transport`` overrides both. The light transport connects to the URL itself
(``HTTP_PROXY`` and the like are not used: use ``httpx`` to load a server through a proxy).

This module is the configuration and the entry points; ``clients._loadrun`` sends and
records, ``clients._report`` makes the report.
"""

from __future__ import annotations

import asyncio
import math
from dataclasses import dataclass, field
from typing import Any, Literal

import httpx

from clients import _protocol as protocol
from clients._loadrun import Run, Workload, discover
from clients._report import LoadReport
from clients._wire import WireTransport
from clients._workload import Mix, parse_mix

Mode = Literal["open", "closed"]
HttpClient = Literal["wire", "httpx"]


@dataclass(frozen=True)
class LoadTestConfig:
    """What to send, how fast, for how long. Mixes use ``parse_mix`` syntax
    (``"5ms:0.5,20ms:0.3,1MiB:0.2"``, ``none`` for no budget); ``budget_mix=None`` sends
    no budget, ``task_mix=None`` every task of ``GET /v1/models`` with equal weights.

    Raises:
        ValueError: a setting out of range or a mix that does not parse.
    """

    url: str
    mode: Mode = "open"
    rate: float = 50.0
    concurrency: int = 8
    duration: float = 10.0
    warmup: float = 2.0
    budget_mix: str | None = None
    task_mix: str | None = None
    level: int | None = None
    on_miss: protocol.OnMiss | None = None
    seed: int = 0
    timeout: float = 10.0
    max_outstanding: int = 256
    api_key: str | None = None
    pool_size: int = 16
    max_requests: int | None = None
    progress: bool = False
    respect_retry_after: bool = False
    http_client: HttpClient = "wire"
    transport: httpx.AsyncBaseTransport | None = field(default=None, repr=False, compare=False)

    def __post_init__(self) -> None:
        checks = [
            (self.mode in ("open", "closed"), f"mode must be open or closed, got {self.mode!r}"),
            (self.rate > 0 and math.isfinite(self.rate), f"rate must be > 0, got {self.rate}"),
            (self.concurrency >= 1, f"concurrency must be >= 1, got {self.concurrency}"),
            (self.duration > 0, f"duration must be > 0 s, got {self.duration}"),
            (self.warmup >= 0, f"warmup must be >= 0 s, got {self.warmup}"),
            (self.timeout > 0, f"timeout must be > 0 s, got {self.timeout}"),
            (
                self.max_outstanding >= 1,
                f"max_outstanding must be >= 1, got {self.max_outstanding}",
            ),
            (self.pool_size >= 1, f"pool_size must be >= 1, got {self.pool_size}"),
            (
                self.http_client in ("wire", "httpx"),
                f"http_client must be wire or httpx, got {self.http_client!r}",
            ),
            (
                self.max_requests is None or self.max_requests >= 1,
                f"max_requests must be >= 1, got {self.max_requests}",
            ),
            (
                not self.respect_retry_after or self.mode == "closed",
                "respect_retry_after needs the closed loop (mode='closed', --mode closed): "
                "open-loop arrivals do not wait for answers",
            ),
        ]
        for ok, message in checks:
            if not ok:
                raise ValueError(message)
        self.budgets()
        if self.task_mix is not None:
            parse_mix(self.task_mix, what="task mix")

    def connections(self) -> int:
        """Connections to open at most: one per request that may be in flight."""
        return self.max_outstanding if self.mode == "open" else self.concurrency

    def make_transport(self) -> httpx.AsyncBaseTransport | None:
        """The injected transport, else the light one for an ``http://`` URL when
        ``http_client`` is ``wire``; ``None`` means httpx's own."""
        if self.transport is not None:
            return self.transport
        if self.http_client == "wire" and httpx.URL(self.url).scheme == "http":
            return WireTransport(max_connections=self.connections())
        return None

    def budgets(self) -> Mix:
        """The budget mix (``none`` alone when no budget mix is given)."""
        if self.budget_mix is None:
            return Mix.uniform(["none"])
        return parse_mix(self.budget_mix, what="budget mix")


def _describe(config: LoadTestConfig, workload: Workload) -> dict[str, Any]:
    described: dict[str, Any] = {"url": config.url, "mode": config.mode}
    if config.mode == "open":
        described |= {"rate": config.rate, "max_outstanding": config.max_outstanding}
    else:
        described["concurrency"] = config.concurrency
        described["respect_retry_after"] = config.respect_retry_after
    if config.max_requests is not None:
        described["max_requests"] = config.max_requests
    return described | {
        "duration_s": config.duration,
        "warmup_s": config.warmup,
        "budget_mix": str(workload.budgets),
        "task_mix": str(workload.tasks),
        "level": config.level,
        "on_miss": config.on_miss,
        "seed": config.seed,
        "timeout_s": config.timeout,
    }


async def arun_loadtest(config: LoadTestConfig) -> LoadReport:
    """Run the load test ``config`` describes and return its report.

    Raises:
        ValueError: a task mix naming a task the server lacks, a budget the server's
            grammar refuses. DVNError: ``GET /v1/models`` failed (server down, auth).
    """
    connections = config.connections()
    transport = config.make_transport()
    async with httpx.AsyncClient(
        base_url=config.url,
        headers=protocol.client_headers(config.api_key),
        timeout=config.timeout,
        transport=transport,
        limits=httpx.Limits(max_connections=connections, max_keepalive_connections=connections),
    ) as http:
        try:
            workload = await discover(http, config)
        except httpx.TransportError as e:
            raise protocol.transport_error(e, protocol.models_call(), http.base_url) from e
        run = Run(http, config, workload, direct=transport)
        await run.run()
    return run.recorder.report(
        _describe(config, workload),
        run.window_s(),
        respect_retry_after=config.respect_retry_after,
    )


def run_loadtest(config: LoadTestConfig) -> LoadReport:
    """:func:`arun_loadtest` in a fresh event loop (not from inside a running loop).

    Raises:
        As :func:`arun_loadtest`.
    """
    return asyncio.run(arun_loadtest(config))
