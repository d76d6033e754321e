"""Goodput under overload: does a real ``dvn serve`` keep answering within budget once the
offered load passes its capacity, shedding only the excess?

First the level-1 capacity is measured (closed loop, ``capacity_clients`` workers, level 1
pinned, no budget: the most answers a second the server gives). Then every request carries
one latency budget the idle server meets easily (``budget``, 10 ms by default), with the
server choosing the level, in two sweeps:

- closed loop at 1x, 2x, 4x, 8x and 16x the capacity concurrency (``capacity_clients``
  workers); no worker honours Retry-After, as not every client does;
- open loop (Poisson) at 50%, 90%, 100%, 150%, 200% and 400% of the capacity.

Per point: goodput (answers whose budget was met, per second), answers per second,
refusals by status (429, 503, 504) and other failures (timeouts, broken connections),
p99 latency of the answered requests and the share of them that met the budget. The
goals (issue 18) are computed over the overload points (every closed-loop point, the
open-loop ones from 100%): goodput at least ``GOAL_GOODPUT_SHARE`` of the goodput at 90%
open-loop load, and at least ``GOAL_MET_SHARE`` of the answered requests within budget.

    md = run_overload(None, "bench/results")   # the shipped demo checkpoint

``server_args`` go to ``dvn serve`` as they are (``--server-args "--workers 4"``).
"""

from __future__ import annotations

import math
import tempfile
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench._common import cpu_times, machine_line, steal_share, write_report
from bench._process import dvn_serve, wait_idle
from bench.peers import closed_loop, fmt, percentile_ms, progress
from clients._report import LoadReport
from clients.loadtest import LoadTestConfig, run_loadtest
from server.priority import renice

GOAL_GOODPUT_SHARE = 0.8  # of the goodput at 90% open-loop load
GOAL_MET_SHARE = 0.95  # of the answered requests
REFERENCE_LOAD = 0.9  # the open-loop point the goodput goal is measured against
REFUSALS = (429, 503, 504)


@dataclass(frozen=True)
class OverloadOptions:
    """What to sweep and how long each point runs.

    Raises:
        ValueError: a factor, load or duration out of range.
    """

    task: str = "digits"
    budget: str = "10ms"
    duration: float = 3.0
    warmup: float = 0.5
    capacity_duration: float | None = None  # default: ``duration``
    capacity_clients: int = 16
    factors: tuple[int, ...] = (1, 2, 4, 8, 16)
    loads: tuple[float, ...] = (0.5, 0.9, 1.0, 1.5, 2.0, 4.0)
    max_outstanding: int = 1024  # open loop: arrivals past it are not sent (counted)
    timeout: float = 10.0
    profile_iters: int = 5
    server_args: tuple[str, ...] = ()
    # Added to this process's niceness once the server is up (for the rest of its run):
    # clients standing in for other machines need not go before the engine on shared cores.
    client_nice: int = 0
    progress: bool = True

    def __post_init__(self) -> None:
        checks = [
            (self.duration > 0, f"duration must be > 0 s, got {self.duration}"),
            (self.warmup >= 0, f"warmup must be >= 0 s, got {self.warmup}"),
            (self.capacity_clients >= 1, f"capacity clients must be >= 1, got {self.capacity_clients}"),
            (bool(self.factors) and min(self.factors) >= 1, f"factors must be >= 1, got {self.factors}"),
            (
                bool(self.loads) and min(self.loads) > 0 and all(map(math.isfinite, self.loads)),
                f"loads must be > 0, got {self.loads}",
            ),
        ]  # fmt: skip
        for ok, message in checks:
            if not ok:
                raise ValueError(message)


def point(report: LoadReport) -> dict[str, Any]:
    """One sweep point's figures from its load-test report."""
    window = max(report.duration_s, 1e-9)
    statuses = Counter(o.status for o in report.outcomes if o.kind != "ok")
    refused = {str(s): statuses[s] for s in REFUSALS}
    return {
        "offered_rps": round(report.offered_rate, 1),
        "sent": report.sent,
        "not_sent": report.not_sent,
        "ok": report.ok,
        "met": report.met,
        "goodput_rps": round(report.goodput_rate, 1),
        "ok_rps": round(report.achieved_rate, 1),
        "refused": refused,
        "refused_rps": {s: round(n / window, 1) for s, n in refused.items()},
        "other_failures": report.errors + report.timeouts - sum(refused.values()),
        "errors_by_type": report.errors_by_type,
        "p99_ms": percentile_ms(report.latency_ms, "p99"),
        "met_share": round(report.met / report.ok, 4) if report.ok else None,
        "levels": {t: {str(k): v for k, v in c.items()} for t, c in report.levels.items()},
    }


