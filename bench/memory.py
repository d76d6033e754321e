"""What serving a DVN costs in memory: the resident set (psutil RSS) of each process of a
real ``dvn serve`` (the engine, which holds the weights; the HTTP front ends; the
supervisor) after warm-up (every level profiled) and after a short closed-loop load over
every task, next to baselines measured the same way (a process of its own, RSS read from
outside once it says it is ready):

- bare torch: imports torch and numpy, loads nothing;
- torch + model: the checkpoint loaded and every level run at batch 1 to 32, no server (the
  model's share without one);
- bare web stack: imports every module of the server package (so FastAPI, uvicorn, pydantic
  and prometheus too) and serves an empty FastAPI app with uvicorn, loading no model.

Beside them: the checkpoint's weight bytes and what separate networks for every (task,
level) would hold (the sum of every level's ``param_bytes``).

Goal: (engine − bare torch) / checkpoint weight bytes ≤ 1.2x.
"""

from __future__ import annotations

import contextlib
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil

from bench._common import machine_line, write_report
from bench._process import ROOT, ServerProcess, dvn_serve, free_port
from bench.peers import progress, stop_process_group, wait_for
from clients.loadtest import LoadTestConfig, run_loadtest
from model_store.manifest import WEIGHTS, read_manifest

GOAL_RATIO = 1.2
MiB = 1024 * 1024
BARE_TORCH = (
    "import sys, time, numpy, torch\n"
    "print('ready', flush=True)\n"
    "sys.stdin.read()  # idle until the benchmark stops it\n"
)
TORCH_MODEL = (
    "import sys, numpy, torch\n"
    "from model_store.checkpoint import load\n"
    "ckpt = load(sys.argv[1])\n"
    "with torch.inference_mode():\n"
    "    for t, task in enumerate(ckpt.manifest.tasks):\n"
    "        for lv in task.levels:\n"
    "            for b in (1, 2, 4, 8, 16, 32):\n"
    "                ckpt.model(torch.randn(b, *task.input_shape), t, lv.level)\n"
    "print('ready', flush=True)\n"
    "sys.stdin.read()\n"
)
BARE_WEB = (
    "import importlib, pkgutil, sys, numpy, torch, uvicorn, server\n"
    "from fastapi import FastAPI\n"
    "for m in pkgutil.walk_packages(server.__path__, 'server.'):\n"
    "    importlib.import_module(m.name)\n"
    "app = FastAPI()\n"
    "app.get('/readyz')(lambda: {'status': 'ready'})\n"
    "uvicorn.run(app, host='127.0.0.1', port=int(sys.argv[1]), log_level='warning')\n"
)


def rss(pid: int) -> int:
    """Resident set size of ``pid`` in bytes."""
    return int(psutil.Process(pid).memory_info().rss)


