"""The load generator's own cost: CPU seconds per request of each HTTP transport it can use,
measured side by side in one run, closed loop against the same tiny server (uvicorn, one
process, a fixed infer answer), so what is measured is the client, not a model.

Transports: ``httpx`` (httpx's default, httpcore), ``httptools`` (``clients/_wire.py``
today, what ``dvn loadtest`` uses: responses parsed by httptools) and, as the baseline it
replaced, the hand-written HTTP/1.1 client that ``clients/_wire.py`` was, loaded from git
at ``BASELINE_REV`` (left out when git or that commit is not there).

Two paths (``PATHS``): ``dvn loadtest`` itself through each transport (its whole CPU per
request, the figure the goal is about), and the transport alone (one request built once,
handed to it, its body read). The transports take turns at each point, in an order that
turns each round, so a slow spell of a shared machine hits all of them.

    md = run_transport("bench/results", concurrencies=(1, 16, 64), duration=3.0)

The server runs as ``python -m bench.transport --serve PORT`` in its own process.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import statistics
import subprocess
import sys
import time
import types
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx

from bench._common import machine_line, write_report
from bench._process import ROOT, free_port
from clients._wire import WireTransport

BODY = bytes(range(256)) * 16  # a 4 KiB request body, about one .npy example of `shapes`
SHAPE = (3, 32, 32)  # `shapes`' input: the load generator's bodies are 12 KiB .npy files
MODEL = {"name": "bench", "version": "1", "sha256": "0" * 64}
# A `dvn serve` answer of level 4 to one `shapes` example, about 0.5 KiB like the real one.
ANSWER = json.dumps(
    {
        "task": "shapes",
        "level": 4,
        "units": [0, 1, 2, 3],
        "selection": "default",
        "predictions": [{"class_index": 1, "class_name": "circle", "probability": 0.97}],
        "cost": {"params": 104_000, "param_bytes": 416_000, "flops": 21_000_000},
        "model": MODEL,
        "padding": "x" * 200,
    }
).encode()
MODELS = {
    **MODEL,
    "device": "cpu",
    "num_units": 4,
    "param_bytes": 416_000,
    "tasks": [
        {
            "name": "shapes",
            "classes": ["square", "circle"],
            "input_shape": list(SHAPE),
            "preprocessing": {
                "color_mode": "RGB",
                "size": [32, 32],
                "mean": [0.5] * 3,
                "std": [0.5] * 3,
            },
            "unit_order": [0, 1, 2, 3],
            "levels": [],
        }
    ],
}
# The last commit with the hand-written client; `dvn loadtest` through the transport that
# replaced it must stay within GOAL_RATIO of its CPU per request (issue 17).
BASELINE_REV = "fc3b992"
BASELINE_PATH = "clients/_wire.py"
BASELINE = "hand-written"
NEW = "httptools"
GOAL_RATIO = 1.3
Factory = Callable[[int], httpx.AsyncBaseTransport]


def _app() -> Any:
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import JSONResponse, Response
    from starlette.routing import Route

    async def infer(request: Request) -> Response:
        await request.body()
        return Response(ANSWER, media_type="application/json")

    async def models(request: Request) -> Response:
        return JSONResponse(MODELS)

    return Starlette(
        routes=[
            Route("/infer/{task}", infer, methods=["POST"]),
            Route("/v1/models", models),
        ]
    )


def serve(port: int) -> None:
    import uvicorn

    uvicorn.run(_app(), host="127.0.0.1", port=port, log_level="warning", lifespan="off")


@contextlib.contextmanager
def _server() -> Iterator[str]:
    port = free_port()
    cmd = [sys.executable, "-m", "bench.transport", "--serve", str(port)]
    process = subprocess.Popen(cmd, cwd=ROOT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            with contextlib.suppress(httpx.HTTPError):
                httpx.post(url + "/infer/shapes", content=b"", timeout=1)
                break
            if time.monotonic() > deadline or process.poll() is not None:
                raise RuntimeError(f"the transport benchmark's server did not start ({cmd})")
            time.sleep(0.1)
        yield url
    finally:
        process.terminate()
        process.wait(30)


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


def _httpx(connections: int) -> httpx.AsyncBaseTransport:
    limits = httpx.Limits(max_connections=connections, max_keepalive_connections=connections)
    return httpx.AsyncHTTPTransport(limits=limits)


def _wire(connections: int) -> httpx.AsyncBaseTransport:
    return WireTransport(max_connections=connections)


async def _closed_loop(
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


def _loadtest(url: str, kind: str, make: Factory, clients: int, duration: float) -> dict[str, Any]:
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
        warmup=0.5,
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


PATHS = {
    "loadtest": "`dvn loadtest` itself, closed loop (its CPU per request: the goal's measure)",
    "transport": "the transport alone: one request built once, handed to it, its body read",
}


def summarise(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per path, concurrency and transport: the median over the rounds of CPU ms per
    request and of requests/s, and the ratio of the CPU to the baseline's median at the
    same path and concurrency (``None`` without a baseline)."""
    out: list[dict[str, Any]] = []
    for path, clients in dict.fromkeys((r["path"], r["clients"]) for r in rows):
        mine = [r for r in rows if r["path"] == path and r["clients"] == clients]
        kinds = list(dict.fromkeys(r["transport"] for r in mine))
        cpu = {
            k: statistics.median(r["cpu_ms_per_request"] for r in mine if r["transport"] == k)
            for k in kinds
        }
        base = cpu.get(BASELINE)
        for kind in kinds:
            out.append(
                {
                    "path": path,
                    "clients": clients,
                    "transport": kind,
                    "rounds": sum(r["transport"] == kind for r in mine),
                    "rps": round(
                        statistics.median(r["rps"] for r in mine if r["transport"] == kind), 1
                    ),
                    "cpu_ms_per_request": round(cpu[kind], 4),
                    "vs_baseline": None if base is None else round(cpu[kind] / base, 3),
                }
            )
    return out


