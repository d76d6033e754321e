"""Scale-out on Ray Serve (issue 15), in one Ray session on this machine:

1. **Ray path overhead**: ``dvn serve`` direct against the Ray application with one replica,
   one closed-loop client each, the same task and pinned level, no budget; the two take
   turns (``latency_rounds``), each turn ``duration / 2`` seconds; p50/p99 over the turns.
2. **Replicas**: the same closed loop (``clients`` workers, the task and budget mixes, the
   server choosing the level) against 1 and 2 replicas (``replicas``), budget-aware router.
3. **Routers**: with the most replicas, ``BudgetRouter`` against Ray's default power of two
   choices (``RayOptions(router="pow2")``), open loop on the same Poisson arrivals (same
   seed; ``skew_rate``, or ``skew_load`` times the answers/s of step 2), balanced and skewed:
   skewed, the first replica to start sleeps ``slow_ms`` in every forward (a slower device
   or a noisy neighbour; the sleep takes no CPU). Goodput, met/ok, p99 and the share of the
   requests each router sent the slow replica (``dvn_requests_total`` by ``replica``, warm-up
   included). :func:`verdict` calls a difference of goodput or p99 within ``MARGIN`` none.

Each application is deployed fresh on its own route (the previous one deleted while it
starts); the load generator is ``clients.loadtest``. On a few cores the load generator, Ray's proxy and the ingress share
the CPUs with the replicas: read the figures with the steal and the machine line.

    md = run_scale(None, "bench/results")   # the shipped demo checkpoint
"""

from __future__ import annotations

import contextlib
import logging
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import httpx
import numpy as np

from bench._common import cpu_times, steal_share, write_report
from bench._process import dvn_serve, free_port
from bench._scale_report import markdown, pct, plot
from bench.peers import fmt, progress
from clients._report import LoadReport
from clients.loadtest import LoadTestConfig, run_loadtest
from server.engine.executor import ForwardFn
from server.settings import Settings

APP_READY_TIMEOUT_S = 300.0
MARGIN = 0.05  # verdict: a relative difference within it is none


@dataclass(frozen=True)
class ScaleOptions:
    """What to measure and how long (see the module docstring).

    Raises:
        ValueError: a duration, count or load out of range.
    """

    task: str = "digits"  # the latency comparison's task
    level: int | None = None  # its pinned level; None: the task's top level
    task_mix: str | None = None  # steps 2 and 3; None: every task
    budget_mix: str = "10ms:1,25ms:1,50ms:1,100ms:1"
    clients: int = 8
    replicas: tuple[int, ...] = (1, 2)
    duration: float = 10.0
    warmup: float = 2.0
    latency_rounds: int = 2
    slow_ms: float = 20.0
    skew_load: float = 0.5
    skew_rate: float | None = None
    profile_iters: int = 3
    timeout: float = 10.0
    progress: bool = True

    def __post_init__(self) -> None:
        checks = [
            (self.duration > 0 and self.warmup >= 0, f"duration must be > 0 s and warmup >= 0 s, got {self.duration}, {self.warmup}"),
            (self.clients >= 1 and self.latency_rounds >= 1, "clients and latency rounds must be >= 1"),
            (bool(self.replicas) and min(self.replicas) >= 1, f"replicas must be >= 1, got {self.replicas}"),
            (self.slow_ms >= 0 and self.skew_load > 0, "slow_ms must be >= 0 and skew_load > 0"),
            (self.skew_rate is None or self.skew_rate > 0, f"skew rate must be > 0, got {self.skew_rate}"),
        ]  # fmt: skip
        for ok, message in checks:
            if not ok:
                raise ValueError(message)


@dataclass(frozen=True)
class SlowReplica:
    """Forward wrapper (pickled to the replicas): the first replica to claim
    ``directory/slow`` (writing its Ray replica id there) sleeps ``slow_s`` in every forward
    while ``directory/on`` exists; the others, and it otherwise, only test for the file."""

    directory: str
    slow_s: float

    def __call__(self, forward: ForwardFn) -> ForwardFn:
        from server.ray.replica import replica_name

        root = Path(self.directory)
        try:
            with (root / "slow").open("x") as f:
                f.write(replica_name())
        except FileExistsError:
            return forward
        on, slow_s = root / "on", self.slow_s

        def slowed(task: int, level: int, x: np.ndarray) -> np.ndarray:
            if on.exists():
                time.sleep(slow_s)
            return forward(task, level, x)

        return slowed


