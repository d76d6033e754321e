"""dvn-serve next to its peers, in one run: the same checkpoint, task and level served by (a)
LitServe with batching on (same ``max_batch_size`` and batch timeout as ours), (b) a plain
FastAPI endpoint (one uvicorn worker, no batching, the forward in the endpoint) and (c)
``dvn serve`` with ``level=`` pinned. Each runs as a real process on a free loopback port and
is loaded by the project's load generator (closed loop, same ``.npy`` bodies, same response
parsing) at 1, 16 and 64 clients; the servers take turns at each point so a slow spell of a
shared machine hits all of them. Reported per server and point: requests/s, p50 and p99, and
the ratios ours/theirs. Every server must first answer one request with the probabilities
the in-process model computes for the same input.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import torch

from bench._common import machine_line, write_report
from bench._process import ROOT, ServerProcess, dvn_serve, free_port
from clients.loadtest import LoadTestConfig, run_loadtest
from model_store.checkpoint import Checkpoint, load

SERVERS = ("dvn-serve", "litserve", "fastapi")
PEER_READY_PATH = {"litserve": "/health", "fastapi": "/readyz"}
MAX_BATCH_SIZE = 32
BATCH_DELAY_MS = 2.0  # LitServe's batch timeout (dvn-serve closes a batch when it is free)


def progress(message: str) -> None:
    """One line per measured point on stderr (stdout carries the report)."""
    print(message, file=sys.stderr, flush=True)


def stop_process_group(process: subprocess.Popen[str], timeout: float = 30) -> None:
    """SIGTERM the process we started (its own session), wait, SIGKILL its group after
    ``timeout``; then give children it left behind a few seconds before killing them too."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait(10)
    for _ in range(50):
        try:
            os.killpg(process.pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.1)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)


