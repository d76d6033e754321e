"""One (task, level) of a DVN prepared for inference: the level's weight slices copied out
once, contiguous, with its private batch normalisation folded into the convolutions.

    plan = LevelPlan.build(model, task=0, level=2)
    logits = plan(x)      # == model(x, 0, 2) in eval mode, to float rounding

The DVN's own forward slices the full-width weights on every call (a copy for every
convolution whose input channels are a slice) and runs a batch norm after each convolution:
at the demo's sizes that fixed cost, not the arithmetic, is most of a small level's time. A
plan holds ``level_params`` worth of weights (the level's share, not the whole network) and
runs one convolution with a bias where the model runs a convolution and a batch norm, on the
faster CPU kernel for the batch size (``model_store.conv_kernels``).

A plan is a snapshot: built from the model's weights at that moment in eval semantics
(running statistics), it does not follow later changes to them; build it again after
training. It never changes the model, so the model stays pure and plans of several levels
can run at once.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from model_store.active import ActiveConv
from model_store.conv_kernels import conv2d
from model_store.model import DVN


@dataclass(frozen=True)
class FoldedConv:
    """A convolution with the batch norm after it folded in: ``weight`` (out, in, k, k)
    scaled per output channel, ``bias`` (out,)."""

    weight: Tensor
    bias: Tensor
    stride: int
    padding: int

    @classmethod
    def fold(cls, conv: ActiveConv) -> FoldedConv:
        norm = conv.norm
        scale = norm.weight / torch.sqrt(norm.running_var + norm.eps)  # (out,)
        weight = (conv.weight() * scale.view(-1, 1, 1, 1)).contiguous()
        bias = (norm.bias - norm.running_mean * scale).contiguous()
        return cls(weight, bias, conv.stride, conv.padding)

    def __call__(self, x: Tensor) -> Tensor:
        return conv2d(x, self.weight, self.bias, self.stride, self.padding)


@dataclass(frozen=True)
class FoldedBlock:
    conv1: FoldedConv
    conv2: FoldedConv
    project: FoldedConv | None

    def __call__(self, x: Tensor) -> Tensor:
        # x: (B, |inp|, H, W) -> (B, |out|, H / stride, W / stride)
        y = self.conv2(self.conv1(x).relu_())
        y += x if self.project is None else self.project(x)
        return y.relu_()


@dataclass(frozen=True)
class LevelPlan:
    """The inference forward of one (task, level): logits ``(B, classes)`` of ``x``
    ``(B, C, H, W)``; the input shape is not checked (the model's forward checks it)."""

    task: int
    level: int
    stem: FoldedConv
    blocks: tuple[FoldedBlock, ...]
    head_weight: Tensor  # (classes, |last stage|)
    head_bias: Tensor  # (classes,)

    @classmethod
    def build(cls, model: DVN, task: str | int, level: int) -> LevelPlan:
        """The plan of ``(task, level)`` from ``model``'s weights now.

        Raises:
            KeyError: unknown task. ValueError: level out of range.
        """
        active = model.active(task, level)
        with torch.no_grad():
            stem = FoldedConv.fold(active.stem)
            blocks = tuple(
                FoldedBlock(
                    FoldedConv.fold(block.conv1),
                    FoldedConv.fold(block.conv2),
                    None if block.project is None else FoldedConv.fold(block.project),
                )
                for block in active.blocks
            )
            head_weight = active.head.weight.detach().clone()
            head_bias = active.head.bias.detach().clone()
        return cls(active.task, level, stem, blocks, head_weight, head_bias)

    def __call__(self, x: Tensor) -> Tensor:
        h = self.stem(x).relu_()  # (B, w0*l/k, H, W)
        for block in self.blocks:
            h = block(h)
        pooled = h.mean(dim=(2, 3))  # (B, w_last*l/k)
        return F.linear(pooled, self.head_weight, self.head_bias)  # (B, classes)

    @property
    def nbytes(self) -> int:
        """Bytes of the weights this plan holds."""
        tensors = [self.stem.weight, self.stem.bias, self.head_weight, self.head_bias]
        for b in self.blocks:
            for conv in (b.conv1, b.conv2, b.project):
                if conv is not None:
                    tensors += [conv.weight, conv.bias]
        return sum(t.numel() * t.element_size() for t in tensors)
