"""Unit-sliced layers: weights allocated at full width, a level computed on a channel set.

A channel set is a ``slice`` when the level's units are contiguous (the paper's orders
always are) and a 1-D index tensor otherwise. Nothing here changes module state in eval
mode, so two levels can run at the same time from two threads.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

ChannelSet = slice | Tensor  # slice for contiguous units, LongTensor index otherwise


def take(weight: Tensor, dim: int, channels: ChannelSet | None) -> Tensor:
    """``weight`` restricted to ``channels`` along ``dim`` (all of it when ``None``)."""
    if channels is None:
        return weight
    if isinstance(channels, slice):
        return weight.narrow(dim, channels.start, channels.stop - channels.start)
    return weight.index_select(dim, channels)


def count(channels: ChannelSet | None, full: int) -> int:
    """Number of channels in a channel set of a layer with ``full`` channels."""
    if channels is None:
        return full
    if isinstance(channels, slice):
        return int(channels.stop - channels.start)
    return int(channels.numel())


class UnitConv2d(nn.Module):
    """A bias-free convolution whose level uses the sub-matrix of its channel sets."""

    def __init__(self, in_channels: int, out_channels: int, kernel: int, stride: int = 1) -> None:
        super().__init__()
        self.stride = stride
        self.padding = kernel // 2
        self.weight = nn.Parameter(torch.empty(out_channels, in_channels, kernel, kernel))
        nn.init.kaiming_normal_(self.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: Tensor, out: ChannelSet | None, inp: ChannelSet | None) -> Tensor:
        # x: (B, |inp|, H, W) -> (B, |out|, H', W')
        w = take(take(self.weight, 0, out), 1, inp)
        return F.conv2d(x, w, None, self.stride, self.padding)

    def level_params(self, out: ChannelSet | None, inp: ChannelSet | None) -> int:
        c_out, c_in, kh, kw = self.weight.shape
        return count(out, c_out) * count(inp, c_in) * kh * kw


class Norm2d(nn.Module):
    """Batch normalisation of one (task, level): affine weights and running statistics."""

    def __init__(self, channels: int, momentum: float = 0.1, eps: float = 1e-5) -> None:
        super().__init__()
        self.momentum = momentum
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))
        self.running_mean: Tensor
        self.running_var: Tensor
        self.register_buffer("running_mean", torch.zeros(channels))
        self.register_buffer("running_var", torch.ones(channels))

    def forward(self, x: Tensor) -> Tensor:
        return F.batch_norm(
            x,
            self.running_mean,
            self.running_var,
            self.weight,
            self.bias,
            self.training,
            self.momentum,
            self.eps,
        )

    def level_params(self) -> int:
        return 4 * self.weight.numel()  # weight, bias, running mean and variance


class LevelNorms(nn.Module):
    """Private normalisation of every (task, level) of one layer (slimmable networks:
    statistics differ by width, so each width keeps its own)."""

    def __init__(self, width: int, num_tasks: int, num_units: int) -> None:
        super().__init__()
        self.num_levels = num_units
        self.norms = nn.ModuleList(
            Norm2d(width // num_units * level)
            for _ in range(num_tasks)
            for level in range(1, num_units + 1)
        )

    def at(self, task: int, level: int) -> Norm2d:
        norm = self.norms[task * self.num_levels + level - 1]
        assert isinstance(norm, Norm2d)
        return norm


def init_head(head: nn.Linear) -> None:
    """Small uniform init for a classifier head."""
    bound = 1.0 / math.sqrt(head.in_features)
    nn.init.uniform_(head.weight, -bound, bound)
    nn.init.zeros_(head.bias)
