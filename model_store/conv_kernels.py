"""Which CPU kernel runs a plan's convolution, by batch size.

On the CPU, PyTorch runs a convolution of more than one example with oneDNN, and one of a
single example with aten's direct kernel (im2col and a GEMM per example, ``thnn_conv2d``) or
with oneDNN, by a heuristic of its own (kept: timing the two at one example too made no
level faster, docs/decisions.md). oneDNN's fixed cost per call (most of it outside the
kernel itself: the primitive, the weight and output reorders) is most of the time of a
small convolution, so a batch of two used to cost a small level several times a batch of
one (docs/decisions.md has the figures). The direct kernel's cost grows with the batch
instead.

So each convolution geometry (channels, kernel, stride, padding, input size, device threads)
has a crossover: batches below it run the direct kernel, from it oneDNN. It is measured the
first time a convolution of that geometry runs in the process (cudnn.benchmark's idea, and
like it kept for the process): both kernels timed, best of ``REPEATS``, at batch sizes
2, 4, 8, ... up to ``MAX_TUNED``, until oneDNN is the faster at two sizes in a row. The two
kernels compute the same convolution, to float rounding (a batch of one runs as
``F.conv2d`` always has). Off the CPU, or where aten has no direct kernel, the
convolution always runs as ``F.conv2d`` does.
"""

from __future__ import annotations

import functools
import threading
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

MAX_TUNED = 64  # the largest batch size timed; a crossover above it is kept as 2 * MAX_TUNED
REPEATS = 3

# (out, in, kh, kw, stride, padding, height, width, bytes per element, threads) -> the
# smallest batch size oneDNN runs
_crossovers: dict[tuple[int, ...], int] = {}
_lock = threading.Lock()
_direct = getattr(getattr(torch.ops.aten, "thnn_conv2d", None), "default", None)


def direct_conv(x: Tensor, weight: Tensor, bias: Tensor, stride: int, padding: int) -> Tensor:
    """The convolution on aten's direct kernel, whatever the batch size."""
    assert _direct is not None
    k = [weight.shape[-2], weight.shape[-1]]
    out: Tensor = _direct(x, weight, k, bias, [stride, stride], [padding, padding])
    return out


def onednn_conv(x: Tensor, weight: Tensor, bias: Tensor, stride: int, padding: int) -> Tensor:
    """The convolution as ``F.conv2d`` runs it (oneDNN for more than one CPU example)."""
    return F.conv2d(x, weight, bias, stride, padding)


def conv2d(x: Tensor, weight: Tensor, bias: Tensor, stride: int, padding: int) -> Tensor:
    """``F.conv2d(x, weight, bias, stride, padding)`` on the faster kernel for ``x``'s batch
    size (see the module's docstring)."""
    if _direct is None or x.device.type != "cpu" or x.shape[0] < 2:
        return onednn_conv(x, weight, bias, stride, padding)
    key = geometry(x, weight, stride, padding)
    crossover = _crossovers.get(key)
    if crossover is None:
        crossover = tune(weight, bias, stride, padding, tuple(x.shape[1:]))
        with _lock:
            _crossovers[key] = crossover
    run = direct_conv if x.shape[0] < crossover else onednn_conv
    return run(x, weight, bias, stride, padding)


def geometry(x: Tensor, weight: Tensor, stride: int, padding: int) -> tuple[int, ...]:
    """What a convolution's crossover depends on (the key of the crossovers measured)."""
    return (
        *weight.shape,
        stride,
        padding,
        *x.shape[2:],
        x.element_size(),
        torch.get_num_threads(),
    )


Timer = Callable[[str, int, Callable[[], Tensor]], float]


def best_of(kernel: str, size: int, run: Callable[[], Tensor]) -> float:
    """Seconds of ``run`` (``kernel`` at batch ``size``): best of ``REPEATS`` after one
    untimed call."""
    run()  # first call: allocation, oneDNN primitive creation
    best = float("inf")
    for _ in range(REPEATS):
        started = time.perf_counter()
        run()
        best = min(best, time.perf_counter() - started)
    return best


def tune(
    weight: Tensor,
    bias: Tensor,
    stride: int,
    padding: int,
    example_shape: tuple[int, ...],
    timer: Timer = best_of,
) -> int:
    """The smallest batch size from which oneDNN runs this convolution faster than the
    direct kernel: the first of two sizes in a row (2, 4, 8, ...) where it does, by
    ``timer``; ``2 * MAX_TUNED`` when it never does."""
    size, won, args = 2, [], (weight, bias, stride, padding)
    with torch.inference_mode():
        while size <= MAX_TUNED:
            x = torch.randn(size, *example_shape, device=weight.device, dtype=weight.dtype)
            direct = timer("direct", size, functools.partial(direct_conv, x, *args))
            onednn = timer("onednn", size, functools.partial(onednn_conv, x, *args))
            won.append(onednn < direct)
            if won[-2:] == [True, True]:
                return size // 2
            size *= 2
    return size // 2 if won[-1] else 2 * MAX_TUNED


def crossovers() -> dict[tuple[int, ...], int]:
    """The crossovers measured so far in this process (a copy), for reports and tests."""
    with _lock:
        return dict(_crossovers)
