"""One (task, level) of a DVN as the layers it uses: the one walk over a level.

:meth:`model_store.model.DVN.active` returns an :class:`ActiveLevel`: its stem, its blocks
in order (each a residual block of two or three convolutions) and its head, every
convolution with the batch norm after it and the channel sets of its rows (outputs) and
columns (inputs) in the full-width weight. Everything that walks a level reads it: the
model's forward, :class:`~model_store.inference.LevelPlan` (folds each convolution with its
norm), :mod:`model_store.costs` (counts them) and :mod:`model_store.export` (copies them out),
as once-for-all's ``get_active_subnet`` does. It holds references, not copies: reading it
changes nothing. The forward builds one on every call, so these are plain slotted
dataclasses (a frozen one costs three times as much to build); treat them as read-only.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import torch.nn.functional as F
from torch import Tensor, nn

from model_store.layers import ChannelSet, Norm2d, UnitConv2d, take


@dataclass(slots=True)
class ActiveConv:
    """A convolution of a level and the norm after it: the level uses rows ``out`` and
    columns ``inp`` of ``conv``'s weight (``inp`` ``None``: every input channel, as a stem
    takes the whole image)."""

    conv: UnitConv2d
    norm: Norm2d
    out: ChannelSet
    inp: ChannelSet | None

    def __call__(self, x: Tensor) -> Tensor:
        # x: (B, |inp|, H, W) -> (B, |out|, H / stride, W / stride), normalised
        y: Tensor = self.norm(self.conv(x, self.out, self.inp))
        return y

    @property
    def stride(self) -> int:
        return self.conv.stride

    @property
    def padding(self) -> int:
        return self.conv.padding

    def weight(self) -> Tensor:
        """The level's block of the weight: ``(|out|, |inp|, k, k)``, a view where it can."""
        return take(take(self.conv.weight, 0, self.out), 1, self.inp)

    def params(self) -> int:
        """Numbers of the level's block of the convolution's weight (not its norm)."""
        return self.conv.level_params(self.out, self.inp)


@dataclass(slots=True)
class ActiveBlock:
    """A residual block of a level: ``relu(conv2(relu(conv1(x))) + shortcut(x))``, the
    shortcut being ``project`` (a strided or widening 1x1 convolution) or ``x`` itself."""

    stage: int
    conv1: ActiveConv
    conv2: ActiveConv
    project: ActiveConv | None

    def __call__(self, x: Tensor) -> Tensor:
        # x: (B, |inp|, H, W) -> (B, |out|, H / stride, W / stride)
        y = self.conv2(F.relu(self.conv1(x)))
        if self.project is not None:
            x = self.project(x)
        return F.relu(y + x)

    def convs(self) -> Iterator[ActiveConv]:
        """Its convolutions in order: conv1, conv2, then the projection if any."""
        yield self.conv1
        yield self.conv2
        if self.project is not None:
            yield self.project


@dataclass(slots=True)
class ActiveLevel:
    """Every layer one (task, level) uses, in the order its forward runs them."""

    task: int
    level: int
    stem: ActiveConv
    blocks: tuple[ActiveBlock, ...]
    head: nn.Linear  # (classes, |last stage|), on the pooled features

    def convs(self) -> Iterator[ActiveConv]:
        """Every convolution, each with its norm: the stem, then each block's."""
        yield self.stem
        for block in self.blocks:
            yield from block.convs()

    def trunk(self) -> Iterator[ActiveConv]:
        """The shared trunk's convolutions: every block's (not the task's own stem)."""
        for block in self.blocks:
            yield from block.convs()