@contextlib.contextmanager
def ray_serve(port: int) -> Iterator[float]:
    """A local Ray with Serve's proxy on ``port`` until the block ends; yields the seconds
    it took to start."""
    import ray
    from ray import serve

    logging.getLogger("ray.serve").setLevel(logging.WARNING)
    started = time.monotonic()
    ray.init(
        address="local", include_dashboard=False, log_to_driver=False, logging_level=logging.WARNING
    )
    try:
        serve.start(http_options={"host": "127.0.0.1", "port": port})
        yield time.monotonic() - started
    finally:
        ray.shutdown()  # the local Ray, Serve's actors with it


class Apps:
    """The applications of one Ray session, one at a time, each on ``/<its name>`` of the
    proxy at ``base`` (``url``: the current one's)."""

    def __init__(self, base: str, tmp: str, settings: Settings, slow_ms: float) -> None:
        self.base, self.tmp, self.settings, self.slow_s = base, Path(tmp), settings, slow_ms / 1e3
        self.name = self.url = ""
        self.flag = self.slow = Path()
        self.deploy_s: dict[str, float] = {}

    def deploy(self, replicas: int, router: Literal["budget", "pow2"]) -> None:
        """Deploy ``r<replicas>-<router>`` with a :class:`SlowReplica` wrapper (not slowed
        yet) while the current application is deleted; wait until every replica runs and
        ``/readyz`` answers 200."""
        from ray import serve
        from ray.serve._private.common import ReplicaState

        from server.ray.app import RayOptions, build_application
        from server.ray.launch import local_share

        started = time.monotonic()
        if self.name:  # its replicas drain (idle: at once) while the new ones start
            serve.delete(self.name, _blocking=False)
        self.name = name = f"r{replicas}-{router}"
        self.url = f"{self.base}/{name}"
        folder = self.tmp / name
        folder.mkdir()
        self.flag, self.slow = folder / "on", folder / "slow"
        options = RayOptions(replicas=replicas, num_cpus=local_share(replicas), router=router)
        wrapper = SlowReplica(str(folder), self.slow_s)
        app = build_application(self.settings, options, wrapper)
        serve.run(app, name=name, route_prefix=f"/{name}", blocking=False)
        while time.monotonic() - started < APP_READY_TIMEOUT_S:
            engines = serve.status().applications[name].deployments.get("DVNEngine")
            with contextlib.suppress(httpx.HTTPError):
                ready = httpx.get(f"{self.url}/readyz", timeout=2).status_code == 200
                if (
                    ready
                    and engines
                    and engines.replica_states.get(ReplicaState.RUNNING) == replicas
                ):
                    self.deploy_s[name] = round(time.monotonic() - started, 1)
                    return
            time.sleep(0.2)
        raise TimeoutError(f"Ray application {name} not ready after {APP_READY_TIMEOUT_S:g} s")

    def skew(self, on: bool) -> None:
        """Slow the slow replica down (or not) from now on."""
        if on:
            self.flag.touch()
        else:
            self.flag.unlink(missing_ok=True)

    def slow_share(self, sent: Counter[str]) -> float | None:
        """Of the requests ``sent`` counts by replica, the share the slow replica got."""
        total = sum(sent.values())
        slow = sent[self.slow.read_text()] if self.slow.exists() else 0
        return round(slow / total, 4) if total else None


def routed(url: str) -> Counter[str]:
    """Requests each replica has counted (``dvn_requests_total`` summed by ``replica``)."""
    from prometheus_client.parser import text_string_to_metric_families

    counts: Counter[str] = Counter()
    page = httpx.get(url + "/metrics", timeout=30).text
    for family in text_string_to_metric_families(page):
        if family.name == "dvn_requests":
            for s in family.samples:
                if s.name == "dvn_requests_total" and "replica" in s.labels:
                    counts[s.labels["replica"]] += int(s.value)
    return counts


