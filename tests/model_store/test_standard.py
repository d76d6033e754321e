"""The standard preset (32x32 RGB tasks, a 1-3 M-parameter wide residual trunk) and its
quick ``standard-tiny`` variant, trained end to end."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from model_store.arch import DVNConfig, get_architecture
from model_store.checkpoint import load
from model_store.costs import level_flops, level_params
from model_store.data import TaskData
from model_store.evaluate import evaluate
from model_store.model import DVN
from model_store.presets import TrainConfig, get_preset
from model_store.train import load_tasks, train
from tests.model_store.conftest import torch_threads

TASKS = ["digits", "shapes", "textures"]
RESAMPLED = "resampled bilinearly to 32x32 and converted to RGB"
SOURCES = {
    "digits": (
        f"builtin:digits (scikit-learn load_digits, 1797 images 8x8 {RESAMPLED}; stratified "
        "80/20 split, seed 0; 1438 train / 359 test)"
    ),
    "shapes": (
        f"builtin:shapes (procedurally generated 16x16 {RESAMPLED}, seed 0; 64 train / 32 test "
        "drawn independently)"
    ),
    "textures": (
        f"builtin:textures (procedurally generated 16x16 {RESAMPLED}, seed 0; 64 train / "
        "32 test drawn independently)"
    ),
}


@pytest.fixture(scope="module")
def tiny_tasks() -> list[TaskData]:
    return load_tasks(get_preset("standard-tiny"))


@pytest.fixture(scope="module")
def standard_tiny_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("standard") / "standard-tiny"
    with torch_threads(1):
        train(get_preset("standard-tiny"), out, device="cpu", progress=False)
    return out


def test_standard_tiny_is_the_standard_recipe_at_test_size() -> None:
    standard, tiny = get_preset("standard"), get_preset("standard-tiny")
    shared = ["tasks", "input_size", "color_mode", "distill", "distill_temperature"]
    shared += ["level_weights", "augment", "unit_orders", "lr", "seed"]
    assert {f: getattr(tiny, f) for f in shared} == {f: getattr(standard, f) for f in shared}
    assert (standard.tasks, standard.input_size, standard.color_mode) == (TASKS, 32, "RGB")
    big, small = get_architecture(standard.architecture), get_architecture(tiny.architecture)
    assert (big.blocks, big.num_units) == (small.blocks, small.num_units) == ((1, 1, 1), 4)
    assert tiny.epochs == 1


def test_standard_tasks_are_32x32_rgb(tiny_tasks: list[TaskData]) -> None:
    assert [d.spec.name for d in tiny_tasks] == TASKS
    for data in tiny_tasks:
        assert data.spec.input_shape == (3, 32, 32)
        assert data.spec.preprocessing.color_mode == "RGB"
        assert data.spec.preprocessing.size == (32, 32)
        assert data.x_train.shape[1:] == data.x_test.shape[1:] == (3, 32, 32)
        assert data.source == SOURCES[data.spec.name]


def test_standard_architecture_sizes(tiny_tasks: list[TaskData]) -> None:
    config = DVNConfig.create(get_architecture("wrn-standard"), [d.spec for d in tiny_tasks])
    model = DVN(config).eval()
    for t in range(len(tiny_tasks)):
        params = [level_params(model, t, level) for level in range(1, 5)]
        flops = [level_flops(model, t, level) for level in range(1, 5)]
        assert 1_000_000 <= params[-1] <= 3_000_000, params
        assert params == sorted(params) and len(set(params)) == 4
        # (l / k)^2 of the trunk: level 1 costs about a 16th of the top level.
        assert 14 <= flops[-1] / flops[0] <= 16, flops


@pytest.mark.parametrize("arch", ["wrn-standard", "wrn-standard-tiny"])
def test_standard_forward_shapes(arch: str, tiny_tasks: list[TaskData]) -> None:
    torch.manual_seed(0)
    model = DVN(DVNConfig.create(get_architecture(arch), [d.spec for d in tiny_tasks])).eval()
    x = torch.randn(2, 3, 32, 32)  # (B, C, H, W)
    with torch.no_grad():
        for t, data in enumerate(tiny_tasks):
            for level in range(1, 5):
                out = model(x, t, level)
                assert out.shape == (2, data.spec.num_classes)
                assert torch.isfinite(out).all()


def test_standard_tiny_trains_a_loadable_checkpoint(
    standard_tiny_checkpoint: Path, tiny_tasks: list[TaskData]
) -> None:
    ckpt = load(standard_tiny_checkpoint)
    manifest = ckpt.manifest
    assert (manifest.name, manifest.architecture.name) == ("standard-tiny", "wrn-standard-tiny")
    assert [t.name for t in manifest.tasks] == TASKS
    examples = {"digits": 359, "shapes": 32, "textures": 32}
    for task in manifest.tasks:
        assert task.input_shape == [3, 32, 32]
        assert [lv.level for lv in task.levels] == [1, 2, 3, 4]
        for lv in task.levels:
            assert lv.accuracy is not None, (task.name, lv.level)
            assert lv.accuracy.data == SOURCES[task.name]
            assert lv.accuracy.examples == examples[task.name]
    training = manifest.training
    assert training is not None
    assert TrainConfig.model_validate(training["config"]) == get_preset("standard-tiny")
    assert training["objective"] == (
        "sum over tasks and levels of cross-entropy (docs/method.md); level weights "
        "[1.0, 1.0, 1.0, 2.0]"
    )
    # The stored accuracies are what the loaded weights score on the data they name.
    measured = evaluate(ckpt.model, tiny_tasks, torch.device("cpu"))
    for task in manifest.tasks:
        for lv in task.levels:
            assert lv.accuracy is not None
            assert measured[(task.name, lv.level)].value == lv.accuracy.value