def peak_rss(pid: int) -> int | None:
    """The high-water mark of ``pid``'s resident set (``VmHWM``; ``None`` off Linux)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def tree_rss(pid: int) -> dict[str, list[int]]:
    """RSS of ``dvn serve``'s process tree by role: ``engine`` (the process holding the
    weights: ``server.engine.process``, or the one process of ``--workers 0``),
    ``frontend`` (``server.http.worker``) and ``supervisor``."""
    root = psutil.Process(pid)
    roles: dict[str, list[int]] = {"engine": [], "frontend": [], "supervisor": []}
    for proc in [root, *root.children(recursive=True)]:
        command = " ".join(proc.cmdline())
        role = (
            "engine"
            if "server.engine.process" in command
            else "frontend"
            if "server.http.worker" in command
            else "supervisor"
        )
        roles[role].append(int(proc.memory_info().rss))
    if not roles["engine"]:  # one process does everything
        roles["engine"], roles["supervisor"] = roles["supervisor"], []
    return roles


def engine_pid(pid: int) -> int:
    root = psutil.Process(pid)
    for proc in root.children(recursive=True):
        if "server.engine.process" in " ".join(proc.cmdline()):
            return int(proc.pid)
    return pid


@contextlib.contextmanager
def baseline(code: str, *args: str, log: Path) -> Iterator[subprocess.Popen[str]]:
    """``python -c code *args`` in its own session until the block ends."""
    with log.open("w") as out:
        process = subprocess.Popen(
            [sys.executable, "-c", code, *args],
            cwd=ROOT,
            stdin=subprocess.PIPE,  # the scripts idle reading it
            stdout=out,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
        )
    try:
        yield process
    finally:
        stop_process_group(process, timeout=10)


def wait_printed_ready(process: subprocess.Popen[str], log: Path, timeout: float = 120) -> None:
    """Wait until the script wrote ``ready`` to ``log``; raise if it exits or hangs."""
    deadline = time.monotonic() + timeout
    while "ready" not in log.read_text().split():
        if process.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(
                f"baseline process not ready (exit {process.poll()}):\n{log.read_text()}"
            )
        time.sleep(0.1)


def run_memory(
    checkpoint: str | Path | None,
    out: str | Path,
    *,
    duration: float = 3.0,
    clients: int = 16,
    settle: float = 1.0,
) -> Path:
    """Measure, write ``memory.json``, ``memory.md`` and ``memory.png``; return the .md."""
    from server.settings import demo_checkpoint

    path = Path(checkpoint or demo_checkpoint())
    manifest = read_manifest(path)
    weights = (path / WEIGHTS).stat().st_size
    separate = sum(lv.param_bytes for t in manifest.tasks for lv in t.levels)
    with tempfile.TemporaryDirectory() as tmp, contextlib.ExitStack() as stack:
        # Started together (RSS does not depend on who else runs), measured once all are
        # ready and have idled ``settle`` s; the baselines idle on while the server is loaded.
        logs = {name: Path(tmp) / f"{name}.log" for name in ("torch", "model", "web", "dvn")}
        bare = stack.enter_context(baseline(BARE_TORCH, log=logs["torch"]))
        model = stack.enter_context(baseline(TORCH_MODEL, str(path), log=logs["model"]))
        port = free_port()
        web = stack.enter_context(baseline(BARE_WEB, str(port), log=logs["web"]))
        server = stack.enter_context(dvn_serve(path, logs["dvn"]))
        wait_printed_ready(bare, logs["torch"])
        wait_printed_ready(model, logs["model"])
        wait_for(ServerProcess(web, f"http://127.0.0.1:{port}", logs["web"]), "/readyz", 120)
        time.sleep(settle)
        torch_rss, model_rss, web_rss = (rss(p.pid) for p in (bare, model, web))
        warm = tree_rss(server.process.pid)
        progress(f"memory: bare torch process {torch_rss / MiB:.1f} MiB")
        progress(f"memory: torch + model (every level run, no server) {model_rss / MiB:.1f} MiB")
        progress(f"memory: bare web-stack process {web_rss / MiB:.1f} MiB")
        progress(f"memory: dvn serve's engine after warm-up {warm['engine'][0] / MiB:.1f} MiB")
        report = run_loadtest(
            LoadTestConfig(
                url=server.url,
                mode="closed",
                concurrency=clients,
                duration=duration,
                warmup=0.0,
                timeout=30,
            )
        )
        time.sleep(settle)
        loaded = tree_rss(server.process.pid)
        peak = peak_rss(engine_pid(server.process.pid))
        progress(
            f"memory: dvn serve's engine after {report.ok} requests "
            f"{loaded['engine'][0] / MiB:.1f} MiB"
            f" (peak {'-' if peak is None else f'{peak / MiB:.1f}'} MiB)"
        )
    data: dict[str, Any] = {
        "checkpoint": manifest.name,
        "weights_bytes": weights,
        "separate_networks_bytes": separate,
        "bare_torch_rss": torch_rss,
        "torch_model_rss": model_rss,
        "bare_web_rss": web_rss,
        "server_rss_warm": warm["engine"][0],  # the engine: the process holding the weights
        "server_rss_loaded": loaded["engine"][0],
        "server_rss_peak": peak,
        "frontend_rss_loaded": loaded["frontend"],
        "supervisor_rss_loaded": loaded["supervisor"],
        "load": {"clients": clients, "duration_s": duration, "requests_ok": report.ok},
    }
    engine = data["server_rss_loaded"]
    data["ratio_vs_torch"] = round((engine - torch_rss) / weights, 2)
    data["ratio_vs_torch_warm"] = round((data["server_rss_warm"] - torch_rss) / weights, 2)
    data["ratio_vs_model"] = round((engine - model_rss) / weights, 2)
    data["separate_vs_weights"] = round(separate / weights, 2)
    data["goal_met"] = data["ratio_vs_torch"] <= GOAL_RATIO
    md = write_report(out, "memory", data, _markdown(data))
    _plot(data, Path(out) / "memory.png")
    return md


def goals(data: dict[str, Any]) -> list[dict[str, Any]]:
    """The memory goal as a row of the summary table."""
    return [
        {
            "goal": f"(engine RSS − bare torch RSS) / checkpoint bytes ≤ {GOAL_RATIO}x",
            "measured": f"{data['ratio_vs_torch']}x (over torch + model with no server: "
            f"{data['ratio_vs_model']}x)",
            "met": bool(data["goal_met"]),
        }
    ]


def _mib(n: int | None) -> str:
    return "-" if n is None else f"{n / MiB:.2f}"


def _markdown(d: dict[str, Any]) -> str:
    w = d["weights_bytes"]
    engine, torch_rss, model_rss = d["server_rss_loaded"], d["bare_torch_rss"], d["torch_model_rss"]
    fronts = d["frontend_rss_loaded"]
    front = sum(fronts) // len(fronts) if fronts else None
    lines = [
        "## Memory: the engine, the front ends, every task and level",
        "",
        f"{machine_line()} Checkpoint `{d['checkpoint']}`. Resident set size (psutil RSS) of "
        "each process, read from outside once it is ready and has idled a second; the "
        f"load is {d['load']['clients']} closed-loop clients over every task for "
        f"{d['load']['duration_s']} s ({d['load']['requests_ok']} requests). `dvn serve` is "
        f"a supervisor, one engine (the weights, queues, forwards) and {len(fronts)} HTTP "
        "front end(s); the goal weighs the engine.",
        "",
        "| what | MiB | × checkpoint weights |",
        "|---|---:|---:|",
        f"| checkpoint weights (`{WEIGHTS}`) | {_mib(w)} | 1.00 |",
        f"| separate networks for every (task, level) (Σ param_bytes) | "
        f"{_mib(d['separate_networks_bytes'])} | {d['separate_vs_weights']:.2f} |",
        f"| bare torch process (torch + numpy, nothing loaded) | {_mib(torch_rss)} | |",
        f"| torch + model, no server (checkpoint loaded, every level run at batch 1 to 32) | "
        f"{_mib(model_rss)} | |",
        f"| bare web stack (server package imported, empty FastAPI app on uvicorn) | "
        f"{_mib(d['bare_web_rss'])} | |",
        f"| engine after warm-up | {_mib(d['server_rss_warm'])} | |",
        f"| engine after the load | {_mib(engine)} | |",
        f"| engine peak (VmHWM) | {_mib(d['server_rss_peak'])} | |",
        f"| a front end after the load (mean of {len(fronts)}) | {_mib(front)} | |",
        f"| supervisor | {_mib(sum(d['supervisor_rss_loaded']) or None)} | |",
        f"| **engine − bare torch** (after load) | {_mib(engine - torch_rss)} "
        f"| **{d['ratio_vs_torch']:.2f}** |",
        f"| engine − bare torch (after warm-up) | {_mib(d['server_rss_warm'] - torch_rss)} "
        f"| {d['ratio_vs_torch_warm']:.2f} |",
        f"| torch + model − bare torch (the model's share without a server) | "
        f"{_mib(model_rss - torch_rss)} | {(model_rss - torch_rss) / w:.2f} |",
        f"| engine − (torch + model): what serving adds | {_mib(engine - model_rss)} | "
        f"{d['ratio_vs_model']:.2f} |",
        "",
        f"Goal: (engine − bare torch) / checkpoint bytes ≤ {GOAL_RATIO}x: "
        f"**{d['ratio_vs_torch']:.2f}x, {'met' if d['goal_met'] else 'NOT met'}**. The engine "
        "imports no web framework; its share over bare torch holds the weights, the level "
        "plans (capped at `DVN_PLAN_BYTES`, 1x the weights by default), per-(task, level) "
        "normalisation, and torch's allocator and thread pools after real forwards (the "
        "torch + model row measures the same without any server: most of it is torch's own "
        "working memory once forwards have run, not the weights). The front ends hold the "
        "web stack and no weights. RSS counts shared library pages too, the same in every "
        "row.",
        "",
        "![memory](memory.png)",
    ]
    return "\n".join(lines) + "\n"


def _plot(d: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    bars = [
        ("checkpoint weights", d["weights_bytes"]),
        ("separate networks", d["separate_networks_bytes"]),
        ("torch + model − torch\n(no server)", d["torch_model_rss"] - d["bare_torch_rss"]),
        ("engine − torch", d["server_rss_loaded"] - d["bare_torch_rss"]),
    ]
    fig, ax = plt.subplots(figsize=(6.5, 3.5))
    ax.barh([b[0] for b in bars], [b[1] / MiB for b in bars], color="tab:blue")
    ax.axvline(
        GOAL_RATIO * d["weights_bytes"] / MiB, color="r", ls="--", label="goal (1.2x weights)"
    )
    ax.set_xlabel("MiB")
    ax.legend(fontsize=8)
    ax.grid(axis="x", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
