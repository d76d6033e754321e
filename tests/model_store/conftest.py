"""Small DVNs, hand-made tasks and one trained tiny checkpoint shared by the model tests
(``tests/conftest.py``'s ``tiny_checkpoint`` has random weights; ``trained_checkpoint`` here
is the real ``tiny`` preset, trained).

Two hand-made tasks whose shapes match the built-in ``digits`` (1x8x8, 10 classes) and
``shapes`` (3x16x16, 8 classes), so cost tables measured on either agree.
"""

from __future__ import annotations

import contextlib
import shutil
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import pytest
import torch

from model_store.arch import DVNConfig, get_architecture
from model_store.model import DVN
from model_store.presets import get_preset
from model_store.tasks import Preprocessing, TaskSpec
from model_store.train import train

GRAY = TaskSpec(
    name="gray",
    classes=tuple(str(d) for d in range(10)),
    input_shape=(1, 8, 8),
    preprocessing=Preprocessing(color_mode="L", size=(8, 8), mean=(0.5,), std=(0.25,)),
)
COLOR = TaskSpec(
    name="color",
    classes=tuple(f"class-{i}" for i in range(8)),
    input_shape=(3, 16, 16),
    preprocessing=Preprocessing(
        color_mode="RGB", size=(16, 16), mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25)
    ),
)
# Level 2 of task 0 holds units {0, 2}; levels 2 and 3 of task 1 hold {1, 3} and {0, 1, 3}:
# none of them contiguous, so they take the index-gather path.
SCRAMBLED: tuple[tuple[int, ...], ...] = ((0, 2, 1, 3), (3, 1, 0, 2))

ModelFactory = Callable[..., DVN]


@pytest.fixture
def tasks() -> tuple[TaskSpec, TaskSpec]:
    return (GRAY, COLOR)


@pytest.fixture
def make_model() -> ModelFactory:
    """Build a seeded DVN in eval mode: ``make_model(arch="resnet-tiny", orders=None,
    tasks=(GRAY, COLOR))``."""

    def build(
        arch: str = "resnet-tiny",
        orders: Sequence[Sequence[int]] | None = None,
        tasks: Sequence[TaskSpec] = (GRAY, COLOR),
        seed: int = 0,
    ) -> DVN:
        torch.manual_seed(seed)
        config = DVNConfig.create(get_architecture(arch), tasks, unit_orders=orders, arch_name=arch)
        return DVN(config).eval()

    return build


@pytest.fixture
def tiny_model(make_model: ModelFactory) -> DVN:
    return make_model()


def warm_norms(model: DVN, steps: int = 3, seed: int = 1) -> DVN:
    """Put every (task, level)'s batch-norm statistics in a non-trivial state (a few
    train-mode forwards on shifted, scaled random inputs), then return to eval mode."""
    gen = torch.Generator().manual_seed(seed)
    model.train()
    with torch.no_grad():
        for t, spec in enumerate(model.config.tasks):
            for level in range(1, model.config.num_levels + 1):
                for _ in range(steps):
                    x = 2.0 * torch.randn(16, *spec.input_shape, generator=gen) + 0.7
                    model(x, t, level)
    return model.eval()


@pytest.fixture
def warm() -> Callable[[DVN], DVN]:
    return warm_norms


def inputs(spec: TaskSpec, batch: int = 5, seed: int = 2) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(batch, *spec.input_shape, generator=gen)


@pytest.fixture
def random_inputs() -> Callable[..., torch.Tensor]:
    return inputs


@contextlib.contextmanager
def torch_threads(n: int) -> Iterator[None]:
    """Run with ``n`` intra-op threads. On a shared 2-core box two threads fighting other
    jobs train the tiny preset about six times slower than one thread does."""
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread() -> Iterator[None]:
    with torch_threads(1):
        yield


@pytest.fixture(scope="session")
def trained_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``train(get_preset("tiny"))`` once per session. Read-only: copy it to change it."""
    out = tmp_path_factory.mktemp("trained") / "tiny"
    with torch_threads(1):
        train(get_preset("tiny"), out, device="cpu", progress=False)
    return out


@pytest.fixture
def trained_checkpoint_copy(trained_checkpoint: Path, tmp_path: Path) -> Path:
    dst = tmp_path / "tiny-copy"
    shutil.copytree(trained_checkpoint, dst)
    return dst
