"""Serving overhead and throughput, in one run: the in-process forward of each level next
to the end-to-end time through HTTP at concurrency 1, and requests/s at 1, 16 and 64
concurrent clients with batching on (``max_batch_size`` 32) and off (1)."""

from __future__ import annotations

import http.client
import io
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import torch

from bench._common import machine_line, median_seconds, write_report
from bench._process import dvn_serve
from clients.loadtest import LoadTestConfig, run_loadtest
from model_store.checkpoint import load
from model_store.inference import LevelPlan


def npy_body(shape: tuple[int, ...], seed: int = 0) -> bytes:
    buf = io.BytesIO()
    np.save(buf, np.random.default_rng(seed).standard_normal(shape, dtype=np.float32))
    return buf.getvalue()


def sequential_ms(url: str, path: str, body: bytes, n: int) -> list[float]:
    """Wall times (ms) of ``n`` requests sent one after another on one keep-alive
    connection of the standard library's ``http.client``: the lightest client there is, so
    that the overhead measured is the server's, not the client's (httpx's sync client
    costs about a millisecond of CPU a request by itself)."""
    parsed = httpx.URL(url)
    conn = http.client.HTTPConnection(parsed.host, parsed.port, timeout=30)
    headers = {"Content-Type": "application/x-npy"}
    times = []
    try:
        for i in range(n + 3):  # the first 3 warm the connection and the level up
            start = time.perf_counter()
            conn.request("POST", path, body=body, headers=headers)
            response = conn.getresponse()
            response.read()
            if i >= 3:
                times.append((time.perf_counter() - start) * 1e3)
            if response.status != 200:
                raise RuntimeError(f"POST {url}{path} answered {response.status}")
    finally:
        conn.close()
    return times


def run_serve(
    checkpoint: str | Path | None,
    out: str | Path,
    *,
    task: str | None = None,
    requests: int = 200,
    duration: float = 5.0,
    concurrencies: tuple[int, ...] = (1, 16, 64),
    server_args: tuple[str, ...] = (),
) -> Path:
    """Measure and write ``serve.json`` and ``serve.md``; return the .md path.
    ``server_args`` go to ``dvn serve`` as they are (``--workers 2``)."""
    from server.settings import demo_checkpoint

    path = Path(checkpoint or demo_checkpoint())
    ckpt = load(path)
    t_index = 0 if task is None else ckpt.model.config.task_index(task)
    entry = ckpt.manifest.tasks[t_index]
    shape = tuple(entry.input_shape)
    body = npy_body((1, *shape))
    x = torch.from_numpy(np.load(io.BytesIO(body)))
    levels: list[dict[str, Any]] = []
    throughput: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as tmp:
        for batching, max_batch in (("on", 32), ("off", 1)):
            args = ("--max-batch-size", str(max_batch), *server_args)
            with dvn_serve(path, Path(tmp) / f"serve-{batching}.log", *args) as server:
                if batching == "on":
                    for lv in entry.levels:
                        # The forward the server runs (its executor's LevelPlan), so the
                        # overhead is everything else.
                        plan = LevelPlan.build(ckpt.model, t_index, lv.level)

                        def forward(plan: LevelPlan = plan) -> None:
                            with torch.inference_mode():
                                plan(x)

                        fwd_ms = median_seconds(forward, 50) * 1e3
                        e2e = sorted(
                            sequential_ms(
                                server.url, f"/infer/{entry.name}?level={lv.level}", body, requests
                            )
                        )
                        p50 = statistics.median(e2e)
                        p99 = e2e[min(len(e2e) - 1, int(0.99 * len(e2e)))]
                        levels.append(
                            {
                                "level": lv.level,
                                "forward_ms": round(fwd_ms, 3),
                                "e2e_p50_ms": round(p50, 3),
                                "e2e_p99_ms": round(p99, 3),
                                "overhead_p50_ms": round(p50 - fwd_ms, 3),
                                "overhead_p99_ms": round(p99 - fwd_ms, 3),
                            }
                        )
                for clients in concurrencies:
                    report = run_loadtest(
                        LoadTestConfig(
                            url=server.url,
                            mode="closed",
                            concurrency=clients,
                            duration=duration,
                            warmup=1.0,
                            task_mix=f"{entry.name}:1",
                            level=entry.levels[-1].level,
                            timeout=30,
                        )
                    )
                    throughput.append(
                        {
                            "batching": batching,
                            "clients": clients,
                            "rps": round(report.achieved_rate, 1),
                            "p50_ms": report.latency_ms.get("p50"),
                            "p99_ms": report.latency_ms.get("p99"),
                            "errors": report.errors + report.timeouts,
                        }
                    )
    data = {
        "task": entry.name,
        "levels": levels,
        "throughput": throughput,
        "server_args": list(server_args),
    }
    return write_report(out, "serve", data, _markdown(data))


def _markdown(data: dict[str, Any]) -> str:
    lines = [
        "## Serving: overhead and throughput",
        "",
        f"{machine_line()} Task `{data['task']}`, one example per request (`.npy` body), a real "
        f"`dvn serve{''.join(' ' + a for a in data.get('server_args', []))}` on loopback. Concurrency 1: one `http.client` keep-alive connection, "
        "requests one after another, next to the forward the server runs (the level's "
        "`LevelPlan`) timed in-process; throughput: the project's load generator (its "
        "light HTTP/1.1 transport).",
        "",
        "Concurrency 1, level pinned:",
        "",
        "| level | forward in-process ms | HTTP p50 ms | HTTP p99 ms | overhead p50 ms | overhead p99 ms |",
        "|---:|---:|---:|---:|---:|---:|",
    ]
    for r in data["levels"]:
        lines.append(
            f"| {r['level']} | {r['forward_ms']:.3f} | {r['e2e_p50_ms']:.3f} | {r['e2e_p99_ms']:.3f} "
            f"| {r['overhead_p50_ms']:.3f} | {r['overhead_p99_ms']:.3f} |"
        )
    lines += [
        "",
        "Throughput at the top level, closed loop:",
        "",
        "| batching | clients | requests/s | p50 ms | p99 ms | errors |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for r in data["throughput"]:
        lines.append(
            f"| {r['batching']} | {r['clients']} | {r['rps']:.1f} | {r['p50_ms']} | {r['p99_ms']} | {r['errors']} |"
        )
    return "\n".join(lines) + "\n"
