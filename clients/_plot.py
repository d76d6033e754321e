"""The load-test figure: latency CDF, rates over time (ok, met: the goodput, and failed),
level mix over time, budget attainment over time."""

from __future__ import annotations

import math
import os
from collections import Counter, defaultdict
from pathlib import Path

from clients._report import LoadReport


def _bin_width(duration_s: float) -> float:
    return max(0.25, duration_s / 40)


def plot_report(report: LoadReport, path: str | os.PathLike[str]) -> Path:
    """Write the four-panel figure of ``report`` to ``path`` (PNG, or any format
    matplotlib infers from the suffix) and return the path."""
    import matplotlib

    matplotlib.use("Agg")  # no display; must precede pyplot
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FuncFormatter

    out = Path(path)
    fig, ((ax_cdf, ax_rates), (ax_levels, ax_budget)) = plt.subplots(2, 2, figsize=(13, 8.5))
    title = (
        f"{report.config.get('mode', '')} loop, {report.ok} ok of {report.sent} sent, "
        f"{report.goodput_rate:.1f}/s met (goodput)"
    )
    fig.suptitle(f"dvn loadtest: {title}")

    if report.latency_cdf:
        ax_cdf.plot([ms for _, ms in report.latency_cdf], [p / 100 for p, _ in report.latency_cdf])
        ax_cdf.set_xscale("log")
        ax_cdf.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
        # Minor ticks labelled at 2 and 5 of each decade only: all eight overlap.
        ax_cdf.xaxis.set_minor_formatter(FuncFormatter(_two_and_five))
    ax_cdf.set(xlabel="latency (ms)", ylabel="fraction of ok requests", title="latency CDF")
    ax_cdf.grid(True, which="both", alpha=0.3)

    width = _bin_width(report.duration_s)
    bins = max(1, int(report.duration_s / width + 0.999))
    per_level: dict[int, Counter[int]] = defaultdict(Counter)
    met: dict[str, Counter[int]] = defaultdict(Counter)
    seen: dict[str, Counter[int]] = defaultdict(Counter)
    rates: dict[str, Counter[int]] = defaultdict(Counter)  # ok, met, failed by start
    for o in report.outcomes:
        b = min(max(int(o.start / width), 0), bins - 1)
        if o.kind != "ok":
            rates["failed"][b] += 1
            continue
        rates["ok"][b] += 1
        rates["met (goodput)"][b] += bool(o.met)
        per_level[o.level or 0][b] += 1
        if o.met is not None:
            seen[o.budget][b] += 1
            met[o.budget][b] += o.met
    times = [(b + 0.5) * width for b in range(bins)]
    for name, style in (("ok", "-"), ("met (goodput)", "-"), ("failed", "--")):
        ax_rates.plot(times, [rates[name][b] / width for b in range(bins)], style, label=name)
    ax_rates.legend(loc="upper right", fontsize="small")
    ax_rates.set(xlabel="time (s)", ylabel="requests/s (by send time)", title="rates")
    ax_rates.set_ylim(bottom=0)
    ax_rates.grid(True, alpha=0.3)

    totals = [sum(per_level[lv][b] for lv in per_level) for b in range(bins)]
    if per_level:
        levels = sorted(per_level)
        shares = [
            [per_level[lv][b] / totals[b] if totals[b] else 0.0 for b in range(bins)]
            for lv in levels
        ]
        ax_levels.stackplot(times, shares, labels=[f"level {lv}" for lv in levels])
        ax_levels.legend(loc="upper right", fontsize="small")
    ax_levels.set(xlabel="time (s)", ylabel="share of ok responses", title="level mix", ylim=(0, 1))

    for spec in sorted(seen):
        xs = [t for t, b in zip(times, range(bins), strict=True) if seen[spec][b]]
        ys = [met[spec][b] / seen[spec][b] for b in range(bins) if seen[spec][b]]
        ax_budget.plot(xs, ys, marker=".", label=spec)
    if seen:
        ax_budget.legend(loc="lower right", fontsize="small")
    ax_budget.set(
        xlabel="time (s)", ylabel="met / ok", title="budget attainment", ylim=(-0.02, 1.02)
    )
    ax_budget.grid(True, alpha=0.3)

    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return out


def _two_and_five(value: float, _: object) -> str:
    """A log axis's minor tick label: the value at 2x and 5x a power of ten, else none."""
    if value <= 0:
        return ""
    leading = value / 10 ** math.floor(math.log10(value))
    return f"{value:g}" if round(leading) in (2, 5) else ""