def verdict(summary: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The goal: the worst ratio of the new transport to the hand-written client over the
    concurrencies of the ``loadtest`` path; ``None`` without a baseline."""
    ratios = [
        r["vs_baseline"]
        for r in summary
        if r["path"] == "loadtest" and r["transport"] == NEW and r["vs_baseline"] is not None
    ]
    if not ratios:
        return None
    return {"worst_ratio": max(ratios), "goal_ratio": GOAL_RATIO, "met": max(ratios) <= GOAL_RATIO}


def run_transport(
    out: str | Path,
    *,
    concurrencies: tuple[int, ...] = (1, 16, 64),
    duration: float = 3.0,
    rounds: int = 2,
    baseline_rev: str | None = BASELINE_REV,
) -> Path:
    """Measure every transport at every concurrency on both paths (``PATHS``), ``rounds``
    times with the transports taking turns; write transport.json and transport.md and
    return the .md.

    Raises:
        ValueError: ``rounds`` below 1 or ``duration`` not positive.
    """
    if rounds < 1 or duration <= 0:
        raise ValueError(f"need rounds >= 1 and duration > 0, got {rounds} and {duration}")
    factories: dict[str, Factory] = {"httpx": _httpx, NEW: _wire}
    baseline = baseline_factory(baseline_rev) if baseline_rev else None
    if baseline is not None:
        factories[BASELINE] = baseline
    elif baseline_rev:
        print(
            f"transport: no {BASELINE_PATH} at {baseline_rev} (git unavailable?): "
            "measuring without the baseline",
            file=sys.stderr,
        )
    kinds = list(factories)
    rows: list[dict[str, Any]] = []
    with _server() as url:
        for round_ in range(rounds):
            for path in PATHS:
                for clients in concurrencies:
                    turn = round_ % len(kinds)
                    for kind in kinds[turn:] + kinds[:turn]:
                        if path == "loadtest":
                            row = _loadtest(url, kind, factories[kind], clients, duration)
                        else:
                            row = asyncio.run(
                                _closed_loop(url, kind, factories[kind], clients, duration)
                            )
                        rows.append({"round": round_ + 1, "path": path, **row})
                        print(
                            f"transport: round {round_ + 1}/{rounds} {path:9} {clients:3} "
                            f"clients {kind:12} {row['rps']:8.1f} req/s  "
                            f"{row['cpu_ms_per_request']:.3f} ms CPU/request",
                            file=sys.stderr,
                            flush=True,
                        )
    summary = summarise(rows)
    data = {
        "duration_s": duration,
        "rounds": rounds,
        "baseline_rev": baseline_rev if baseline is not None else None,
        "summary": summary,
        "goal": verdict(summary),
        "rows": rows,
    }
    return write_report(out, "transport", data, _markdown(data))


def _markdown(d: dict[str, Any]) -> str:
    rev = d["baseline_rev"]
    baseline = (
        f"`{BASELINE}` is the hand-written client `{BASELINE_PATH}` as of commit {rev}, "
        f"loaded from git, which `{NEW}` replaced; the last column is each transport's CPU per "
        "request over the hand-written one's."
        if rev
        else "The hand-written baseline was not available (no git history here): no ratio."
    )
    lines = [
        "## Load generator: CPU per request by HTTP transport",
        "",
        f"{machine_line()} Closed loop against a one-process uvicorn server that answers a "
        f"fixed {len(ANSWER)} B infer response (no model), {d['duration_s']:g} s per point, "
        f"{d['rounds']} round(s) with the transports taking turns (medians shown). CPU is the "
        "client process's own (user + system). `httpx` is httpx's own transport (httpcore), "
        f"`{NEW}` is `clients/_wire.py`, what `dvn loadtest` uses (asyncio streams, "
        f"responses parsed by httptools). {baseline}",
    ]
    for path, title in PATHS.items():
        lines += [
            "",
            f"{title[0].upper()}{title[1:]}:",
            "",
            "| clients | transport | requests/s | client CPU ms/request | vs hand-written |",
            "|---:|---|---:|---:|---:|",
        ]
        for r in (r for r in d["summary"] if r["path"] == path):
            ratio = "-" if r["vs_baseline"] is None else f"{r['vs_baseline']:.2f}x"
            lines.append(
                f"| {r['clients']} | {r['transport']} | {r['rps']} | "
                f"{r['cpu_ms_per_request']:.3f} | {ratio} |"
            )
    goal = d["goal"]
    if goal is not None:
        lines += [
            "",
            f"Goal: `dvn loadtest` through {NEW} within {goal['goal_ratio']}x the hand-written "
            f"client's CPU per request. Worst concurrency: {goal['worst_ratio']:.2f}x, "
            f"{'met' if goal['met'] else '**NOT met**'}.",
        ]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--serve", type=int, metavar="PORT", help="run the server only")
    parser.add_argument("--out", default="bench/results")
    args = parser.parse_args()
    if args.serve:
        serve(args.serve)
    else:
        print(run_transport(args.out).read_text())
