"""What each (task, level) costs, computed from the model's real shapes.

``params`` counts every number a level needs at inference: the shared-trunk blocks it uses,
its task's stem rows, its private normalisation (affine weights and running statistics)
and its head; exactly what an export of that level stores. ``param_bytes`` is that at the
stored dtype. ``flops`` is multiply-adds x 2 per example, counted by running the level on
one example under :class:`torch.utils.flop_counter.FlopCounterMode`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch.utils.flop_counter import FlopCounterMode

from model_store.layers import UnitConv2d
from model_store.model import DVN


@dataclass(frozen=True)
class LevelCost:
    task: str
    level: int
    units: tuple[int, ...]
    params: int
    param_bytes: int
    flops: int

    def to_dict(self) -> dict[str, Any]:
        return {
            "level": self.level,
            "units": list(self.units),
            "params": self.params,
            "param_bytes": self.param_bytes,
            "flops": self.flops,
        }


def dtype_size(dtype: str) -> int:
    return int(torch.empty(0, dtype=getattr(torch, dtype)).element_size())


def trunk_params(model: DVN, task: int, level: int) -> int:
    """Parameters of the shared trunk's convolutions that ``(task, level)`` uses."""
    return sum(conv.params() for conv in model.active(task, level).trunk())


def level_params(model: DVN, task: int, level: int) -> int:
    """Every number ``(task, level)`` needs at inference (see the module docstring)."""
    active = model.active(task, level)
    total = sum(conv.params() + conv.norm.level_params() for conv in active.convs())
    return total + sum(p.numel() for p in active.head.parameters())


def level_flops(model: DVN, task: int, level: int) -> int:
    """Multiply-adds x 2 of one example through ``(task, level)``."""
    shape = model.config.tasks[task].input_shape
    param = next(model.parameters())
    x = torch.zeros(1, *shape, dtype=param.dtype, device=param.device)
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            model(x, task, level)
    finally:
        model.train(was_training)
    return int(counter.get_total_flops())


def level_costs(model: DVN) -> list[LevelCost]:
    """Costs of every (task, level), tasks in order, levels ascending."""
    cfg = model.config
    size = dtype_size(cfg.dtype)
    costs = []
    for t, spec in enumerate(cfg.tasks):
        for level in range(1, cfg.num_levels + 1):
            params = level_params(model, t, level)
            costs.append(
                LevelCost(
                    task=spec.name,
                    level=level,
                    units=tuple(cfg.unit_orders[t][:level]),
                    params=params,
                    param_bytes=params * size,
                    flops=level_flops(model, t, level),
                )
            )
    return costs


def unit_param_bytes(model: DVN) -> dict[int, int]:
    """Bytes of the shared weights each unit owns: the rows (output channels) of every
    trunk convolution and every task's stem that belong to the unit."""
    cfg = model.config
    size = dtype_size(cfg.dtype)
    k = cfg.num_units
    total = sum(conv.weight.numel() for _, block in model.blocks() for conv in block.convs())
    total += sum(stem.weight.numel() for stem in model.stems if isinstance(stem, UnitConv2d))
    return {u: total // k * size for u in range(k)}
