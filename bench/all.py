"""``dvn bench all``: every benchmark in one run (levels, serve, peers, memory, budgets,
goodput under overload, and the load generator's own cost by HTTP transport) into
one ``--out`` folder, then ``docs/benchmarks.md``: the machine, a table of every goal with
its measured value and met / NOT met, every part's markdown, and its plots (PNGs copied next
to the page, under ``docs/benchmarks/``), and the hand-written ``docs/benchmarks/analysis.md``
after the goals. ``summary.json`` in ``--out`` holds the goals."""

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

from bench import budgets, memory, overload
from bench._common import cpu_times, machine_line, steal_share, write_report
from bench.peers import progress

PARTS = ("levels", "serve", "peers", "memory", "budgets", "overload", "transport")
# Kept next to the page's plots and written by hand (profiles, reasons): placed after the
# goals table on every run, so that regenerating the page does not drop it.
ANALYSIS = "analysis.md"


@dataclass(frozen=True)
class SuiteOptions:
    """What every part runs with; ``duration`` is seconds per measured point."""

    task: str = "shapes"
    duration: float = 5.0
    warmup: float = 1.0
    clients: tuple[int, ...] = (1, 16, 64)
    peer_levels: tuple[str, ...] = ("top", "1")
    points: int = 6
    rounds: int = 2
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
    from bench.transport import run_transport

    o = options or SuiteOptions()
    load_before = _load_average()
    cpu_before = cpu_times()
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
            rounds=o.rounds,
        ),
        "overload": lambda: overload.run_overload(
            checkpoint,
            out,
            overload.OverloadOptions(
                duration=min(o.duration, 3.0),
                warmup=min(o.warmup, 0.5),
                profile_iters=o.profile_iters,
            ),
        ),
        "transport": lambda: run_transport(
            out,
            concurrencies=o.clients,
            duration=min(o.duration, 3.0),
            warmup=min(o.warmup, 0.5),
        ),
    }
    for name, step in steps.items():
        progress(f"== bench {name} ({time.perf_counter() - started:.0f} s so far)")
        step()
    elapsed = time.perf_counter() - started
    return write_docs(
        out,
        docs,
        load=(load_before, _load_average()),
        elapsed_s=elapsed,
        steal=steal_share(cpu_before, cpu_times()),
    )


def _load_average() -> float | None:
    try:
        return round(os.getloadavg()[0], 2)
    except OSError:
        return None


def levels_goals(data: dict[str, Any]) -> list[dict[str, Any]]:
    """The levels goals: every level's speed-up over the top level ≥ half its FLOP ratio,
    at batch 32 and at batch 1."""
    rows = [r for r in data["rows"] if r["flop_ratio"] > 1]
    found = []
    for batch, met_key in ((32, "goal_met"), (1, "goal_met_batch1")):
        speedup = f"speedup_batch{batch}"
        worst = min(rows, key=lambda r: r[speedup] / r["flop_ratio"], default=None)
        measured = f"{sum(r[met_key] for r in rows)} of {len(rows)} (task, level) met"
        if worst is not None:
            measured += (
                f"; worst {worst['task']} level {worst['level']}: {worst[speedup]}x "
                f"at FLOP ratio {worst['flop_ratio']}"
            )
        found.append(
            {
                "goal": f"speed-up over the top level at batch {batch} ≥ half the FLOP ratio, "
                "every level",
                "measured": measured,
                "met": bool(rows) and all(r[met_key] for r in rows),
            }
        )
    return found


def serve_goals(data: dict[str, Any]) -> list[dict[str, Any]]:
    """The overhead goal: p50 of HTTP minus the in-process forward ≤ 1 ms at level 1,
    concurrency 1."""
    row = next((r for r in data["levels"] if r["level"] == 1), None)
    goal = "p50 overhead (HTTP − in-process forward) ≤ 1 ms, level 1, concurrency 1"
    if row is None:
        return []
    measured = f"{row['overhead_p50_ms']:.2f} ms (HTTP p50 {row['e2e_p50_ms']:.2f} ms)"
    return [{"goal": goal, "measured": measured, "met": row["overhead_p50_ms"] <= 1.0}]


def peers_goals(data: dict[str, Any], levels: dict[str, Any] | None) -> list[dict[str, Any]]:
    """Throughput at the most clients measured (64 in a full run), top level: ≥ 2x
    LitServe's, and ≥ 0.7x what the raw batched forward computes (batch 32, the server's
    own forward, from the levels part)."""
    rows = data["rows"]
    if not rows:
        return []
    top = max(r["level"] for r in rows)
    clients = max(r["clients"] for r in rows)
    at = {r["server"]: r for r in rows if r["level"] == top and r["clients"] == clients}
    ours, theirs = at.get("dvn-serve"), at.get("litserve")
    found = []
    if ours is not None and theirs is not None:
        ratio = ours["rps"] / theirs["rps"] if theirs["rps"] else float("inf")
        found.append(
            {
                "goal": f"requests/s at {clients} clients ≥ 2x LitServe's, top level",
                "measured": f"{ours['rps']:.1f} vs {theirs['rps']:.1f} req/s: {ratio:.2f}x",
                "met": ratio >= 2.0,
            }
        )
    raw = None
    if levels is not None:
        raw = next(
            (
                r
                for r in levels["rows"]
                if r["task"] == data["task"] and r["level"] == top and r["flop_ratio"] == 1.0
            ),
            None,
        )
    if ours is not None and raw is not None:
        raw_rps = 32 / (raw["ms_batch32"] / 1e3)
        ratio = ours["rps"] / raw_rps
        found.append(
            {
                "goal": f"requests/s at {clients} clients ≥ 0.7x the raw batched forward "
                "(batch 32), top level",
                "measured": f"{ours['rps']:.1f} vs {raw_rps:.0f} examples/s: {ratio:.2f}x",
                "met": ratio >= 0.7,
            }
        )
    return found


def goals(out: Path) -> list[dict[str, Any]]:
    """Every goal of the parts whose JSON is in ``out``, each tagged with its part."""
    found: list[dict[str, Any]] = []

    def read(part: str) -> dict[str, Any] | None:
        file = out / f"{part}.json"
        return json.loads(file.read_text()) if file.exists() else None

    readers: dict[str, Callable[[dict[str, Any]], list[dict[str, Any]]]] = {
        "levels": levels_goals,
        "serve": serve_goals,
        "peers": lambda data: peers_goals(data, read("levels")),
        "memory": memory.goals,
        "budgets": budgets.goals,
        "overload": overload.goals,
    }
    for part, reader in readers.items():
        data = read(part)
        if data is not None:
            found += [{"part": part, **g} for g in reader(data)]
    return found


def write_docs(
    out: str | Path,
    docs: str | Path,
    *,
    load: tuple[float | None, float | None] = (None, None),
    elapsed_s: float | None = None,
    steal: float | None = None,
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
        f"average before the run {load[0]}, after {load[1]}"
        + ("" if steal is None else f"; CPU time stolen by the hypervisor during it {steal:.1%}")
        + ": figures are only comparable from a quiet machine (nothing else running; load "
        "average well under the core count; little CPU stolen).",
        "",
        "## Goals",
        "",
        "| part | goal | measured | |",
        "|---|---|---|---|",
    ]
    for g in found:
        met = "met" if g["met"] else "**NOT met**"
        lines.append(f"| {g['part']} | {g['goal']} | {g['measured']} | {met} |")
    analysis = images / ANALYSIS
    if analysis.exists():  # hand-written: what stands in the way, from profiles
        lines += ["", analysis.read_text().rstrip("\n")]
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
