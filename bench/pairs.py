"""``dvn bench pairs``: the fast paths that round 1 added to work around running HTTP and the
engine in one process, and that the engine split kept, each measured side by side with
what it replaces (docs/decisions.md, "Single-process workarounds"). Rounds interleave the
variants, so a busy spell on the machine hits each alike; each figure is a ratio, shipped
over counterfactual, per round.

- ``frontend``: one engine process and three front-end processes on it, the same
  closed-loop HTTP load (level 1, JSON body) sent to each in turn: ``shipped``
  (``DirectInfer`` and the ``/infer`` query read by hand, ``server/http/params.py``),
  ``routed`` (``DirectInfer`` off: FastAPI's routing, middleware and exception handling)
  and ``fastapi`` (routed, and the query declared as FastAPI parameters instead of read by
  hand). The front end's CPU time (user + system) per answered request, and requests/s.
- ``inline``: two engine processes, ``DVN_INLINE_FORWARD_MS`` 1 (shipped) and 0, driven
  over ZMQ with no front end, one level-1 request at a time: the engine's CPU per request
  and the round trip's p50.
- ``threads``: two ``dvn serve`` trees of one front end each: the engine's torch threads as
  shipped (the cores the front ends leave) against torch's default (every core); the same
  closed-loop HTTP load to each in turn: requests/s and p50.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import psutil

from bench import _process
from bench._common import machine_line, write_report
from bench._process import ROOT, dvn_serve
from clients._wire import WireTransport
from model_store.manifest import config_from_manifest, read_manifest
from server.settings import Settings, demo_checkpoint

PARTS = ("frontend", "inline", "threads")
FRONTENDS = ("shipped", "routed", "fastapi")
# (fast path, what it replaces, what the fast path is)
FRONTEND_PAIRS = (
    ("shipped", "routed", "DirectInfer vs FastAPI's routing"),
    ("routed", "fastapi", "query read by hand vs FastAPI parameters (both routed)"),
    ("shipped", "fastapi", "both vs neither"),
)
TASK = "digits"
BODY = json.dumps({"inputs": [[[0.0] * 8] * 8]}).encode()  # one demo digits example
QUERY = "?level=1&top_k=3&on_miss=degrade"
# A front end of a variant: the patch, then the worker's own main.
_FRONTEND_BOOT = (
    "import sys; from bench.pairs_frontend import frontend_child; "
    "sys.exit(frontend_child(sys.argv[1], sys.argv[2:]))"
)


# -- processes ----------------------------------------------------------------------------
def _cpu(pid: int) -> float:
    t = psutil.Process(pid).cpu_times()
    return float(t.user + t.system)


def _env() -> dict[str, str]:
    path = os.environ.get("PYTHONPATH")
    return {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{path}" if path else str(ROOT)}


def stop(process: subprocess.Popen[bytes], log: Path, timeout: float = 60) -> None:
    """:func:`bench._process.stop`; a process that had to be killed is an error that shows
    the end of its log."""
    if _process.stop(process, timeout):
        tail = log.read_text(errors="replace")[-4000:]
        raise RuntimeError(
            f"pid {process.pid} ({log.name}) did not exit within {timeout:g} s of SIGTERM:\n{tail}"
        )


@contextlib.contextmanager
def engine_process(settings: Settings, log: Path) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """An engine process (``python -m server.engine.process``): its address and process."""
    address = f"ipc://{Path(tempfile.mkdtemp(prefix='dvn-pairs-')) / 'engine.sock'}"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "server.engine.process", "--address", address,
             "--settings", settings.model_dump_json()],
            cwd=ROOT, env=_env(), stdout=out, stderr=subprocess.STDOUT,
        )  # fmt: skip
    try:
        yield address, process
    finally:
        stop(process, log)


@contextlib.contextmanager
def frontend_process(
    variant: str, address: str, settings: Settings, log: Path
) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """A front end of ``variant`` on the engine at ``address``: its URL and process."""
    listener = socket.create_server(("127.0.0.1", 0), backlog=1024)
    listener.set_inheritable(True)
    url = f"http://127.0.0.1:{listener.getsockname()[1]}"
    fd = listener.fileno()
    with log.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-c", _FRONTEND_BOOT, variant, "--fd", str(fd),
             "--address", address, "--settings", settings.model_dump_json()],
            cwd=ROOT, env=_env(), pass_fds=(fd,), stdout=out, stderr=subprocess.STDOUT,
        )  # fmt: skip
    listener.close()  # the front end holds its own copy
    try:
        yield url, process
    finally:
        stop(process, log)


def wait_ready(url: str, process: subprocess.Popen[Any], log: Path, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{url}: exited with {process.returncode}:\n{log.read_text()}")
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(url + "/readyz", timeout=2).status_code == 200:
                return
        time.sleep(0.2)
    raise TimeoutError(f"{url} not ready after {timeout} s:\n{log.read_text()}")


async def closed_loop(url: str, n: int, clients: int, query: str = QUERY) -> tuple[float, float]:
    """``n`` requests from ``clients`` closed-loop clients: (requests/s, p50 seconds)."""
    transport = WireTransport(max_connections=clients)
    left = n
    latencies: list[float] = []
    async with httpx.AsyncClient(base_url=url, transport=transport, timeout=60) as http:

        async def worker() -> None:
            nonlocal left
            while left > 0:
                left -= 1
                sent = time.perf_counter()
                r = await http.post(
                    f"/infer/{TASK}{query}",
                    content=BODY,
                    headers={"content-type": "application/json"},
                )
                if r.status_code != 200:
                    raise RuntimeError(f"{url}: {r.status_code} {r.text}")
                latencies.append(time.perf_counter() - sent)

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(clients)))
        wall = time.perf_counter() - started
    return n / wall, statistics.median(latencies)


def _ratios(rounds: list[dict[str, float]], a: str, b: str) -> list[float | None]:
    """``a / b`` per round; None where ``b`` is 0 (a CPU time under the clock's tick)."""
    return [round(r[a] / r[b], 3) if r[b] else None for r in rounds]


# -- the parts ------------------------------------------------------------------------------
def measure_frontend(
    checkpoint: Path, logs: Path, *, requests: int, clients: int, rounds: int
) -> dict[str, Any]:
    settings = Settings(checkpoint=checkpoint, log_level="warning", torch_threads=1)
    per_round: list[dict[str, dict[str, float]]] = []
    with contextlib.ExitStack() as stack:
        address, _ = stack.enter_context(engine_process(settings, logs / "pairs-engine.log"))
        fronts = {}
        for variant in FRONTENDS:
            log = logs / f"pairs-frontend-{variant}.log"
            fronts[variant] = (
                *stack.enter_context(frontend_process(variant, address, settings, log)),
                log,
            )
        for url, process, log in fronts.values():
            wait_ready(url, process, log)
            asyncio.run(closed_loop(url, max(50, requests // 10), clients))  # warm
        for i in range(rounds):
            got: dict[str, dict[str, float]] = {}
            for variant in FRONTENDS if i % 2 == 0 else FRONTENDS[::-1]:
                url, process, _ = fronts[variant]
                before = _cpu(process.pid)
                rps, p50 = asyncio.run(closed_loop(url, requests, clients))
                cpu_us = (_cpu(process.pid) - before) / requests * 1e6
                got[variant] = {"cpu_us": cpu_us, "rps": rps, "p50_ms": p50 * 1e3}
            per_round.append(got)
    return {
        "requests": requests, "clients": clients, "rounds": per_round,
        "ratios": {
            f"{a}/{b}": {key: _ratios([{k: r[k][key] for k in r} for r in per_round], a, b) for key in ("cpu_us", "rps")}
            for a, b, _ in FRONTEND_PAIRS
        },
    }  # fmt: skip


async def _engine_sequential(
    address: str, settings: Settings, pid: int, requests: int
) -> dict[str, float]:
    from server.engine import wire
    from server.engine.mp_client import MPClient

    manifest = read_manifest(settings.checkpoint)
    specs = {s.name: s for s in config_from_manifest(manifest).tasks}
    client = MPClient(address, manifest, specs, max_inflight=64)
    await client.start()
    try:
        deadline = time.monotonic() + 300
        while not client.status().ready:
            if time.monotonic() > deadline:
                raise TimeoutError(f"engine at {address} not ready")
            await asyncio.sleep(0.1)
        entry = manifest.task(TASK)
        shape = (1, *specs[TASK].input_shape)
        xs = np.random.default_rng(0).standard_normal((16, *shape), dtype=np.float32)
        latencies = []
        before = _cpu(pid)
        for i in range(requests):
            message = wire.Infer(
                client.next_id(), TASK, None, 1, "degrade", 0.0, "", shape, "float32"
            )
            sent = time.perf_counter()
            await client.infer(message, xs[i % 16], entry, None)
            latencies.append(time.perf_counter() - sent)
        cpu_us = (_cpu(pid) - before) / requests * 1e6
    finally:
        await client.close()
    return {"cpu_us": cpu_us, "p50_ms": statistics.median(latencies) * 1e3}


def measure_inline(checkpoint: Path, logs: Path, *, requests: int, rounds: int) -> dict[str, Any]:
    variants = {"shipped": 1.0, "thread": 0.0}  # DVN_INLINE_FORWARD_MS
    per_round: list[dict[str, dict[str, float]]] = []
    with contextlib.ExitStack() as stack:
        engines = {}
        for name, ms in variants.items():
            s = Settings(
                checkpoint=checkpoint, log_level="warning", torch_threads=1, inline_forward_ms=ms
            )
            address, process = stack.enter_context(
                engine_process(s, logs / f"pairs-inline-{name}.log")
            )
            engines[name] = (address, s, process.pid)
            asyncio.run(_engine_sequential(address, s, process.pid, 50))  # ready, warm
        for i in range(rounds):
            order = list(variants) if i % 2 == 0 else list(variants)[::-1]
            per_round.append(
                {n: asyncio.run(_engine_sequential(*engines[n], requests)) for n in order}
            )
    return {
        "requests": requests, "rounds": per_round,
        "cpu_ratio": _ratios([{k: r[k]["cpu_us"] for k in r} for r in per_round], "shipped", "thread"),
        "p50_ratio": _ratios([{k: r[k]["p50_ms"] for k in r} for r in per_round], "shipped", "thread"),
    }  # fmt: skip


def measure_threads(
    checkpoint: Path, logs: Path, *, requests: int, clients: int, rounds: int, level: int
) -> dict[str, Any]:
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    variants = {"shipped": {}, "every_core": {"DVN_TORCH_THREADS": str(cores or 1)}}
    query = f"?level={level}"
    per_round: list[dict[str, dict[str, float]]] = []
    with contextlib.ExitStack() as stack:
        urls = {}
        for name, env in variants.items():
            env = {**env, "DVN_LOG_LEVEL": "warning"}
            log = logs / f"pairs-threads-{name}.log"
            server = stack.enter_context(dvn_serve(checkpoint, log, "--workers", "1", env=env))
            urls[name] = server.url
            asyncio.run(closed_loop(server.url, max(50, requests // 10), clients, query))
        for i in range(rounds):
            order = list(variants) if i % 2 == 0 else list(variants)[::-1]
            got = {}
            for name in order:
                rps, p50 = asyncio.run(closed_loop(urls[name], requests, clients, query))
                got[name] = {"rps": rps, "p50_ms": p50 * 1e3}
            per_round.append(got)
    return {
        "requests": requests, "clients": clients, "level": level, "cores": cores, "rounds": per_round,
        "rps_ratio": _ratios([{k: r[k]["rps"] for k in r} for r in per_round], "shipped", "every_core"),
        "p50_ratio": _ratios([{k: r[k]["p50_ms"] for k in r} for r in per_round], "shipped", "every_core"),
    }  # fmt: skip


# -- the report -----------------------------------------------------------------------------
def _span(ratios: list[float | None]) -> str:
    values = [v for v in ratios if v is not None]
    if not values:
        return "n/a"
    return f"{min(values):.2f}-{max(values):.2f}" if len(values) > 1 else f"{values[0]:.2f}"


def _markdown(data: dict[str, Any]) -> str:
    lines = [
        "## Single-process workarounds the split kept, against what they replace\n",
        f"{machine_line()} {data['when']}, one-minute load average {data['load_before']:.2f} "
        f"before, {data['load_after']:.2f} after. Ratios are shipped / counterfactual, one per "
        "round (rounds interleave the variants).\n",
        "| pair | figure | ratios | shipped | counterfactual |",
        "|---|---|---|---:|---:|",
    ]

    def mean(rounds: list[dict[str, dict[str, float]]], variant: str, key: str) -> float:
        return statistics.fmean(r[variant][key] for r in rounds)

    if "frontend" in data:
        f = data["frontend"]
        for a, b, what in FRONTEND_PAIRS:
            for key, unit in (("cpu_us", "µs"), ("rps", "req/s")):
                label = "front-end CPU per request" if key == "cpu_us" else "requests/s"
                lines.append(
                    f"| {what} | {label} ({f['clients']} clients) "
                    f"| {_span(f['ratios'][f'{a}/{b}'][key])} "
                    f"| {mean(f['rounds'], a, key):.0f} {unit} | {mean(f['rounds'], b, key):.0f} {unit} |"
                )
    if "inline" in data:
        n = data["inline"]
        for key, ratio, label in (("cpu_us", "cpu_ratio", "engine CPU per request (µs)"), ("p50_ms", "p50_ratio", "p50 (ms)")):  # fmt: skip
            lines.append(
                f"| inline forward vs executor thread | {label}, one at a time | "
                f"{_span(n[ratio])} | {mean(n['rounds'], 'shipped', key):.3g} "
                f"| {mean(n['rounds'], 'thread', key):.3g} |"
            )
    if "threads" in data:
        t = data["threads"]
        for key, ratio, label in (("rps", "rps_ratio", "requests/s"), ("p50_ms", "p50_ratio", "p50 (ms)")):  # fmt: skip
            lines.append(
                f"| torch threads cores - front ends vs every core ({t['cores']}) | {label}, "
                f"level {t['level']}, {t['clients']} clients | {_span(t[ratio])} "
                f"| {mean(t['rounds'], 'shipped', key):.3g} | {mean(t['rounds'], 'every_core', key):.3g} |"
            )
    return "\n".join(lines) + "\n"


def run(
    out: str | Path,
    *,
    parts: tuple[str, ...] = PARTS,
    checkpoint: str | None = None,
    rounds: int = 4,
    requests: int = 1500,
    clients: int = 64,
    log_dir: Path | None = None,
) -> dict[str, Any]:
    """Measure ``parts`` (of ``PARTS``) and write ``pairs.json`` and ``pairs.md`` under ``out``."""
    unknown = set(parts) - set(PARTS)
    if unknown:
        raise ValueError(f"unknown parts {sorted(unknown)}; choose from {', '.join(PARTS)}")
    ckpt = Path(checkpoint) if checkpoint else demo_checkpoint()
    logs = log_dir or Path(out)
    logs.mkdir(parents=True, exist_ok=True)
    data: dict[str, Any] = {
        "when": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "checkpoint": str(ckpt),
        "load_before": os.getloadavg()[0],
    }
    if "frontend" in parts:
        data["frontend"] = measure_frontend(
            ckpt, logs, requests=requests, clients=clients, rounds=rounds
        )
    if "inline" in parts:
        data["inline"] = measure_inline(ckpt, logs, requests=max(1, requests // 2), rounds=rounds)
    if "threads" in parts:
        data["threads"] = measure_threads(
            ckpt, logs, requests=requests, clients=min(clients, 16), rounds=rounds, level=1
        )
    data["load_after"] = os.getloadavg()[0]
    write_report(out, "pairs", data, _markdown(data))
    return data
