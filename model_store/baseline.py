"""The paper's comparison: every (task, level) of a DVN against a separately trained
network of exactly the same parameter count (the level's architecture as a one-task,
one-unit DVN, trained alone with the same recipe)."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch

from model_store.arch import DVNConfig, get_architecture
from model_store.costs import level_params
from model_store.evaluate import accuracy_of
from model_store.manifest import read_manifest
from model_store.model import DVN
from model_store.presets import TrainConfig
from model_store.train import epoch_steps, fit, load_tasks, pick_device


def train_baselines(
    checkpoint_dir: str | Path, config: TrainConfig, device: str = "auto", progress: bool = True
) -> Path:
    """Train the separate networks, write ``baseline.json``, ``baseline.md`` and
    ``baseline.png`` next to the checkpoint, and return the markdown file's path."""
    separate = train_separate(config, device=device, progress=progress)
    return write_comparison(checkpoint_dir, separate, checkpoint_dir)


def train_separate(
    config: TrainConfig,
    device: str = "auto",
    progress: bool = True,
    only: Sequence[str] | None = None,
    on_row: Callable[[dict[str, Any]], None] | None = None,
) -> list[dict[str, Any]]:
    """Train a separate network for every (task, level) of the DVN ``config`` describes.

    Needs no trained DVN (the sizes come from the config's architecture), so it can run
    while the DVN trains. Each network learns plain cross-entropy with the config's recipe
    (in-place distillation and level weights are the DVN's and have no meaning for a
    one-level network), for as many steps as the DVN trains: a task smaller than the
    largest (digits) gets as many batches as it gets inside the DVN. ``only`` restricts
    the networks to those tasks (the step count still comes from every task), so two
    processes can share the work; ``on_row`` receives each row as soon as it is measured. Returns rows of ``task``, ``level``, ``params`` and
    ``separate_accuracy``.
    """
    dev = pick_device(device)
    recipe = config.model_copy(update={"distill": 0.0, "level_weights": None})
    tasks = load_tasks(config)
    dvn_config = DVNConfig.create(
        get_architecture(config.architecture),
        [d.spec for d in tasks],
        unit_orders=config.unit_orders,
        arch_name=config.architecture,
    )
    sizes = DVN(dvn_config)
    steps = epoch_steps(tasks, config.batch_size)  # as many steps as the DVN gives each task
    rows: list[dict[str, Any]] = []
    for t, held in enumerate(tasks):
        if only is not None and held.spec.name not in only:
            continue
        for level in range(1, dvn_config.num_levels + 1):
            torch.manual_seed(config.seed)
            net = DVN(
                DVNConfig(
                    backbone=dvn_config.backbone.scaled(level),
                    tasks=(held.spec,),
                    unit_orders=((0,),),
                    arch_name=f"separate-{held.spec.name}-level{level}",
                )
            )
            params = level_params(net, 0, 1)
            assert params == level_params(sizes, t, level)  # same size by construction
            fit(
                model=net,
                tasks=[held],
                config=recipe,
                device=dev,
                desc=f"separate {held.spec.name} L{level}",
                progress=progress,
                steps_per_epoch=steps,
            )
            acc = accuracy_of(net, 0, 1, held.x_test, held.y_test, dev)
            row = {
                "task": held.spec.name,
                "level": level,
                "params": params,
                "separate_accuracy": round(acc, 4),
            }
            rows.append(row)
            if on_row is not None:
                on_row(row)
    return rows


def write_comparison(
    checkpoint_dir: str | Path, separate: list[dict[str, Any]], out_dir: str | Path
) -> Path:
    """Join :func:`train_separate`'s rows with the checkpoint's stored accuracies; write
    ``baseline.json``, ``baseline.md`` and ``baseline.png`` into ``out_dir`` and return
    the markdown file's path.

    A level without a row (its separate network not trained yet) is reported as not
    measured.

    Raises:
        ValueError: a row's size differs from the checkpoint's level (another architecture).
    """
    ckpt = Path(checkpoint_dir)
    manifest = read_manifest(ckpt)
    by_key = {(r["task"], r["level"]): r for r in separate}
    rows: list[dict[str, Any]] = []
    for task in manifest.tasks:
        for lv in task.levels:
            row = by_key.get((task.name, lv.level))
            if row is not None and row["params"] != lv.params:
                raise ValueError(
                    f"separate network for {task.name} level {lv.level} has {row['params']:,} "
                    f"params, the checkpoint's level {lv.params:,}: trained for another "
                    "architecture; train the baseline from the checkpoint's own config"
                )
            rows.append(
                {
                    "task": task.name,
                    "level": lv.level,
                    "params": lv.params,
                    "dvn_accuracy": None if lv.accuracy is None else lv.accuracy.value,
                    "separate_accuracy": None if row is None else row["separate_accuracy"],
                }
            )
    dvn_total = (ckpt / "weights.safetensors").stat().st_size
    separate_total = sum(r["params"] for r in rows) * 4
    report = {
        "checkpoint": manifest.name,
        "rows": rows,
        "dvn_weights_bytes": dvn_total,
        "separate_networks_bytes": separate_total,
        "memory_ratio": round(separate_total / dvn_total, 2),
    }
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
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
        sep = r["separate_accuracy"]
        diff = "" if dvn is None or sep is None else f"{(dvn - sep) * 100:+.1f} pt"
        sep_s = "not measured" if sep is None else f"{sep:.4f}"
        dvn_s = "-" if dvn is None else f"{dvn:.4f}"
        lines.append(
            f"| {r['task']} | {r['level']} | {r['params']:,} | {dvn_s} | {sep_s} | {diff} |"
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
        measured = [r for r in mine if r["separate_accuracy"] is not None]
        ax.plot(
            [r["params"] for r in measured],
            [r["separate_accuracy"] for r in measured],
            "s--",
            label="separate networks",
        )
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