def figures(report: LoadReport) -> dict[str, Any]:
    """One run's figures; percentiles from the measured window's answers."""
    latencies = [o.latency_s * 1e3 for o in report.outcomes if o.kind == "ok" and o.start >= 0]
    p50, p99 = np.percentile(latencies, [50, 99]) if latencies else (None, None)
    return {
        "sent": report.sent, "ok": report.ok, "met": report.met,
        "offered_rps": round(report.offered_rate, 1), "ok_rps": round(report.achieved_rate, 1),
        "goodput_rps": round(report.goodput_rate, 1),
        "met_share": round(report.met / report.ok, 4) if report.ok else None,
        "p50_ms": None if p50 is None else round(float(p50), 3),
        "p99_ms": None if p99 is None else round(float(p99), 3),
        "errors": report.errors_by_type,
        "budgets": {b: a.rate and round(a.rate, 4) for b, a in report.budget_attainment.items()},
        "latencies_ms": latencies,
    }  # fmt: skip


def measure(url: str, o: ScaleOptions, **load: Any) -> dict[str, Any]:
    """One load-test run with the figures of :func:`figures` and the CPU steal."""
    before = cpu_times()
    config = {"duration": o.duration, "warmup": o.warmup, "timeout": o.timeout,
              "task_mix": o.task_mix, "budget_mix": o.budget_mix} | load  # fmt: skip
    report = run_loadtest(LoadTestConfig(url=url, progress=o.progress, **config))
    return figures(report) | {"steal": steal_share(before, cpu_times())}


