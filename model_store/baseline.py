"""The paper's comparison: every (task, level) of a DVN against a separately trained
network of exactly the same parameter count (the level's architecture as a one-task,
one-unit DVN, trained alone with the same recipe)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from model_store.arch import Backbone, DVNConfig
from model_store.checkpoint import read_manifest
from model_store.costs import level_params
from model_store.evaluate import accuracy_of
from model_store.model import DVN
from model_store.presets import TrainConfig
from model_store.train import fit, load_tasks, pick_device


def train_baselines(
    checkpoint_dir: str | Path, config: TrainConfig, device: str = "auto", progress: bool = True
) -> Path:
    """Train the separate networks, write ``baseline.json``, ``baseline.md`` and
    ``baseline.png`` next to the checkpoint, and return the markdown file's path."""
    out = Path(checkpoint_dir)
    manifest = read_manifest(out)
    dev = pick_device(device)
    data = {d.spec.name: d for d in load_tasks(config)}
    rows: list[dict[str, Any]] = []
    for task in manifest.tasks:
        held = data[task.name]
        for lv in task.levels:
            torch.manual_seed(config.seed)
            net = DVN(
                DVNConfig(
                    backbone=Backbone.from_dict(manifest.architecture.backbone).scaled(
                        len(lv.units)
                    ),
                    tasks=(held.spec,),
                    unit_orders=((0,),),
                    arch_name=f"separate-{task.name}-level{lv.level}",
                )
            )
            params = level_params(net, 0, 1)
            assert params == lv.params, (params, lv.params)  # same size by construction
            fit(
                net,
                [held],
                config,
                dev,
                desc=f"separate {task.name} L{lv.level}",
                progress=progress,
            )
            acc = accuracy_of(net, 0, 1, held.x_test, held.y_test, dev)
            rows.append(
                {
                    "task": task.name,
                    "level": lv.level,
                    "params": lv.params,
                    "dvn_accuracy": None if lv.accuracy is None else lv.accuracy.value,
                    "separate_accuracy": round(acc, 4),
                }
            )
    dvn_total = (out / "weights.safetensors").stat().st_size
    separate_total = sum(r["params"] for r in rows) * 4
    report = {
        "checkpoint": manifest.name,
        "rows": rows,
        "dvn_weights_bytes": dvn_total,
        "separate_networks_bytes": separate_total,
        "memory_ratio": round(separate_total / dvn_total, 2),
    }
    (out / "baseline.json").write_text(json.dumps(report, indent=2) + "\n")
    md = out / "baseline.md"
    md.write_text(_markdown(report))
    _plot(rows, out / "baseline.png")
    return md


def _markdown(report: dict[str, Any]) -> str:
    lines = [
        f"# DVN vs separate networks: {report['checkpoint']}",
        "",
        "| task | level | params | DVN accuracy | separate network accuracy | difference |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for r in report["rows"]:
        dvn = r["dvn_accuracy"]
        diff = "" if dvn is None else f"{(dvn - r['separate_accuracy']) * 100:+.1f} pt"
        dvn_s = "-" if dvn is None else f"{dvn:.4f}"
        lines.append(
            f"| {r['task']} | {r['level']} | {r['params']:,} | {dvn_s} | "
            f"{r['separate_accuracy']:.4f} | {diff} |"
        )
    lines += [
        "",
        f"One DVN checkpoint: {report['dvn_weights_bytes']:,} bytes of weights; separate "
        f"networks for every (task, level): {report['separate_networks_bytes']:,} bytes "
        f"({report['memory_ratio']}x).",
        "",
    ]
    return "\n".join(lines)


def _plot(rows: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import NullFormatter

    tasks = sorted({r["task"] for r in rows}, key=[r["task"] for r in rows].index)
    fig, axes = plt.subplots(1, len(tasks), figsize=(4.5 * len(tasks), 3.6), squeeze=False)
    for ax, task in zip(axes[0], tasks, strict=True):
        mine = [r for r in rows if r["task"] == task]
        params = [r["params"] for r in mine]
        ax.plot(params, [r["separate_accuracy"] for r in mine], "s--", label="separate networks")
        if all(r["dvn_accuracy"] is not None for r in mine):
            ax.plot(params, [r["dvn_accuracy"] for r in mine], "o-", label="DVN levels")
        ax.set_xscale("log")
        ax.xaxis.set_minor_formatter(NullFormatter())  # minor labels overlap on a short axis
        ax.set_title(task)
        ax.set_xlabel("parameters")
        ax.set_ylabel("held-out accuracy")
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
