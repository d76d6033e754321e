"""Human-readable views of a checkpoint: the level table and re-measured accuracy."""

from __future__ import annotations

from typing import Any

import torch

from model_store.checkpoint import Checkpoint
from model_store.evaluate import accuracy_of
from model_store.manifest import CheckpointError, Manifest
from model_store.presets import TrainConfig


def human_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    raise AssertionError("unreachable")


def format_levels(manifest: Manifest) -> str:
    """The checkpoint's tasks and levels as a fixed-width table."""
    lines = [
        f"{manifest.name} {manifest.version}  sha256 {manifest.weights_sha256[:12]}  "
        f"architecture {manifest.architecture.name}, {manifest.num_units} units",
        f"{'task':<12}{'level':>6}  {'units':<10}{'params':>10}{'bytes':>11}{'MFLOPs':>9}{'accuracy':>10}",
    ]
    for task in manifest.tasks:
        for lv in task.levels:
            acc = "-" if lv.accuracy is None else f"{lv.accuracy.value:.4f}"
            units = ",".join(str(u) for u in lv.units)
            lines.append(
                f"{task.name:<12}{lv.level:>6}  {units:<10}{lv.params:>10,}"
                f"{human_bytes(lv.param_bytes):>11}{lv.flops / 1e6:>9.2f}{acc:>10}"
            )
    return "\n".join(lines)


def remeasure(checkpoint: Checkpoint, device: torch.device) -> list[dict[str, Any]]:
    """Re-measure every (task, level) on the held-out data its manifest records.

    Raises:
        CheckpointError: the manifest records no training data to measure on.
    """
    from model_store.train import load_tasks  # training imports data loaders: only here

    manifest = checkpoint.manifest
    if not manifest.training or "config" not in manifest.training:
        raise CheckpointError(
            f"{checkpoint.path}: the manifest records no training data, so there is nothing "
            "to re-measure on; evaluate the checkpoint it was exported from instead"
        )
    config = TrainConfig.model_validate(manifest.training["config"])
    data = {d.spec.name: d for d in load_tasks(config)}
    rows = []
    model = checkpoint.model.to(device)
    for t, task in enumerate(manifest.tasks):
        held = data[task.name]
        for lv in task.levels:
            rows.append(
                {
                    "task": task.name,
                    "level": lv.level,
                    "stored": None if lv.accuracy is None else lv.accuracy.value,
                    "measured": round(
                        accuracy_of(model, t, lv.level, held.x_test, held.y_test, device), 4
                    ),
                    "data": held.source,
                }
            )
    return rows