def _run_point(url: str, o: OverloadOptions, seed: int, **load: Any) -> dict[str, Any]:
    wait_idle(url)
    before = cpu_times()
    report = run_loadtest(
        LoadTestConfig(
            url=url,
            duration=o.duration,
            warmup=o.warmup,
            budget_mix=f"{o.budget}:1",
            task_mix=f"{o.task}:1",
            seed=seed,
            timeout=o.timeout,
            max_outstanding=o.max_outstanding,
            progress=o.progress,
            **load,
        )
    )
    row = point(report)
    row["steal"] = steal_share(before, cpu_times())
    return row


def goals(data: dict[str, Any]) -> list[dict[str, Any]]:
    """The two goals of issue 18 as rows (goal, measured, met)."""
    rows = data["rows"]
    reference = next((r for r in rows if r["mode"] == "open" and r["load"] == REFERENCE_LOAD), None)
    overload = [r for r in rows if r["mode"] == "closed" or r["load"] >= 1.0]
    goal = (
        f"goodput ≥ {GOAL_GOODPUT_SHARE:.0%} of the goodput at {REFERENCE_LOAD:.0%} load, "
        "every overload point"
    )
    found = []
    if reference is None:
        measured = f"not measured: no open-loop point at {REFERENCE_LOAD:.0%} in this sweep"
        found.append({"goal": goal, "measured": measured, "met": False})
    elif overload:
        base = reference["goodput_rps"]
        worst = min(overload, key=lambda r: r["goodput_rps"])
        share = worst["goodput_rps"] / base if base else 0.0
        found.append(
            {
                "goal": goal,
                "measured": f"worst {worst['label']}: {worst['goodput_rps']:.1f} vs "
                f"{base:.1f} met/s ({share:.0%})",
                "met": share >= GOAL_GOODPUT_SHARE,
            }
        )
    if overload:
        shares = [(r["met_share"] or 0.0, r) for r in overload]
        share, worst = min(shares, key=lambda s: s[0])
        found.append(
            {
                "goal": f"≥ {GOAL_MET_SHARE:.0%} of answered requests within budget, "
                "every overload point",
                "measured": f"worst {worst['label']}: {share:.1%} of {worst['ok']}",
                "met": share >= GOAL_MET_SHARE,
            }
        )
    return found


def run_overload(
    checkpoint: str | Path | None, out: str | Path, options: OverloadOptions | None = None
) -> Path:
    """Measure, write ``overload.json``, ``overload.md`` and ``overload.png``; return the .md.

    Raises:
        ValueError: the checkpoint has no such task.
    """
    from server.settings import demo_checkpoint

    o = options or OverloadOptions()
    path = Path(checkpoint or demo_checkpoint())
    env = {"DVN_PROFILE_ITERS": str(o.profile_iters)}
    rows: list[dict[str, Any]] = []
    with (
        tempfile.TemporaryDirectory() as tmp,
        dvn_serve(path, Path(tmp) / "dvn.log", *o.server_args, env=env) as server,
    ):
        client_nice = renice(o.client_nice, variable="--client-nice")
        capacity = closed_loop(
            server.url,
            o.task,
            1,
            o.capacity_clients,
            o.capacity_duration or o.duration,
            o.warmup,
        )
        if capacity["ok"] == 0:
            raise RuntimeError(f"no answer at level 1 of {o.task!r} while measuring capacity")
        rps = capacity["rps"]
        _say(o, f"overload: level-1 capacity {rps} req/s at {o.capacity_clients} clients")
        sweep: list[tuple[str, float, dict[str, Any]]] = [
            ("closed", f, {"mode": "closed", "concurrency": f * o.capacity_clients})
            for f in o.factors
        ]
        sweep += [("open", x, {"mode": "open", "rate": max(x * rps, 1.0)}) for x in o.loads]
        for i, (mode, x, load) in enumerate(sweep):
            row = _run_point(server.url, o, seed=i, **load)
            if mode == "closed":
                label = f"{x:g}x ({load['concurrency']} clients)"
                row |= {"mode": mode, "factor": x, "clients": load["concurrency"]}
            else:
                label = f"{x:.0%} ({load['rate']:.0f} req/s)"
                row |= {"mode": mode, "load": x, "rate": round(load["rate"], 1)}
            row["label"] = f"{mode} {label}"
            rows.append(row)
            refused = "  ".join(f"{s} {n}/s" for s, n in row["refused_rps"].items())
            _say(
                o,
                f"overload: {i + 1}/{len(sweep)} {row['label']:28} met {row['goodput_rps']:8.1f}/s"
                f"  ok {row['ok_rps']:8.1f}/s  {refused}  p99 {fmt(row['p99_ms'])} ms  "
                f"met/ok {_pct(row['met_share'])}",
            )
    data = {
        "task": o.task,
        "budget": o.budget,
        "duration_s": o.duration,
        "warmup_s": o.warmup,
        "server_args": list(o.server_args),
        "client_nice": client_nice,
        "capacity": {"rps": rps, "clients": o.capacity_clients, "level": 1},
        "rows": rows,
    }
    data["goals"] = goals(data)
    md = write_report(out, "overload", data, _markdown(data))
    _plot(data, Path(out) / "overload.png")
    return md


