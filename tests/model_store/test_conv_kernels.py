"""conv_kernels: a plan's convolution gives F.conv2d's output on either CPU kernel, runs the
direct kernel below its geometry's measured crossover and oneDNN from it, and measures each
geometry once."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor
from torch.profiler import profile

from model_store import conv_kernels
from model_store.conv_kernels import MAX_TUNED, conv2d, geometry, tune

WEIGHT = torch.randn(12, 6, 3, 3, generator=torch.Generator().manual_seed(0))
BIAS = torch.randn(12, generator=torch.Generator().manual_seed(1))


@pytest.fixture(autouse=True)
def fresh_crossovers(monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[tuple[int, ...], int]]:
    table: dict[tuple[int, ...], int] = {}
    monkeypatch.setattr(conv_kernels, "_crossovers", table)
    yield table


def kernels_run(x: Tensor) -> set[str]:
    with torch.inference_mode(), profile() as prof:
        conv2d(x, WEIGHT, BIAS, 2, 1)
    names = {e.key for e in prof.key_averages()}
    return names & {"aten::thnn_conv2d", "aten::mkldnn_convolution"}


@pytest.mark.parametrize("batch", [1, 2, 3, 7, 33])
@pytest.mark.parametrize("crossover", [2, 8, 10**6])
def test_either_kernel_gives_f_conv2ds_output(
    fresh_crossovers: dict[tuple[int, ...], int], batch: int, crossover: int
) -> None:
    x = torch.randn(batch, 6, 16, 16, generator=torch.Generator().manual_seed(batch))
    fresh_crossovers[geometry(x, WEIGHT, 2, 1)] = crossover
    with torch.inference_mode():
        got = conv2d(x, WEIGHT, BIAS, 2, 1)
    torch.testing.assert_close(got, F.conv2d(x, WEIGHT, BIAS, 2, 1), rtol=1e-4, atol=1e-5)
    assert got.shape == (batch, 12, 8, 8)


@pytest.mark.skipif(not torch.backends.mkldnn.is_available(), reason="no oneDNN in this torch")
def test_direct_kernel_below_the_crossover_onednn_from_it(
    fresh_crossovers: dict[tuple[int, ...], int],
) -> None:
    def x(batch: int) -> Tensor:
        return torch.randn(batch, 6, 16, 16)

    fresh_crossovers[geometry(x(1), WEIGHT, 2, 1)] = 8
    assert kernels_run(x(2)) == {"aten::thnn_conv2d"}
    assert kernels_run(x(7)) == {"aten::thnn_conv2d"}
    assert kernels_run(x(8)) == {"aten::mkldnn_convolution"}
    assert kernels_run(x(32)) == {"aten::mkldnn_convolution"}


def fake_timer(
    direct: Callable[[int], float], onednn: Callable[[int], float], calls: list[tuple[str, int]]
) -> conv_kernels.Timer:
    def timer(kernel: str, size: int, run: Callable[[], Tensor]) -> float:
        calls.append((kernel, size))
        return direct(size) if kernel == "direct" else onednn(size)

    return timer


def test_tune_picks_the_first_of_two_sizes_in_a_row_where_onednn_wins() -> None:
    calls: list[tuple[str, int]] = []
    # direct 10 us an example, oneDNN 100 us a call + 1 us an example: oneDNN from 12
    timer = fake_timer(lambda b: 10e-6 * b, lambda b: 100e-6 + 1e-6 * b, calls)
    assert tune(WEIGHT, BIAS, 2, 1, (6, 16, 16), timer) == 16
    # it stops at the second win (32): larger sizes are never timed
    assert calls == [(k, b) for b in (2, 4, 8, 16, 32) for k in ("direct", "onednn")]


def test_tune_needs_two_wins_in_a_row() -> None:
    # one noisy win at 4, then direct again at 8: not the crossover
    wins = {4, 16, 32}
    timer = fake_timer(lambda b: 1.0, lambda b: 0.5 if b in wins else 2.0, [])
    assert tune(WEIGHT, BIAS, 2, 1, (6, 16, 16), timer) == 16


def test_tune_when_onednn_never_or_only_last_wins() -> None:
    never = fake_timer(lambda b: 1.0, lambda b: 2.0, [])
    assert tune(WEIGHT, BIAS, 2, 1, (6, 16, 16), never) == 2 * MAX_TUNED
    last = fake_timer(lambda b: 1.0, lambda b: 0.5 if b == MAX_TUNED else 2.0, [])
    assert tune(WEIGHT, BIAS, 2, 1, (6, 16, 16), last) == MAX_TUNED


def test_each_geometry_is_measured_once(
    fresh_crossovers: dict[tuple[int, ...], int], monkeypatch: pytest.MonkeyPatch
) -> None:
    tuned: list[tuple[int, ...]] = []
    real = conv_kernels.tune

    def counting(weight: Tensor, *args: object, **kwargs: object) -> int:
        tuned.append(tuple(weight.shape))
        return real(weight, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(conv_kernels, "tune", counting)
    with torch.inference_mode():
        for batch in (1, 2, 5, 2, 9):
            conv2d(torch.randn(batch, 6, 16, 16), WEIGHT, BIAS, 2, 1)
        conv2d(torch.randn(3, 6, 8, 8), WEIGHT, BIAS, 2, 1)  # another input size: measured
    assert tuned == [(12, 6, 3, 3), (12, 6, 3, 3)]
    assert len(fresh_crossovers) == 2
    assert all(2 <= c <= 2 * MAX_TUNED for c in fresh_crossovers.values())
    assert conv_kernels.crossovers() == fresh_crossovers


def test_without_a_direct_kernel_every_batch_runs_f_conv2d(
    fresh_crossovers: dict[tuple[int, ...], int], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(conv_kernels, "_direct", None)
    x = torch.randn(4, 6, 16, 16)
    with torch.inference_mode():
        got = conv2d(x, WEIGHT, BIAS, 2, 1)
    torch.testing.assert_close(got, F.conv2d(x, WEIGHT, BIAS, 2, 1))
    assert fresh_crossovers == {}  # nothing measured