def wait_for(server: ServerProcess, path: str, timeout: float) -> None:
    """Poll ``path`` until it answers 200; raise with the server's log if it exits or the
    time runs out."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            raise RuntimeError(
                f"{server.url} exited with {server.process.returncode}:\n{server.output()}"
            )
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(server.url + path, timeout=2).status_code == 200:
                return
        time.sleep(0.2)
    raise TimeoutError(f"{server.url}{path} not ready after {timeout} s:\n{server.output()}")


@contextlib.contextmanager
def peer_serve(
    kind: str, checkpoint: Path, task: str, level: int, models_json: Path, log: Path
) -> Iterator[ServerProcess]:
    """Run ``python -m bench.peer_servers KIND`` until the block ends (see stop_process_group)."""
    port = free_port()
    cmd = [sys.executable, "-m", "bench.peer_servers", kind, "--checkpoint", str(checkpoint),
           "--task", task, "--level", str(level), "--port", str(port),
           "--models-json", str(models_json), "--max-batch-size", str(MAX_BATCH_SIZE),
           "--batch-timeout-ms", str(BATCH_DELAY_MS)]  # fmt: skip
    with log.open("w") as out:
        process = subprocess.Popen(
            cmd, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT, text=True, start_new_session=True
        )
    try:
        yield ServerProcess(process, f"http://127.0.0.1:{port}", log)
    finally:
        stop_process_group(process)


def npy_example(shape: tuple[int, ...], seed: int = 0) -> tuple[bytes, torch.Tensor]:
    """A ``.npy`` body of one example ``(1, *shape)`` and the same example as a tensor."""
    x = np.random.default_rng(seed).standard_normal((1, *shape), dtype=np.float32)
    buf = io.BytesIO()
    np.save(buf, x, allow_pickle=False)
    return buf.getvalue(), torch.from_numpy(x)


def check_answer(url: str, ckpt: Checkpoint, task: str, level: int) -> None:
    """One request; raise unless the answer has the level and the probabilities that the
    in-process model gives (to 1e-4)."""
    t = ckpt.model.config.task_index(task)
    body, x = npy_example(tuple(ckpt.manifest.tasks[t].input_shape))
    r = httpx.post(
        f"{url}/infer/{task}",
        params={"level": level},
        content=body,
        headers={"content-type": "application/x-npy"},
        timeout=30,
    )
    if r.status_code != 200:
        raise RuntimeError(f"{url}: check request answered {r.status_code}: {r.text[:300]}")
    answer = r.json()
    with torch.inference_mode():
        expected = torch.softmax(ckpt.model(x, t, level), dim=1)[0]
    got = torch.tensor(answer["predictions"][0]["probabilities"])
    if answer["level"] != level or not torch.allclose(got, expected, atol=1e-4):
        raise RuntimeError(f"{url}: wrong answer for level {level}: {json.dumps(answer)[:300]}")


def closed_loop(
    url: str, task: str, level: int | None, clients: int, duration: float, warmup: float
) -> dict[str, Any]:
    """Requests/s, p50 and p99 of ``clients`` closed-loop workers sending one example each."""
    report = run_loadtest(
        LoadTestConfig(
            url=url,
            mode="closed",
            concurrency=clients,
            duration=duration,
            warmup=warmup,
            task_mix=f"{task}:1",
            level=level,
            timeout=30,
        )
    )
    return {
        "clients": clients,
        "rps": round(report.achieved_rate, 1),
        "p50_ms": percentile_ms(report.latency_ms, "p50"),
        "p99_ms": percentile_ms(report.latency_ms, "p99"),
        "ok": report.ok,
        "errors": report.errors + report.timeouts,
    }


@contextlib.contextmanager
def _dvn_with_models(path: Path, tmp: Path, task: str) -> Iterator[ServerProcess]:
    """``dvn serve`` batching up to the peers' batch size; its ``/v1/models`` JSON for
    ``task`` saved to ``tmp/models.json`` for the peers to answer."""
    with dvn_serve(path, tmp / "dvn.log", "--max-batch-size", str(MAX_BATCH_SIZE)) as dvn:
        models = httpx.get(dvn.url + "/v1/models", timeout=10).json()
        models["tasks"] = [t for t in models["tasks"] if t["name"] == task]
        (tmp / "models.json").write_text(json.dumps(models))
        yield dvn


def _measure(
    urls: dict[str, str],
    task: str,
    level: int,
    concurrencies: tuple[int, ...],
    duration: float,
    warmup: float,
) -> list[dict[str, Any]]:
    """Every server at every concurrency, taking turns (the first server rotates)."""
    rows = []
    for i, clients in enumerate(concurrencies):
        for name in SERVERS[i % 3 :] + SERVERS[: i % 3]:
            row = closed_loop(urls[name], task, level, clients, duration, warmup)
            rows.append({"level": level, "server": name, **row})
            progress(
                f"peers: level {level} {name:9} {clients:3} clients: {row['rps']:8.1f} req/s  "
                f"p50 {fmt(row['p50_ms'])} ms  p99 {fmt(row['p99_ms'])} ms  errors {row['errors']}"
            )
    return rows


def percentile_ms(latency_ms: dict[str, float], name: str) -> float | None:
    """A latency percentile rounded to µs; ``None`` when no request succeeded."""
    value = latency_ms.get(name)
    return None if value is None else round(value, 3)


def fmt(value: float | None, spec: str = ".2f") -> str:
    """``value`` formatted, ``-`` for a missing one."""
    return "-" if value is None else format(value, spec)


def run_peers(
    checkpoint: str | Path | None,
    out: str | Path,
    *,
    task: str = "shapes",
    levels: tuple[str, ...] = ("top", "1"),
    concurrencies: tuple[int, ...] = (1, 16, 64),
    duration: float = 5.0,
    warmup: float = 1.0,
) -> Path:
    """Measure, write ``peers.json``, ``peers.md`` and ``peers.png``; return the .md path.
    ``levels`` holds level numbers or ``top``."""
    from server.settings import demo_checkpoint

    path = Path(checkpoint or demo_checkpoint())
    ckpt = load(path)
    entry = ckpt.manifest.tasks[ckpt.model.config.task_index(task)]
    top = entry.levels[-1].level
    level_numbers = [top if lv == "top" else int(lv) if lv.isdigit() else 0 for lv in levels]
    if not all(1 <= lv <= top for lv in level_numbers):
        raise ValueError(f"task {task!r} has levels 1 to {top}; got {', '.join(levels)}")
    rows: list[dict[str, Any]] = []
    dvn: ServerProcess | None = None
    with tempfile.TemporaryDirectory() as tmp, contextlib.ExitStack() as running:
        models_json = Path(tmp) / "models.json"
        for level in level_numbers:
            with contextlib.ExitStack() as stack:
                peers = {
                    kind: stack.enter_context(
                        peer_serve(kind, path, task, level, models_json, Path(tmp) / f"{kind}.log")
                    )
                    for kind in PEER_READY_PATH
                }
                if dvn is None:  # started while the first peers start; kept for every level
                    dvn = running.enter_context(_dvn_with_models(path, Path(tmp), task))
                urls = {"dvn-serve": dvn.url}
                for kind, server in peers.items():
                    wait_for(server, PEER_READY_PATH[kind], timeout=180)
                    urls[kind] = server.url
                for url in urls.values():
                    check_answer(url, ckpt, task, level)
                rows += _measure(urls, task, level, concurrencies, duration, warmup)
    data = {
        "task": task,
        "max_batch_size": MAX_BATCH_SIZE,
        "batch_delay_ms": BATCH_DELAY_MS,
        "duration_s": duration,
        "rows": rows,
        "ratios": ratios(rows),
    }
    md = write_report(out, "peers", data, _markdown(data))
    _plot(rows, Path(out) / "peers.png")
    return md


def ratios(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """dvn-serve over each peer at each (level, clients): throughput (above 1: ours serves
    more) and p50/p99 latency (below 1: ours answers sooner)."""
    ours = {(r["level"], r["clients"]): r for r in rows if r["server"] == "dvn-serve"}
    found = []
    for r in rows:
        mine = ours.get((r["level"], r["clients"]))
        if r["server"] == "dvn-serve" or mine is None:
            continue
        found.append(
            {
                "level": r["level"],
                "clients": r["clients"],
                "peer": r["server"],
                "rps": _ratio(mine["rps"], r["rps"]),
                "p50": _ratio(mine["p50_ms"], r["p50_ms"]),
                "p99": _ratio(mine["p99_ms"], r["p99_ms"]),
            }
        )
    return found


def _ratio(a: float | None, b: float | None) -> float | None:
    return None if a is None or not b else round(a / b, 2)


def _markdown(data: dict[str, Any]) -> str:
    lines = [
        "## Peers: dvn-serve vs LitServe vs plain FastAPI",
        "",
        f"{machine_line()} Task `{data['task']}`, one example per request (`.npy` body), "
        "each server a real process on loopback, loaded in turn by the project's load "
        f"generator (closed loop, {data['duration_s']} s per point). LitServe and dvn-serve "
        f"batch up to {data['max_batch_size']} examples, LitServe with a "
        f"{data['batch_delay_ms']} ms batch timeout, dvn-serve closing a batch as soon as its "
        "executor is free; the plain FastAPI endpoint computes each request alone in the "
        "endpoint. dvn-serve has the level pinned with `level=`; each peer serves only that "
        "level. All three run the same forward (the level's `LevelPlan` from "
        "`model_store.inference`) and are loaded through the load generator's light HTTP/1.1 "
        "transport.",
        "",
        "| level | clients | server | requests/s | p50 ms | p99 ms | errors |",
        "|---:|---:|---|---:|---:|---:|---:|",
    ]
    for r in data["rows"]:
        lines.append(
            f"| {r['level']} | {r['clients']} | {r['server']} | {r['rps']:.1f} | "
            f"{fmt(r['p50_ms'])} | {fmt(r['p99_ms'])} | {r['errors']} |"
        )
    lines += [
        "",
        "Ratios ours/theirs (requests/s above 1 and latency below 1 favour dvn-serve):",
        "",
        "| level | clients | peer | requests/s | p50 | p99 |",
        "|---:|---:|---|---:|---:|---:|",
    ]
    for q in data["ratios"]:
        lines.append(
            f"| {q['level']} | {q['clients']} | {q['peer']} | {fmt(q['rps'])} | {fmt(q['p50'])} "
            f"| {fmt(q['p99'])} |"
        )
    lines += ["", "![peers](peers.png)"]
    return "\n".join(lines) + "\n"


def _plot(rows: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    levels = sorted({r["level"] for r in rows}, reverse=True)
    fig, axes = plt.subplots(2, len(levels), figsize=(5 * len(levels), 7), squeeze=False)
    for col, level in enumerate(levels):
        for name in SERVERS:
            mine = [r for r in rows if r["level"] == level and r["server"] == name]
            clients = [r["clients"] for r in mine]
            axes[0][col].plot(clients, [r["rps"] for r in mine], "o-", label=name)
            axes[1][col].plot(clients, [r["p99_ms"] for r in mine], "o-", label=name)
        axes[0][col].set_title(f"level {level}")
        axes[0][col].set_ylabel("requests/s")
        axes[1][col].set_ylabel("p99 latency ms")
        axes[1][col].set_xlabel("concurrent clients")
        ticks = sorted({r["clients"] for r in rows})
        for ax in (axes[0][col], axes[1][col]):
            ax.set_xscale("log")
            ax.set_xticks(ticks, [str(c) for c in ticks])
            ax.minorticks_off()
            ax.grid(alpha=0.3)
            ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