def _say(o: OverloadOptions, line: str) -> None:
    if o.progress:
        progress(line)


def _nice(d: dict[str, Any]) -> str:
    nice = d.get("client_nice", 0)
    return f"; the load generator at niceness {nice} (`--client-nice`)" if nice else ""


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{x:.1%}"


def _markdown(d: dict[str, Any]) -> str:
    cap = d["capacity"]
    args = f" with `dvn serve {' '.join(d['server_args'])}`" if d["server_args"] else ""
    lines = [
        "## Goodput under overload",
        "",
        f"{machine_line()} A real `dvn serve`{args} on loopback, task `{d['task']}`, every "
        f"request with budget `{d['budget']}` and the level left to the server; "
        f"{d['duration_s']:g} s measured per point after {d['warmup_s']:g} s of warm-up, from "
        f"an idle server{_nice(d)}. Level-1 capacity: {cap['rps']} req/s (closed loop, {cap['clients']} "
        "clients, level 1 pinned, no budget). Closed-loop points are multiples of those "
        "clients (no Retry-After honoured), open-loop points fractions of that rate. "
        "Goodput: answers within budget per second; refusals per second by status; p99 and "
        "met/ok of the answered requests; other: timeouts, broken connections and other "
        "errors; not sent: open-loop arrivals the load generator dropped with "
        "`max_outstanding` requests in flight (counted in the offered rate).",
        "",
        "| point | offered req/s | not sent | goodput met/s | ok/s | 429/s | 503/s | 504/s "
        "| other | p99 ms (answered) | met / ok |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in d["rows"]:
        refused = " | ".join(str(r["refused_rps"][str(s)]) for s in REFUSALS)
        lines.append(
            f"| {r['label']} | {r['offered_rps']} | {r['not_sent']} | {r['goodput_rps']} "
            f"| {r['ok_rps']} "
            f"| {refused} | {r['other_failures']} | {fmt(r['p99_ms'])} "
            f"| {_pct(r['met_share'])} |"
        )
    lines += ["", "| goal | measured | |", "|---|---|---|"]
    for g in d["goals"]:
        lines.append(f"| {g['goal']} | {g['measured']} | {'met' if g['met'] else 'NOT met'} |")
    lines += ["", "![overload](overload.png)"]
    return "\n".join(lines) + "\n"


def _plot(d: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cap = d["capacity"]["rps"]
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5), sharey=True)
    for ax, mode in zip(axes, ("closed", "open"), strict=True):
        mine = [r for r in d["rows"] if r["mode"] == mode]
        if mode == "closed":
            xs = [r["clients"] for r in mine]
            ax.set_xscale("log", base=2)
            ax.set_xticks(xs, [str(x) for x in xs])
            ax.minorticks_off()
            ax.set_xlabel(f"closed-loop clients ({d['capacity']['clients']} = 1x)")
        else:
            xs = [100 * r["offered_rps"] / max(cap, 1e-9) for r in mine]
            ax.set_xlabel("offered load, % of level-1 capacity")
        ax.plot(xs, [r["goodput_rps"] for r in mine], "o-", lw=2, label="goodput (met/s)")
        ax.plot(xs, [r["ok_rps"] for r in mine], "s--", label="answered (ok/s)")
        for status in REFUSALS:
            ax.plot(xs, [r["refused_rps"][str(status)] for r in mine], ".:", label=f"{status}/s")
        ax.axhline(cap, color="grey", ls=":", label="level-1 capacity")
        ax.set_title(f"{mode} loop, budget {d['budget']}")
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("requests/s")
    axes[1].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
