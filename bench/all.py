"""``dvn bench all``: every benchmark in one run (levels, serve, peers, memory, budgets) into
one ``--out`` folder, then ``docs/benchmarks.md``: the machine, a table of every goal with
its measured value and met / NOT met, every part's markdown, and its plots (PNGs copied next
to the page, under ``docs/benchmarks/``). ``summary.json`` in ``--out`` holds the goals."""

from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench import budgets, memory
from bench._common import machine_line, write_report
from bench.peers import progress

PARTS = ("levels", "serve", "peers", "memory", "budgets")


@dataclass(frozen=True)
class SuiteOptions:
    """What every part runs with; ``duration`` is seconds per measured point."""

    task: str = "shapes"
    duration: float = 5.0
    warmup: float = 1.0
    clients: tuple[int, ...] = (1, 16, 64)
    peer_levels: tuple[str, ...] = ("top", "1")
    points: int = 6
    repeats: int = 30
    requests: int = 200
    budget_mix: str | None = None
    profile_iters: int = 5


def run_all(
    checkpoint: str | Path | None,
    out: str | Path = "bench/results",
    *,
    docs: str | Path = "docs/benchmarks.md",
    options: SuiteOptions | None = None,
) -> Path:
    """Run every part, write the summary and ``docs``; return the docs page's path."""
    from bench.levels import run_levels
    from bench.peers import run_peers
    from bench.serve import run_serve

    o = options or SuiteOptions()
    load_before = _load_average()
    started = time.perf_counter()
    steps: dict[str, Callable[[], Path]] = {
        "levels": lambda: run_levels(checkpoint, out, repeats=o.repeats),
        "serve": lambda: run_serve(
            checkpoint,
            out,
            task=o.task,
            requests=o.requests,
            duration=o.duration,
            concurrencies=o.clients,
        ),
        "peers": lambda: run_peers(
            checkpoint,
            out,
            task=o.task,
            levels=o.peer_levels,
            concurrencies=o.clients,
            duration=o.duration,
            warmup=o.warmup,
        ),
        "memory": lambda: memory.run_memory(checkpoint, out, duration=o.duration),
        "budgets": lambda: budgets.run_budgets(
            checkpoint,
            out,
            task=o.task,
            duration=o.duration,
            warmup=o.warmup,
            points=o.points,
            budget_mix=o.budget_mix,
            profile_iters=o.profile_iters,
        ),
    }
    for name, step in steps.items():
        progress(f"== bench {name} ({time.perf_counter() - started:.0f} s so far)")
        step()
    elapsed = time.perf_counter() - started
    return write_docs(out, docs, load=(load_before, _load_average()), elapsed_s=elapsed)


def _load_average() -> float | None:
    try:
        return round(os.getloadavg()[0], 2)
    except OSError:
        return None


def levels_goals(data: dict[str, Any]) -> list[dict[str, Any]]:
    """The levels goal: every level's batch-32 speed-up ≥ half its FLOP ratio."""
    rows = [r for r in data["rows"] if r["flop_ratio"] > 1]
    worst = min(rows, key=lambda r: r["speedup_batch32"] / r["flop_ratio"], default=None)
    measured = f"{sum(r['goal_met'] for r in rows)} of {len(rows)} (task, level) met"
    if worst is not None:
        measured += (
            f"; worst {worst['task']} level {worst['level']}: {worst['speedup_batch32']}x "
            f"at FLOP ratio {worst['flop_ratio']}"
        )
    return [
        {
            "goal": "speed-up over the top level at batch 32 ≥ half the FLOP ratio, every level",
            "measured": measured,
            "met": bool(rows) and all(r["goal_met"] for r in rows),
        }
    ]


def goals(out: Path) -> list[dict[str, Any]]:
    """Every goal of the parts whose JSON is in ``out``, each tagged with its part."""
    found: list[dict[str, Any]] = []
    readers = {"levels": levels_goals, "memory": memory.goals, "budgets": budgets.goals}
    for part, reader in readers.items():
        file = out / f"{part}.json"
        if file.exists():
            found += [{"part": part, **g} for g in reader(json.loads(file.read_text()))]
    return found


def write_docs(
    out: str | Path,
    docs: str | Path,
    *,
    load: tuple[float | None, float | None] = (None, None),
    elapsed_s: float | None = None,
) -> Path:
    """Assemble ``docs`` from the markdown and PNGs in ``out`` (PNGs copied to the folder
    named like the page, links rewritten to it); also ``summary.json``/``.md`` in ``out``."""
    out, docs = Path(out), Path(docs)
    images = docs.parent / docs.stem
    images.mkdir(parents=True, exist_ok=True)
    found = goals(out)
    when = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    took = "" if elapsed_s is None else f" in {elapsed_s / 60:.1f} min"
    lines = [
        "# Benchmarks",
        "",
        f"Generated by `dvn bench all` on {when}{took}. {machine_line()} One-minute load "
        f"average before the run {load[0]}, after {load[1]}: figures are only comparable "
        "from a quiet machine (nothing else running; load average well under the core count).",
        "",
        "## Goals",
        "",
        "| part | goal | measured | |",
        "|---|---|---|---|",
    ]
    for g in found:
        met = "met" if g["met"] else "**NOT met**"
        lines.append(f"| {g['part']} | {g['goal']} | {g['measured']} | {met} |")
    for part in PARTS:
        md = out / f"{part}.md"
        if not md.exists():
            continue
        text = md.read_text()
        png = out / f"{part}.png"
        if png.exists():
            shutil.copy2(png, images / png.name)
            link = f"{images.name}/{png.name}"
            if f"]({png.name})" in text:
                text = text.replace(f"]({png.name})", f"]({link})")
            else:
                text = text.rstrip("\n") + f"\n\n![{part}]({link})\n"
        lines += ["", text.rstrip("\n")]
    page = "\n".join(lines) + "\n"
    docs.write_text(page)
    write_report(out, "summary", {"goals": found, "load_average": list(load)}, page)
    return docs
