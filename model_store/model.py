"""The deep virtual network: one residual trunk of unit-sliced blocks serving every task at
every level, with a private stem per task and private normalisation and head per
(task, level).

``model(x, task=..., level=...)`` is pure in eval mode: it reads the level's channels out
of the full-width weights and changes no module state.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from model_store.active import ActiveBlock, ActiveConv, ActiveLevel
from model_store.arch import DVNConfig
from model_store.layers import ChannelSet, LevelNorms, UnitConv2d, init_head


def stem_stride(input_shape: tuple[int, int, int]) -> int:
    """Inputs larger than 32 pixels a side are halved by the stem; smaller ones are not."""
    return 1 if min(input_shape[1:]) <= 32 else 2


class BasicBlock(nn.Module):
    """conv3x3-norm-relu-conv3x3-norm plus a (projected) shortcut, then relu: the weights at
    full width; :meth:`active` is what one level runs (``model_store.active.ActiveBlock``)."""

    def __init__(self, c_in: int, c_out: int, stride: int, num_tasks: int, num_units: int) -> None:
        super().__init__()
        self.conv1 = UnitConv2d(c_in, c_out, 3, stride)
        self.norm1 = LevelNorms(c_out, num_tasks, num_units)
        self.conv2 = UnitConv2d(c_out, c_out, 3, 1)
        self.norm2 = LevelNorms(c_out, num_tasks, num_units)
        self.project: UnitConv2d | None = None
        self.norm_project: LevelNorms | None = None
        if stride != 1 or c_in != c_out:
            self.project = UnitConv2d(c_in, c_out, 1, stride)
            self.norm_project = LevelNorms(c_out, num_tasks, num_units)

    def active(
        self, inp: ChannelSet, out: ChannelSet, task: int, level: int, stage: int
    ) -> ActiveBlock:
        """Its layers at ``(task, level)``, taking channels ``inp`` and giving ``out``."""
        project = None
        if self.project is not None and self.norm_project is not None:
            project = ActiveConv(self.project, self.norm_project.at(task, level), out, inp)
        return ActiveBlock(
            stage,
            ActiveConv(self.conv1, self.norm1.at(task, level), out, inp),
            ActiveConv(self.conv2, self.norm2.at(task, level), out, out),
            project,
        )

    def convs(self) -> list[UnitConv2d]:
        """Its convolutions at full width."""
        return [self.conv1, self.conv2] + ([self.project] if self.project is not None else [])


class DVN(nn.Module):
    """A deep virtual network built from a :class:`DVNConfig`."""

    def __init__(self, config: DVNConfig) -> None:
        super().__init__()
        self.config = config
        bb = config.backbone
        k, n_tasks = bb.num_units, len(config.tasks)
        self.stems = nn.ModuleList(
            UnitConv2d(t.input_shape[0], bb.widths[0], 3, stem_stride(t.input_shape))
            for t in config.tasks
        )
        self.stem_norms = LevelNorms(bb.widths[0], n_tasks, k)
        stages: list[nn.ModuleList] = []
        c_in = bb.widths[0]
        for s, (width, blocks) in enumerate(zip(bb.widths, bb.blocks, strict=True)):
            stage = nn.ModuleList()
            for b in range(blocks):
                stride = 2 if (s > 0 and b == 0) else 1
                stage.append(BasicBlock(c_in, width, stride, n_tasks, k))
                c_in = width
            stages.append(stage)
        self.stages = nn.ModuleList(stages)
        # A plain tuple (not registered): the forward walks it without rebuilding a list.
        self._blocks: tuple[tuple[int, BasicBlock], ...] = tuple(
            (s, block)
            for s, stage in enumerate(stages)
            for block in stage
            if isinstance(block, BasicBlock)
        )
        self.heads = nn.ModuleList(
            nn.Linear(bb.widths[-1] // k * level, t.num_classes)
            for t in config.tasks
            for level in range(1, k + 1)
        )
        for head in self.heads:
            assert isinstance(head, nn.Linear)
            init_head(head)
        # Channel set of every stage for every (task, level): slices for contiguous units,
        # index buffers (non-persistent: they follow .to(device), stay out of checkpoints)
        # for the rest. Built once here, read-only afterwards.
        self._plans: dict[tuple[int, int], tuple[ChannelSet, ...]] = {}
        for t in range(n_tasks):
            for level in range(1, k + 1):
                units = config.unit_set(t, level)
                if units.contiguous:
                    self._plans[(t, level)] = tuple(units.channel_slice(w) for w in bb.widths)
                else:
                    for s, w in enumerate(bb.widths):
                        idx = torch.tensor(units.channel_indices(w), dtype=torch.long)
                        self.register_buffer(f"_index_{t}_{level}_{s}", idx, persistent=False)
                    self._plans[(t, level)] = ()

    def channel_sets(self, task: int, level: int) -> tuple[ChannelSet, ...]:
        """Channel set of each stage for ``(task, level)``."""
        plan = self._plans[(task, level)]
        if plan:
            return plan
        return tuple(
            getattr(self, f"_index_{task}_{level}_{s}")
            for s in range(len(self.config.backbone.widths))
        )

    def head(self, task: int, level: int) -> nn.Linear:
        head = self.heads[task * self.config.num_levels + level - 1]
        assert isinstance(head, nn.Linear)
        return head

    def blocks(self) -> tuple[tuple[int, BasicBlock], ...]:
        """Every block with the index of its stage, in order."""
        return self._blocks

    def active(self, task: str | int, level: int) -> ActiveLevel:
        """The layers ``(task, level)`` uses, with their channel sets: the one walk over a
        level that the forward, plans, costs and exports read (``model_store.active``).

        Raises:
            KeyError: unknown task. ValueError: level out of range.
        """
        t = self.config.task_index(task)
        self.config.check_level(level)
        sets = self.channel_sets(t, level)
        stem = self.stems[t]
        assert isinstance(stem, UnitConv2d)
        blocks = []
        prev = sets[0]
        for s, block in self._blocks:
            blocks.append(block.active(prev, sets[s], t, level, s))
            prev = sets[s]
        return ActiveLevel(
            t,
            level,
            ActiveConv(stem, self.stem_norms.at(t, level), sets[0], None),
            tuple(blocks),
            self.head(t, level),
        )

    def forward(self, x: Tensor, task: str | int, level: int) -> Tensor:
        """Logits of ``level`` (1-based) of ``task`` for ``x`` of shape (B, C, H, W).

        Raises:
            KeyError: unknown task. ValueError: level out of range or wrong input shape.
        """
        active = self.active(task, level)
        expected = self.config.tasks[active.task].input_shape
        if x.dim() != 4 or tuple(x.shape[1:]) != expected:
            raise ValueError(
                f"task {self.config.tasks[active.task].name!r} takes inputs of shape (B, "
                f"{', '.join(map(str, expected))}), got {tuple(x.shape)}"
            )
        h = F.relu(active.stem(x))  # (B, w0*l/k, H, W)
        for block in active.blocks:
            h = block(h)
        pooled = h.mean(dim=(2, 3))  # (B, w_last*l/k)
        out: Tensor = active.head(pooled)  # (B, classes)
        return out
