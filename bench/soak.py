"""A soak: a fixed, large number of requests with mixed tasks and budgets against a real
``dvn serve`` (closed loop), checking that nothing is lost or fails and that memory does not
grow. Reports the load generator's accounting (``sent == ok + errors + timeouts``), every
status the server answered, the server's own request count, and its resident memory sampled
every second (start, end, peak, growth).

    md = run_soak(None, "bench/results", requests=100_000)   # the shipped demo checkpoint
"""

from __future__ import annotations

import sys
import tempfile
import threading
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psutil
from prometheus_client.parser import text_string_to_metric_families

from bench._common import machine_line, write_report
from bench._process import ServerProcess, dvn_serve
from clients._wire import WireTransport
from clients.loadtest import LoadTestConfig, run_loadtest

# Every kind of budget; latency budgets the demo meets on a 2-core CPU at the default
# concurrency, since one that runs out in the queue is a 504 by contract (never computed
# late), and a soak is about losing nothing, not about tight budgets.
DEFAULT_MIX = "none:0.3,2s:0.2,1s:0.2,200KiB:0.2,3s+1MiB:0.1"
MIB = 2**20


class CountingTransport(httpx.AsyncBaseTransport):
    """The load generator's light HTTP transport, counting (status, Retry-After) of every
    ``/infer`` answer."""

    def __init__(self, connections: int) -> None:
        self.inner = WireTransport(max_connections=connections)
        self.seen: Counter[tuple[int, str | None]] = Counter()

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        response = await self.inner.handle_async_request(request)
        if request.url.path.startswith("/infer/"):
            self.seen[(response.status_code, response.headers.get("retry-after"))] += 1
        return response

    async def aclose(self) -> None:
        await self.inner.aclose()

    def statuses(self) -> dict[int, int]:
        found: Counter[int] = Counter()
        for (status, _), n in self.seen.items():
            found[status] += n
        return dict(sorted(found.items()))


def requests_counted(url: str) -> int:
    """``dvn_requests_total`` summed over every series of the server at ``url``."""
    text = httpx.get(url + "/metrics", timeout=30).text
    return round(
        sum(
            s.value
            for family in text_string_to_metric_families(text)
            for s in family.samples
            if s.name == "dvn_requests_total"
        )
    )


class Watcher:
    """Samples the server's resident memory every ``interval`` s in a thread and, with
    ``progress``, writes a progress line on stderr (answered requests from the server's
    ``/metrics``, rate, memory)."""

    def __init__(
        self, server: ServerProcess, total: int, *, interval: float = 1.0, progress: bool = False
    ) -> None:
        self.server = server
        self.process = psutil.Process(server.process.pid)
        self.total = total
        self.interval = interval
        self.progress = progress
        self.t0 = time.perf_counter()
        self.counted_from = requests_counted(server.url) if progress else 0
        self.rss: list[tuple[float, int]] = [(0.0, self.process.memory_info().rss)]
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="soak-watcher", daemon=True)

    def _sample(self) -> None:
        self.rss.append((time.perf_counter() - self.t0, self.process.memory_info().rss))

    def _run(self) -> None:
        tty, ticks = sys.stderr.isatty(), 0
        while not self._stop.wait(self.interval):
            self._sample()
            ticks += 1
            if self.progress and (tty or ticks % 10 == 0):
                self._report(tty)

    def _report(self, tty: bool) -> None:
        """One progress line: in place on a terminal, a line of its own elsewhere."""
        elapsed, rss = self.rss[-1]
        try:
            done = requests_counted(self.server.url) - self.counted_from
        except httpx.HTTPError:
            return
        line = (
            f"[soak {elapsed:6.0f}s] answered {done}/{self.total} "
            f"({done / max(elapsed, 1e-9):.0f}/s)  server RSS {rss / MIB:.1f} MiB "
            f"({(rss - self.rss[0][1]) / MIB:+.1f})"
        )
        sys.stderr.write(("\r\x1b[2K" + line) if tty else line + "\n")
        sys.stderr.flush()

    def __enter__(self) -> Watcher:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(10)
        self._sample()
        if self.progress:
            # the final count, also for a run shorter than one interval
            tty = sys.stderr.isatty()
            self._report(tty)
            if tty:
                sys.stderr.write("\n")


@dataclass
class SoakResult:
    """What a soak measured. ``lost`` is ``sent - (ok + errors + timeouts)``; ``counted``
    is the increase of the server's ``dvn_requests_total`` over the soak."""

    requests: int
    concurrency: int
    budget_mix: str
    sent: int
    ok: int
    errors: int
    timeouts: int
    lost: int
    errors_by_type: dict[str, int]
    levels: dict[str, dict[int, int]]  # task -> level -> requests answered
    statuses: dict[int, int]
    server_errors: int  # answers with a 5xx status
    counted: int
    duration_s: float
    rate: float
    latency_ms: dict[str, float]
    rss_start_mib: float
    rss_end_mib: float
    rss_max_mib: float
    rss_growth_mib: float
    rss_growth_last_90pct_mib: float  # from 10% into the run (allocator warm-up) to its end
    rss_timeline: list[tuple[float, float]] = field(repr=False)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["statuses"] = {str(k): v for k, v in self.statuses.items()}
        return data


