"""Export one (task, level) as a standalone checkpoint (once-for-all's ``get_active_subnet``).

The exported network is a one-task, one-unit DVN whose widths are the level's widths, with
the level's weights copied out of the full-width tensors; it computes exactly what the
level computes and stores exactly the level's ``params``.
"""

from __future__ import annotations

import os

import torch

from model_store.arch import DVNConfig
from model_store.checkpoint import Checkpoint, save
from model_store.layers import Norm2d
from model_store.manifest import ExportedFrom, Manifest
from model_store.model import DVN


def _copy_norm(dst: Norm2d, src: Norm2d) -> None:
    dst.load_state_dict(src.state_dict())


def extract_level(model: DVN, task: str | int, level: int) -> DVN:
    """A standalone DVN (one task, one level) equal to ``model`` at ``(task, level)``."""
    active = model.active(task, level)
    cfg = model.config
    sub_cfg = DVNConfig(
        backbone=cfg.backbone.scaled(level),
        tasks=(cfg.tasks[active.task],),
        unit_orders=((0,),),
        arch_name=f"{cfg.arch_name}/level{level}",
        dtype=cfg.dtype,
    )
    sub = DVN(sub_cfg).to(next(model.parameters()).device)
    # The one-unit copy's only level uses every channel: its walk meets the same layers in
    # the same order, each at the level's widths.
    with torch.no_grad():
        for conv, sub_conv in zip(active.convs(), sub.active(0, 1).convs(), strict=True):
            sub_conv.conv.weight.copy_(conv.weight())
            _copy_norm(sub_conv.norm, conv.norm)
        sub.head(0, 1).load_state_dict(active.head.state_dict())
    return sub.eval()


def export_level(
    checkpoint: Checkpoint, task: str, level: int, out_dir: str | os.PathLike[str]
) -> Manifest:
    """Write ``(task, level)`` of ``checkpoint`` as a checkpoint directory at ``out_dir``.

    Raises:
        KeyError: unknown task. ValueError: level out of range.
    """
    source = checkpoint.manifest
    cfg = checkpoint.model.config
    t = cfg.task_index(task)
    sub = extract_level(checkpoint.model, t, level)
    entry = source.tasks[t].levels[level - 1]
    accuracy = {(task, 1): entry.accuracy} if entry.accuracy is not None else None
    exported = ExportedFrom(
        name=source.name,
        version=source.version,
        weights_sha256=source.weights_sha256,
        task=task,
        level=level,
        units=list(entry.units),
    )
    return save(
        sub,
        out_dir,
        name=f"{source.name}-{task}-level{level}",
        version=source.version,
        accuracy=accuracy,
        training=source.training,
        extra={"exported_from": exported},
    )
