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

The server is ``bench.transport_server``, the transports and loops ``bench.transport_measure``;
this module runs them in turn and writes the report.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
from pathlib import Path
from typing import Any

from bench._common import machine_line, write_report
from bench.transport_measure import (
    BASELINE_PATH,
    BASELINE_REV,
    Factory,
    baseline_factory,
    closed_loop,
    httpx_transport,
    loadtest,
    wire_transport,
)
from bench.transport_server import ANSWER, running, serve

__all__ = ["BASELINE_REV", "run_transport"]

BASELINE = "hand-written"
NEW = "httptools"
GOAL_RATIO = 1.3


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
    warmup: float = 0.5,
) -> Path:
    """Measure every transport at every concurrency on both paths (``PATHS``), ``rounds``
    times with the transports taking turns (``dvn loadtest``'s runs each after ``warmup``
    seconds); write transport.json and transport.md and return the .md.

    Raises:
        ValueError: ``rounds`` below 1 or ``duration`` not positive.
    """
    if rounds < 1 or duration <= 0:
        raise ValueError(f"need rounds >= 1 and duration > 0, got {rounds} and {duration}")
    factories: dict[str, Factory] = {"httpx": httpx_transport, NEW: wire_transport}
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
    with running() as url:
        for round_ in range(rounds):
            for path in PATHS:
                for clients in concurrencies:
                    turn = round_ % len(kinds)
                    for kind in kinds[turn:] + kinds[:turn]:
                        if path == "loadtest":
                            row = loadtest(url, kind, factories[kind], clients, duration, warmup)
                        else:
                            row = asyncio.run(
                                closed_loop(url, kind, factories[kind], clients, duration)
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
