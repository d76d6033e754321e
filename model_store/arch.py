"""Architecture descriptions: the backbone registry and the frozen :class:`DVNConfig`
that a checkpoint stores and the model is rebuilt from."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from model_store.tasks import TaskSpec
from model_store.units import UnitSet, paper_orders, validate_order


@dataclass(frozen=True)
class Backbone:
    """A residual CNN trunk: ``widths[s]`` channels and ``blocks[s]`` basic blocks in stage
    ``s`` (stride 2 between stages), every width split into ``num_units`` equal units."""

    widths: tuple[int, ...]
    blocks: tuple[int, ...]
    num_units: int

    def __post_init__(self) -> None:
        if self.num_units < 1:
            raise ValueError(f"num_units must be at least 1, got {self.num_units}")
        if not self.widths or len(self.widths) != len(self.blocks):
            raise ValueError(
                f"widths {self.widths} and blocks {self.blocks} must be non-empty and of equal length"
            )
        for w in self.widths:
            if w < self.num_units or w % self.num_units:
                raise ValueError(
                    f"stage width {w} must be a positive multiple of num_units={self.num_units} "
                    "so that every unit gets the same number of channels"
                )
        if any(b < 1 for b in self.blocks):
            raise ValueError(f"every stage needs at least one block, got {self.blocks}")

    def scaled(self, units: int) -> Backbone:
        """The backbone of a level with ``units`` units, as a single-unit network."""
        return Backbone(
            widths=tuple(w // self.num_units * units for w in self.widths),
            blocks=self.blocks,
            num_units=1,
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "widths": list(self.widths),
            "blocks": list(self.blocks),
            "num_units": self.num_units,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Backbone:
        return cls(
            widths=tuple(int(w) for w in d["widths"]),
            blocks=tuple(int(b) for b in d["blocks"]),
            num_units=int(d["num_units"]),
        )


ARCHITECTURES: dict[str, Backbone] = {
    # A few seconds an epoch on a laptop CPU: for tests.
    "resnet-tiny": Backbone(widths=(8, 16), blocks=(1, 1), num_units=4),
    # The shipped demo: small enough to train in minutes on 2 CPU cores.
    "resnet-demo": Backbone(widths=(24, 48, 96), blocks=(1, 1, 1), num_units=4),
    # The standard checkpoint (32x32 inputs): one wide block a stage, 1.5 M parameters at
    # the top level. Few, wide layers keep a small level's CPU time near its FLOP share at
    # batch 1 (per-layer overhead and narrow GEMMs floor it); see docs/training.md.
    "wrn-standard": Backbone(widths=(128, 128, 256), blocks=(1, 1, 1), num_units=4),
    # Its shape at 1/8 the width: for tests of the standard preset.
    "wrn-standard-tiny": Backbone(widths=(16, 16, 32), blocks=(1, 1, 1), num_units=4),
    # The paper's CIFAR setting (Table 1): WRN-32-4, (32 - 2) / 6 = 5 blocks a stage, 2 units.
    "wrn-32-4": Backbone(widths=(64, 128, 256), blocks=(5, 5, 5), num_units=2),
    # The paper's Tiny-ImageNet backbone, 4 units.
    "resnet-42": Backbone(widths=(64, 128, 256, 512), blocks=(5, 5, 5, 5), num_units=4),
}


def get_architecture(name: str) -> Backbone:
    """Look up a named backbone.

    Raises:
        ValueError: listing the valid names.
    """
    try:
        return ARCHITECTURES[name]
    except KeyError:
        valid = ", ".join(sorted(ARCHITECTURES))
        raise ValueError(f"unknown architecture {name!r}; valid names: {valid}") from None


@dataclass(frozen=True)
class DVNConfig:
    """Everything needed to rebuild a DVN: backbone, tasks and each task's unit order."""

    backbone: Backbone
    tasks: tuple[TaskSpec, ...]
    unit_orders: tuple[tuple[int, ...], ...]
    arch_name: str = "custom"
    dtype: str = "float32"

    def __post_init__(self) -> None:
        if not self.tasks:
            raise ValueError("a DVN needs at least one task")
        names = [t.name for t in self.tasks]
        if len(set(names)) != len(names):
            raise ValueError(f"task names must be unique, got {names}")
        if len(self.unit_orders) != len(self.tasks):
            raise ValueError(
                f"{len(self.unit_orders)} unit orders for {len(self.tasks)} tasks; give one per task"
            )
        for task, order in zip(self.tasks, self.unit_orders, strict=True):
            validate_order(order, self.backbone.num_units, task.name)
        if self.dtype not in ("float32", "float16", "bfloat16"):
            raise ValueError(f"dtype must be float32, float16 or bfloat16, got {self.dtype!r}")

    @classmethod
    def create(
        cls,
        backbone: Backbone,
        tasks: Sequence[TaskSpec],
        unit_orders: Sequence[Sequence[int]] | None = None,
        arch_name: str = "custom",
    ) -> DVNConfig:
        """Build a config, with the paper's adjacency orders when none are given."""
        k = backbone.num_units
        if unit_orders is None:
            orders = paper_orders(k, len(tasks))
        else:
            if len(unit_orders) != len(tasks):
                raise ValueError(
                    f"{len(unit_orders)} unit orders for {len(tasks)} tasks; give one per task"
                )
            orders = tuple(
                validate_order(o, k, t.name) for o, t in zip(unit_orders, tasks, strict=True)
            )
        return cls(backbone=backbone, tasks=tuple(tasks), unit_orders=orders, arch_name=arch_name)

    @property
    def num_units(self) -> int:
        return self.backbone.num_units

    @property
    def num_levels(self) -> int:
        """Levels per task: one per unit, as in the paper (``n_h = k``)."""
        return self.backbone.num_units

    def task_index(self, task: str | int) -> int:
        """Index of a task given by name or index.

        Raises:
            KeyError: naming the valid tasks.
        """
        if isinstance(task, int):
            if 0 <= task < len(self.tasks):
                return task
        else:
            for i, t in enumerate(self.tasks):
                if t.name == task:
                    return i
        valid = ", ".join(t.name for t in self.tasks)
        raise KeyError(f"unknown task {task!r}; this model serves: {valid}")

    def check_level(self, level: int) -> int:
        """``level`` if it is one of every task's levels, ``1..num_levels``.

        Raises:
            ValueError: naming the level and the range (the one level-range check).
        """
        if not 1 <= level <= self.num_levels:
            raise ValueError(f"level {level} is outside 1..{self.num_levels}")
        return level

    def unit_set(self, task: str | int, level: int) -> UnitSet:
        """Units held by ``level`` (1-based) of ``task``."""
        self.check_level(level)
        order = self.unit_orders[self.task_index(task)]
        return UnitSet.of(order[:level], self.num_units)

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.arch_name,
            "backbone": self.backbone.to_dict(),
            "dtype": self.dtype,
        }
