"""Forward latency of every (task, level) at batch 1 and 32 next to its FLOP ratio to the
top level. Goal: at batch 32, each level's speed-up over the top level is at least half its
FLOP ratio.

Two forwards are timed: the one the server runs (the level's :class:`LevelPlan`: weight
slices copied out once, batch norm folded in), which the goal is judged on, and the DVN's
own ``model(x, task, level)`` (slicing full-width weights on every call), for reference."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from bench._common import machine_line, median_seconds, write_report
from model_store.checkpoint import load
from model_store.inference import LevelPlan

ROUNDS = 3  # interleaved measurement rounds; each figure is its fastest round's median


def run_levels(
    checkpoint: str | Path | None,
    out: str | Path,
    *,
    repeats: int = 30,
    device: str = "auto",
    threads: int | None = None,
) -> Path:
    """Measure, write ``levels.json``, ``levels.md`` and ``levels.png``; return the .md.
    ``threads``: torch's intra-op threads while timing (default: the engine's own beside one
    front end, ``server.engine.runtime.default_torch_threads``; on a GPU torch's)."""
    from server.engine.runtime import default_torch_threads
    from server.settings import demo_checkpoint

    dev = torch.device("cuda" if device == "auto" and torch.cuda.is_available() else "cpu")
    if device not in ("auto",):
        dev = torch.device(device)
    before = torch.get_num_threads()
    used = threads or default_torch_threads(dev) or before
    torch.set_num_threads(used)
    try:
        rows = _measure(checkpoint or demo_checkpoint(), dev, repeats)
    finally:
        torch.set_num_threads(before)
    data = {"device": str(dev), "threads": used, "rows": rows}
    md = write_report(out, "levels", data, _markdown(rows, str(dev), used))
    _plot(rows, Path(out) / "levels.png")
    return md


def _measure(checkpoint: str | Path, dev: torch.device, repeats: int) -> list[dict[str, Any]]:
    ckpt = load(checkpoint, dev)
    model = ckpt.model
    rows: list[dict[str, Any]] = []
    for t, task in enumerate(ckpt.manifest.tasks):
        shape = model.config.tasks[t].input_shape
        top = task.levels[-1]
        times: dict[int, dict[int, float]] = {lv.level: {} for lv in task.levels}
        model_times: dict[int, dict[int, float]] = {lv.level: {} for lv in task.levels}
        plans = {lv.level: LevelPlan.build(model, t, lv.level) for lv in task.levels}
        inputs = {b: torch.randn(b, *shape, device=dev) for b in (1, 32)}
        # Rounds over every (level, batch) in turn, keeping each one's fastest round median:
        # a burst of other work on a shared machine then spoils one round, not the figure.
        per_round = max(1, repeats // ROUNDS)
        for _ in range(ROUNDS):
            for lv in task.levels:
                for batch, x in inputs.items():

                    def served(x: torch.Tensor = x, plan: LevelPlan = plans[lv.level]) -> None:
                        with torch.inference_mode():
                            plan(x)
                        if dev.type == "cuda":
                            torch.cuda.synchronize()

                    def own(x: torch.Tensor = x, level: int = lv.level, t: int = t) -> None:
                        with torch.inference_mode():
                            model(x, t, level)
                        if dev.type == "cuda":
                            torch.cuda.synchronize()

                    for found, fn in ((times, served), (model_times, own)):
                        seconds = median_seconds(fn, per_round)
                        found[lv.level][batch] = min(found[lv.level].get(batch, seconds), seconds)
        for lv in task.levels:
            flop_ratio = top.flops / lv.flops
            speedup_32 = times[top.level][32] / times[lv.level][32]
            speedup_1 = times[top.level][1] / times[lv.level][1]
            rows.append(
                {
                    "task": task.name,
                    "level": lv.level,
                    "flops": lv.flops,
                    "flop_ratio": round(flop_ratio, 2),
                    "ms_batch1": round(times[lv.level][1] * 1e3, 4),
                    "ms_batch32": round(times[lv.level][32] * 1e3, 4),
                    "speedup_batch1": round(speedup_1, 2),
                    "speedup_batch32": round(speedup_32, 2),
                    "model_ms_batch1": round(model_times[lv.level][1] * 1e3, 4),
                    "model_ms_batch32": round(model_times[lv.level][32] * 1e3, 4),
                    "model_speedup_batch32": round(
                        model_times[top.level][32] / model_times[lv.level][32], 2
                    ),
                    "goal_met": speedup_32 >= 0.5 * flop_ratio,
                    "goal_met_batch1": speedup_1 >= 0.5 * flop_ratio,
                }
            )
    return rows


def _markdown(rows: list[dict[str, Any]], device: str, threads: int) -> str:
    lines = [
        "## Levels: forward time vs FLOPs",
        "",
        f"{machine_line()} Device: {device}, {threads} torch thread(s) while timing (the "
        "engine's own: on a CPU the cores its one front end leaves; `--threads`). "
        "One process; each figure is the fastest of "
        f"{ROUNDS} interleaved rounds' medians of repeated forwards. "
        "ms and speed-ups are the forward the server runs (the level's `LevelPlan`: weight "
        "slices copied once, batch norm folded in); `model` columns time the DVN's own "
        "forward, which slices the full-width weights on every call.",
        "Goal: speed-up over the top level ≥ half the FLOP ratio, at batch 32 and at batch 1.",
        "",
        "| task | level | MFLOPs | FLOP ratio | ms @1 | ms @32 | speed-up @1 | speed-up @32 "
        "| model ms @1 | model ms @32 | model speed-up @32 | goal @32 | goal @1 |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['task']} | {r['level']} | {r['flops'] / 1e6:.2f} | {r['flop_ratio']:.2f} | "
            f"{r['ms_batch1']:.3f} | {r['ms_batch32']:.3f} | {r['speedup_batch1']:.2f} | "
            f"{r['speedup_batch32']:.2f} | {r['model_ms_batch1']:.3f} | "
            f"{r['model_ms_batch32']:.3f} | {r['model_speedup_batch32']:.2f} | "
            f"{'met' if r['goal_met'] else 'NOT met'} | "
            f"{'met' if r['goal_met_batch1'] else 'NOT met'} |"
        )
    return "\n".join(lines) + "\n"


def _plot(rows: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.5, 4))
    for task in sorted({r["task"] for r in rows}):
        mine = [r for r in rows if r["task"] == task]
        ax.plot(
            [r["flop_ratio"] for r in mine], [r["speedup_batch32"] for r in mine], "o-", label=task
        )
    top = max(r["flop_ratio"] for r in rows)
    ax.plot([1, top], [1, top], "k:", label="speed-up = FLOP ratio")
    ax.plot([1, top], [0.5, top / 2], "r--", label="goal: half the FLOP ratio")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("FLOP ratio to the top level")
    ax.set_ylabel("speed-up over the top level (batch 32)")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
