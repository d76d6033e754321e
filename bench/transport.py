"""The load generator's own cost: CPU seconds per request of ``httpx.AsyncClient`` with
httpx's default transport (httpcore) and with the light transport of ``clients/_wire.py``,
closed loop against the same tiny server (uvicorn, one process, a fixed answer), so what is
measured is the client, not a model.

    md = run_transport("bench/results", concurrencies=(1, 16, 64), duration=3.0)

The server runs as ``python -m bench.transport --serve PORT`` in its own process.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx

from bench._common import machine_line, write_report
from bench._process import ROOT, free_port
from clients._wire import WireTransport

BODY = bytes(range(256)) * 16  # a 4 KiB request body, about one .npy example of `shapes`
ANSWER = b'{"task":"shapes","level":4,"predictions":[{"class_index":1}]}' * 8  # ~0.5 KiB
TRANSPORTS = ("httpx", "wire")


def _app() -> Any:
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import Response
    from starlette.routing import Route

    async def infer(request: Request) -> Response:
        await request.body()
        return Response(ANSWER, media_type="application/json")

    return Starlette(routes=[Route("/infer", infer, methods=["POST"])])


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
                httpx.post(url + "/infer", content=b"", timeout=1)
                break
            if time.monotonic() > deadline or process.poll() is not None:
                raise RuntimeError(f"the transport benchmark's server did not start ({cmd})")
            time.sleep(0.1)
        yield url
    finally:
        process.terminate()
        process.wait(30)


def _transport(kind: str, connections: int) -> httpx.AsyncBaseTransport:
    if kind == "wire":
        return WireTransport(max_connections=connections)
    limits = httpx.Limits(max_connections=connections, max_keepalive_connections=connections)
    return httpx.AsyncHTTPTransport(limits=limits)


async def _closed_loop(url: str, kind: str, clients: int, duration: float) -> dict[str, Any]:
    headers = {"Content-Type": "application/x-npy"}
    async with httpx.AsyncClient(
        base_url=url, transport=_transport(kind, clients), timeout=30
    ) as http:
        count = 0
        measuring = False

        async def worker(end: float) -> None:
            nonlocal count
            while time.perf_counter() < end:
                r = await http.post("/infer", params={"level": "4"}, content=BODY, headers=headers)
                if r.status_code != 200 or r.content != ANSWER:
                    raise RuntimeError(f"{kind}: unexpected answer {r.status_code}")
                count += measuring

        await asyncio.gather(*(worker(time.perf_counter() + 0.5) for _ in range(clients)))  # warm
        measuring = True
        cpu0, t0 = time.process_time(), time.perf_counter()
        await asyncio.gather(*(worker(t0 + duration) for _ in range(clients)))
        cpu, wall = time.process_time() - cpu0, time.perf_counter() - t0
    return {
        "transport": kind,
        "clients": clients,
        "requests": count,
        "rps": round(count / wall, 1),
        "cpu_ms_per_request": round(1000 * cpu / max(count, 1), 3),
        "client_cpu_share": round(cpu / wall, 2),  # of one core
    }


def run_transport(
    out: str | Path, *, concurrencies: tuple[int, ...] = (1, 16, 64), duration: float = 3.0
) -> Path:
    """Measure every transport at every concurrency; write transport.json and .md."""
    rows: list[dict[str, Any]] = []
    with _server() as url:
        for clients in concurrencies:
            for kind in TRANSPORTS:
                rows.append(asyncio.run(_closed_loop(url, kind, clients, duration)))
    lines = [
        "## Load generator: CPU per request by HTTP transport",
        "",
        f"{machine_line()} `httpx.AsyncClient` closed loop, {duration:g} s per point, "
        f"a {len(BODY)} B POST answered {len(ANSWER)} B by a one-process uvicorn server "
        "(no model). CPU is the client process's own (user + system).",
        "",
        "| clients | transport | requests/s | client CPU ms/request | client CPU (cores) |",
        "|---:|---|---:|---:|---:|",
    ]
    lines += [
        f"| {r['clients']} | {r['transport']} | {r['rps']} | {r['cpu_ms_per_request']:.3f} "
        f"| {r['client_cpu_share']:.2f} |"
        for r in rows
    ]
    return write_report(out, "transport", {"rows": rows}, "\n".join(lines) + "\n")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--serve", type=int, metavar="PORT", help="run the server only")
    parser.add_argument("--out", default="bench/results")
    args = parser.parse_args()
    if args.serve:
        serve(args.serve)
    else:
        print(run_transport(args.out).read_text())