def soak(
    server: ServerProcess,
    requests: int,
    *,
    concurrency: int = 32,
    budget_mix: str = DEFAULT_MIX,
    task_mix: str | None = None,
    timeout: float = 30.0,
    max_duration: float = 3600.0,
    progress: bool = False,
    seed: int = 0,
) -> SoakResult:
    """Send ``requests`` requests (closed loop, ``concurrency`` workers, at most
    ``max_duration`` s) to a running server and measure it."""
    transport = CountingTransport(concurrency)
    counted_before = requests_counted(server.url)
    config = LoadTestConfig(
        server.url,
        mode="closed",
        concurrency=concurrency,
        duration=max_duration,
        warmup=0,
        budget_mix=budget_mix,
        task_mix=task_mix,
        timeout=timeout,
        max_requests=requests,
        seed=seed,
        transport=transport,
    )
    with Watcher(server, requests, progress=progress) as watcher:
        report = run_loadtest(config)
    counted = requests_counted(server.url) - counted_before
    rss = [r for _, r in watcher.rss]
    statuses = transport.statuses()
    return SoakResult(
        requests=requests,
        concurrency=concurrency,
        budget_mix=budget_mix,
        sent=report.sent,
        ok=report.ok,
        errors=report.errors,
        timeouts=report.timeouts,
        lost=report.sent - (report.ok + report.errors + report.timeouts),
        errors_by_type=report.errors_by_type,
        levels=report.levels,
        statuses=statuses,
        server_errors=sum(n for status, n in statuses.items() if status >= 500),
        counted=counted,
        duration_s=round(report.duration_s, 2),
        rate=round(report.achieved_rate, 1),
        latency_ms=report.latency_ms,
        rss_start_mib=round(rss[0] / MIB, 1),
        rss_end_mib=round(rss[-1] / MIB, 1),
        rss_max_mib=round(max(rss) / MIB, 1),
        rss_growth_mib=round((rss[-1] - rss[0]) / MIB, 1),
        rss_growth_last_90pct_mib=round((rss[-1] - rss[len(rss) // 10]) / MIB, 1),
        rss_timeline=[(round(t, 1), round(r / MIB, 1)) for t, r in watcher.rss],
    )


def run_soak(
    checkpoint: str | Path | None,
    out: str | Path,
    *,
    requests: int = 100_000,
    concurrency: int = 32,
    budget_mix: str = DEFAULT_MIX,
    task_mix: str | None = None,
    max_duration: float = 3600.0,
    progress: bool = True,
    env: dict[str, str] | None = None,
) -> Path:
    """Start ``dvn serve`` on ``checkpoint`` (the shipped demo when ``None``), soak it, and
    write ``soak.json`` and ``soak.md`` under ``out``; return the .md path."""
    from server.settings import demo_checkpoint

    path = Path(checkpoint or demo_checkpoint())
    with tempfile.TemporaryDirectory() as tmp, dvn_serve(
        path, Path(tmp) / "serve.log", env=env
    ) as server:  # fmt: skip
        result = soak(
            server, requests, concurrency=concurrency, budget_mix=budget_mix,
            task_mix=task_mix, max_duration=max_duration, progress=progress,
        )  # fmt: skip
    data = {"checkpoint": str(path), **result.to_dict()}
    return write_report(out, "soak", data, _markdown(result, path))


def _markdown(r: SoakResult, checkpoint: Path) -> str:
    verdict = (
        "nothing lost, no 5xx, every request counted by the server"
        if r.lost == 0 and r.timeouts == 0 and r.server_errors == 0 and r.counted == r.sent
        else "**FAILED**: see the rows below"
    )
    lat = r.latency_ms
    rows = [
        ("requests sent", f"{r.sent:,} of {r.requests:,}"),
        ("ok / errors / timeouts", f"{r.ok:,} / {r.errors:,} / {r.timeouts:,}"),
        ("lost (sent - ok - errors - timeouts)", f"{r.lost}"),
        ("statuses", ", ".join(f"{s}: {n:,}" for s, n in r.statuses.items())),
        ("5xx answers", f"{r.server_errors}"),
        ("errors by type", ", ".join(f"{k}: {v}" for k, v in r.errors_by_type.items()) or "-"),
        ("answered per task and level", "; ".join(f"{t}: " + ", ".join(f"L{lv} {n:,}" for lv, n in per.items()) for t, per in r.levels.items())),
        ("server's dvn_requests_total increase", f"{r.counted:,}"),
        ("duration", f"{r.duration_s:.1f} s ({r.rate:.1f} requests/s answered)"),
        ("latency p50 / p99 / max", f"{lat.get('p50')} / {lat.get('p99')} / {lat.get('max')} ms"),
        ("server RSS start / end / peak", f"{r.rss_start_mib} / {r.rss_end_mib} / {r.rss_max_mib} MiB"),
        ("server RSS growth", f"{r.rss_growth_mib:+.1f} MiB"),
        ("server RSS growth over the last 90%", f"{r.rss_growth_last_90pct_mib:+.1f} MiB"),
    ]  # fmt: skip
    lines = [
        "## Soak",
        "",
        f"{machine_line()} Checkpoint `{checkpoint.name}`, a real `dvn serve` on loopback, "
        f"closed loop with {r.concurrency} workers, budget mix `{r.budget_mix}`, every task. "
        f"Verdict: {verdict}.",
        "",
        "| measure | value |",
        "|---|---|",
        *(f"| {name} | {value} |" for name, value in rows),
    ]
    return "\n".join(lines) + "\n"