def pooled(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Turns of one server pooled: p50/p99 over every answer, answers/s over every turn."""
    latencies = [x for r in rows for x in r["latencies_ms"]]
    p50, p99 = np.percentile(latencies, [50, 99]) if latencies else (np.nan, np.nan)
    return {
        "ok": sum(r["ok"] for r in rows), "p50_ms": round(float(p50), 3),
        "p99_ms": round(float(p99), 3), "ok_rps": round(float(np.mean([r["ok_rps"] for r in rows])), 1),
        "turns": [{k: r[k] for k in ("ok", "ok_rps", "p50_ms", "p99_ms", "steal")} for r in rows],
    }  # fmt: skip


def verdict(rows: list[dict[str, Any]]) -> str:
    """Whether ``BudgetRouter`` did better than power of two choices under skew."""
    skewed = {r["router"]: r for r in rows if r["skew"]}
    ours, pow2 = skewed.get("budget"), skewed.get("pow2")
    if ours is None or pow2 is None:
        return "not measured: the router comparison needs 2 or more replicas"
    # +1: ours better by more than MARGIN, -1: worse, 0: within it (no answer: no p99, worst)
    goodput = _compare(ours["goodput_rps"], pow2["goodput_rps"])
    p99 = _compare(1 / (ours["p99_ms"] or np.inf), 1 / (pow2["p99_ms"] or np.inf))
    if goodput == p99 == 0:
        word = f"no difference beyond {MARGIN:.0%}"
    else:
        word = (
            "better" if min(goodput, p99) >= 0 else "worse" if max(goodput, p99) <= 0 else "mixed"
        )
    return (
        f"under skew, BudgetRouter against pow2: goodput {ours['goodput_rps']} vs "
        f"{pow2['goodput_rps']} met/s, met/ok {pct(ours['met_share'])} vs {pct(pow2['met_share'])}, "
        f"p99 {fmt(ours['p99_ms'])} vs {fmt(pow2['p99_ms'])} ms, slow replica's share "
        f"{pct(ours['slow_share'])} vs {pct(pow2['slow_share'])}: {word}"
    )


def _compare(ours: float, theirs: float) -> int:
    """+1 when ``ours`` (higher is better) beats ``theirs`` by more than MARGIN, -1 when it
    trails by more, else 0."""
    if ours > theirs * (1 + MARGIN):
        return 1
    return -1 if ours < theirs * (1 - MARGIN) else 0


def run_scale(
    checkpoint: str | Path | None, out: str | Path, options: ScaleOptions | None = None
) -> Path:
    """Measure, write ``scale.json``, ``scale.md`` and ``scale.png``; return the .md.

    Raises:
        ValueError: the checkpoint has no such task or level.
    """
    from model_store.manifest import read_manifest
    from server.settings import demo_checkpoint, load_settings

    o = options or ScaleOptions()
    path = Path(checkpoint or demo_checkpoint())
    entry = next((t for t in read_manifest(path).tasks if t.name == o.task), None)
    if entry is None:
        raise ValueError(f"the checkpoint has no task {o.task!r}")
    level = o.level or entry.levels[-1].level
    if not 1 <= level <= entry.levels[-1].level:
        raise ValueError(f"task {o.task!r} has levels 1 to {entry.levels[-1].level}, got {level}")
    settings = load_settings(checkpoint=str(path), profile_iters=o.profile_iters,
                             log_level="warning", drain_timeout_s=5.0)  # fmt: skip
    say: Callable[[str], None] = progress if o.progress else (lambda _: None)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    counts = sorted(set(o.replicas))
    opts = {k: v for k, v in vars(o).items() if k != "progress"}
    data: dict[str, Any] = {"checkpoint": str(path), "task": o.task, "level": level,
                            "options": opts, "replicas": [], "routers": []}  # fmt: skip
    one = {"duration": o.duration / 2, "warmup": o.warmup / 2, "mode": "closed", "concurrency": 1,
           "task_mix": f"{o.task}:1", "budget_mix": None, "level": level}  # fmt: skip
    with tempfile.TemporaryDirectory() as tmp, ray_serve(port) as ray_s:
        data["ray_start_s"] = round(ray_s, 1)
        say(f"scale: Ray up in {ray_s:.1f} s")
        apps = Apps(url, tmp, settings, o.slow_ms)
        apps.deploy(counts[0], "budget")
        log = Path(tmp) / "dvn.log"
        env = {"DVN_PROFILE_ITERS": str(o.profile_iters)}
        with dvn_serve(path, log, "--log-level", "warning", env=env) as direct:
            turns: dict[str, list[dict[str, Any]]] = {"direct": [], "ray": []}
            for i in range(o.latency_rounds):
                for name in ("direct", "ray") if i % 2 == 0 else ("ray", "direct"):
                    row = measure(direct.url if name == "direct" else apps.url, o, seed=i, **one)
                    turns[name].append(row)
                    say(f"scale: latency {i + 1}/{o.latency_rounds} {name:6} " + _line(row, 3))
        data["latency"] = {name: pooled(rows) for name, rows in turns.items()}
        for n in counts:
            if n != counts[0]:
                apps.deploy(n, "budget")
            row = measure(apps.url, o, mode="closed", concurrency=o.clients, seed=100)
            data["replicas"].append({"replicas": n, "clients": o.clients, **row})
            say(f"scale: {n} replica{'s' * (n > 1)}, {o.clients} clients: " + _line(row))
        if counts[-1] >= 2:
            rate = o.skew_rate or max(1.0, o.skew_load * data["replicas"][-1]["ok_rps"])
            data["skew_rate"] = round(rate, 1)
            for router, skews in (("budget", (False, True)), ("pow2", (True, False))):
                if router == "pow2":
                    apps.deploy(counts[-1], "pow2")
                for skew in skews:
                    apps.skew(skew)
                    before = routed(apps.url)
                    row = measure(apps.url, o, mode="open", rate=rate, seed=200)
                    after = routed(apps.url)
                    sent = Counter({name: after[name] - before[name] for name in after})
                    share = apps.slow_share(sent)
                    row |= {"router": router, "skew": skew, "slow_share": share}
                    data["routers"].append(row | {"by_replica": dict(sent)})
                    say(
                        f"scale: {router} {'skewed' if skew else 'balanced'} {rate:.0f} req/s: "
                        f"{_line(row)}  slow replica {pct(share)}"
                    )
        data["deploy_s"] = apps.deploy_s
    data["verdict"] = verdict(data["routers"])
    for row in [*data["replicas"], *data["routers"]]:
        row.pop("latencies_ms")
    md = write_report(out, "scale", data, markdown(data))
    plot(data, Path(out) / "scale.png")
    return md


def _line(row: dict[str, Any], skip: int = 0) -> str:
    """A run's progress line (``skip``: leave out that many figures from the first)."""
    return "  ".join([
        f"ok {row['ok_rps']}/s", f"met {row['goodput_rps']}/s", f"met/ok {pct(row['met_share'])}",
        f"p50 {fmt(row['p50_ms'])} ms", f"p99 {fmt(row['p99_ms'])} ms",
    ][skip:])  # fmt: skip
