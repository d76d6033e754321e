"""The report of ``dvn bench scale`` (:mod:`bench.scale`): its markdown and its plot, from
the data written to ``scale.json``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from bench._common import machine_line
from bench.peers import fmt


def pct(x: float | None) -> str:
    return "-" if x is None else f"{x:.1%}"


def _table(head: list[str], rows: list[list[Any]]) -> list[str]:
    return ["| " + " | ".join(head) + " |", "|" + "---|" * len(head), *(
        "| " + " | ".join("-" if v is None else str(v) for v in row) + " |" for row in rows
    ), ""]  # fmt: skip


def _cells(r: dict[str, Any]) -> list[Any]:
    """A run's figures as table cells, from answers/s to the p99."""
    return [r["ok_rps"], r["goodput_rps"], pct(r["met_share"]), fmt(r["p50_ms"]), fmt(r["p99_ms"])]


def _tail(r: dict[str, Any]) -> list[Any]:
    errors = ", ".join(f"{k} {v}" for k, v in sorted(r["errors"].items()))
    return [errors or "-", pct(r["steal"])]


def markdown(d: dict[str, Any]) -> str:
    o, lat = d["options"], d["latency"]
    mix = [item.split(":")[0].strip() for item in o["budget_mix"].split(",")]
    budgets = [b for b in mix if d["replicas"] and b in d["replicas"][0]["budgets"]]
    few = min(o["replicas"])
    deploys = ", ".join(f"{k} {v} s" for k, v in d["deploy_s"].items())
    figures = ["ok/s", "goodput met/s", "met/ok", "p50 ms", "p99 ms"]
    lines = [
        "## Scale-out on Ray Serve", "",
        f"{machine_line()} Checkpoint `{d['checkpoint']}`. One local Ray session (up in "
        f"{d['ray_start_s']} s); each application deployed fresh, previous one deleted (to "
        f"ready: {deploys}). Budget mix `{o['budget_mix']}`, tasks "
        f"`{o['task_mix'] or 'every task'}`, {o['duration']:g} s measured per run after "
        f"{o['warmup']:g} s of warm-up. Met: the server's verdict, its clock started by the "
        "ingress (Ray's proxy hop before it is in p50/p99, not in met). Steal: CPU time the "
        "hypervisor took.", "",
        f"### Ray path overhead at concurrency 1 (`{d['task']}`, level {d['level']} pinned)", "",
        f"One closed-loop client, no budget; {o['latency_rounds']} turns of "
        f"{o['duration'] / 2:g} s each, the two servers in turn, answers pooled.", "",
        *_table(["server", "answers", "req/s", "p50 ms", "p99 ms"], [
            [label, lat[k]["ok"], lat[k]["ok_rps"], fmt(lat[k]["p50_ms"]), fmt(lat[k]["p99_ms"])]
            for k, label in (("direct", "`dvn serve`"), ("ray", f"Ray Serve, {few} replica{'s' * (few > 1)}"))
        ]),
        f"Ray path overhead: p50 {lat['ray']['p50_ms'] - lat['direct']['p50_ms']:+.2f} ms, "
        f"p99 {lat['ray']['p99_ms'] - lat['direct']['p99_ms']:+.2f} ms per request.", "",
        f"### Throughput and budget attainment by replicas ({o['clients']} closed-loop clients, "
        "BudgetRouter)", "",
        *_table(["replicas", *figures, *(f"met/ok {b}" for b in budgets), "errors", "steal"], [
            [r["replicas"], *_cells(r), *(pct(r["budgets"].get(b)) for b in budgets), *_tail(r)]
            for r in d["replicas"]
        ]),
    ]  # fmt: skip
    if d["routers"]:
        lines += [
            f"### BudgetRouter against Ray's power of two choices ({max(o['replicas'])} replicas)",
            "", f"Open loop, the same Poisson arrivals in every run ({d['skew_rate']} req/s); "
            f"skewed: one replica (the first to start) sleeps {o['slow_ms']:g} ms in every "
            "forward. Its share: of the requests the replicas counted (warm-up included), those "
            "it got, slowed or not (balanced: 50% is an even split).", "",
            *_table(["router", "load", "offered req/s", *figures, "its share", "errors", "steal"], [
                [r["router"], "skewed" if r["skew"] else "balanced", r["offered_rps"], *_cells(r),
                 pct(r["slow_share"]), *_tail(r)] for r in d["routers"]
            ]),
        ]  # fmt: skip
    return "\n".join([*lines, f"Verdict: {d['verdict']}.", "", "![scale](scale.png)", ""])


def plot(d: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (a, b, c) = plt.subplots(1, 3, figsize=(15, 4.5))
    lat, x = d["latency"], np.arange(2)
    for i, q in enumerate(("p50_ms", "p99_ms")):
        a.bar(x + 0.4 * i - 0.2, [lat["direct"][q], lat["ray"][q]], 0.4, label=q[:3])
    a.set_xticks(x, ["dvn serve", "Ray Serve"])
    a.set(title=f"concurrency 1, {d['task']} level {d['level']}", ylabel="ms")
    reps = [r["replicas"] for r in d["replicas"]]
    b.plot(reps, [r["ok_rps"] for r in d["replicas"]], "s--", label="answered (ok/s)")
    b.plot(reps, [r["goodput_rps"] for r in d["replicas"]], "o-", label="goodput (met/s)")
    b.set_xticks(reps)
    b.set_ylim(bottom=0)
    b.set(
        title=f"{d['options']['clients']} clients, closed loop", xlabel="replicas", ylabel="req/s"
    )
    labels = [f"{r['router']}\n{'skewed' if r['skew'] else 'balanced'}" for r in d["routers"]]
    x = np.arange(len(labels))
    c.bar(x - 0.2, [r["goodput_rps"] for r in d["routers"]], 0.4, label="goodput (met/s)")
    c.set_xticks(x, labels)
    c.set(title="routers, same arrivals", ylabel="met/s")
    c2 = c.twinx()
    c2.bar(x + 0.2, [r["p99_ms"] or 0 for r in d["routers"]], 0.4, color="tab:red", label="p99 ms")
    c2.set_ylabel("p99 ms")
    for ax in (a, b, c, c2):
        ax.legend(fontsize=8, loc="upper right" if ax is c2 else "upper left")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
