"""What the transport benchmark (``bench.transport``) measures: each HTTP transport the load
generator can use, as a factory of ``httpx`` transports, and two closed loops through one:
``dvn loadtest`` itself, and the transport alone.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
import types
from collections.abc import Callable
from typing import Any

import httpx

from bench._process import ROOT
from bench.transport_server import ANSWER
from clients._wire import WireTransport

BODY = bytes(range(256)) * 16  # a 4 KiB request body, about one .npy example of `shapes`
# The last commit with the hand-written client; `dvn loadtest` through the transport that
# replaced it must stay within GOAL_RATIO of its CPU per request (issue 17).
BASELINE_REV = "fc3b992"
BASELINE_PATH = "clients/_wire.py"
Factory = Callable[[int], httpx.AsyncBaseTransport]


def baseline_factory(rev: str = BASELINE_REV) -> Factory | None:
    """The hand-written transport as it was at ``rev`` (``WireTransport`` of
    ``clients/_wire.py``), compiled from ``git show``; ``None`` when git cannot show it
    (no git, a shallow or exported tree)."""
    try:
        shown = subprocess.run(
            ["git", "show", f"{rev}:{BASELINE_PATH}"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=30,
        )
    except OSError:
        return None
    if shown.returncode != 0:
        return None
    module = types.ModuleType("bench._baseline_wire")
    sys.modules[module.__name__] = module  # dataclasses look their module up
    exec(compile(shown.stdout, f"{rev}:{BASELINE_PATH}", "exec"), module.__dict__)
    wire: Factory = module.WireTransport
    return wire


def httpx_transport(connections: int) -> httpx.AsyncBaseTransport:
    limits = httpx.Limits(max_connections=connections, max_keepalive_connections=connections)
    return httpx.AsyncHTTPTransport(limits=limits)


def wire_transport(connections: int) -> httpx.AsyncBaseTransport:
    return WireTransport(max_connections=connections)


async def closed_loop(
    url: str, kind: str, make: Factory, clients: int, duration: float
) -> dict[str, Any]:
    transport = make(clients)
    request = httpx.Request(
        "POST",
        url + "/infer/shapes",
        params={"level": "4"},
        content=BODY,
        headers={"Content-Type": "application/x-npy", "Accept": "application/json"},
        extensions={"timeout": httpx.Timeout(30).as_dict()},
    )
    count = 0
    measuring = False

    async def worker(end: float) -> None:
        nonlocal count
        while time.perf_counter() < end:
            r = await transport.handle_async_request(request)
            await r.aread()
            if r.status_code != 200 or r.content != ANSWER:
                raise RuntimeError(f"{kind}: unexpected answer {r.status_code}")
            count += measuring

    try:
        await asyncio.gather(*(worker(time.perf_counter() + 0.5) for _ in range(clients)))  # warm
        measuring = True
        cpu0, t0 = time.process_time(), time.perf_counter()
        await asyncio.gather(*(worker(t0 + duration) for _ in range(clients)))
        cpu, wall = time.process_time() - cpu0, time.perf_counter() - t0
    finally:
        await transport.aclose()
    return {
        "transport": kind,
        "clients": clients,
        "requests": count,
        "rps": round(count / wall, 1),
        "cpu_ms_per_request": round(1000 * cpu / max(count, 1), 4),
        "client_cpu_share": round(cpu / wall, 2),  # of one core
    }


def loadtest(
    url: str, kind: str, make: Factory, clients: int, duration: float, warmup: float = 0.5
) -> dict[str, Any]:
    """``dvn loadtest`` itself (closed loop, ``clients`` workers) through ``make``'s
    transport: the client CPU of everything it does per request, parsing and recording
    included. CPU counts the whole run (discovery and warm-up too) over every request
    sent in it."""
    from clients.loadtest import LoadTestConfig, run_loadtest

    config = LoadTestConfig(
        url,
        mode="closed",
        concurrency=clients,
        duration=duration,
        warmup=warmup,
        task_mix="shapes:1",
        timeout=30,
        transport=make(clients),
    )
    cpu0 = time.process_time()
    report = run_loadtest(config)
    cpu = time.process_time() - cpu0
    if report.ok != report.sent:
        raise RuntimeError(
            f"{kind}: {report.sent - report.ok} requests failed: {report.errors_by_type}"
        )
    sent = report.sent + report.warmup_sent
    return {
        "transport": kind,
        "clients": clients,
        "requests": report.sent,
        "rps": round(report.achieved_rate, 1),
        "cpu_ms_per_request": round(1000 * cpu / max(sent, 1), 4),
    }
