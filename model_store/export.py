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
from model_store.layers import Norm2d, UnitConv2d, take
from model_store.manifest import ExportedFrom, Manifest
from model_store.model import DVN


def _copy_norm(dst: Norm2d, src: Norm2d) -> None:
    dst.load_state_dict(src.state_dict())


def extract_level(model: DVN, task: str | int, level: int) -> DVN:
    """A standalone DVN (one task, one level) equal to ``model`` at ``(task, level)``."""
    cfg = model.config
    t = cfg.task_index(task)
    if not 1 <= level <= cfg.num_levels:
        raise ValueError(f"level {level} is outside 1..{cfg.num_levels}")
    sub_cfg = DVNConfig(
        backbone=cfg.backbone.scaled(level),
        tasks=(cfg.tasks[t],),
        unit_orders=((0,),),
        arch_name=f"{cfg.arch_name}/level{level}",
        dtype=cfg.dtype,
    )
    sub = DVN(sub_cfg).to(next(model.parameters()).device)
    sets = model.channel_sets(t, level)
    with torch.no_grad():
        stem, sub_stem = model.stems[t], sub.stems[0]
        assert isinstance(stem, UnitConv2d) and isinstance(sub_stem, UnitConv2d)
        sub_stem.weight.copy_(take(stem.weight, 0, sets[0]))
        _copy_norm(sub.stem_norms.at(0, 1), model.stem_norms.at(t, level))
        prev = sets[0]
        for (s, block), (_, sub_block) in zip(model.blocks(), sub.blocks(), strict=True):
            for (conv, takes_input), (sub_conv, _) in zip(
                block.convs(), sub_block.convs(), strict=True
            ):
                inp = prev if takes_input else sets[s]
                sub_conv.weight.copy_(take(take(conv.weight, 0, sets[s]), 1, inp))
            for norms, sub_norms in zip(block.norm_layers(), sub_block.norm_layers(), strict=True):
                _copy_norm(sub_norms.at(0, 1), norms.at(t, level))
            prev = sets[s]
        sub.head(0, 1).load_state_dict(model.head(t, level).state_dict())
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
