"""Training: the tiny preset end to end, ``fit`` on a hand-made problem, augmentation."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from model_store.arch import DVNConfig, get_architecture
from model_store.checkpoint import load
from model_store.data import TaskData
from model_store.manifest import read_manifest
from model_store.model import DVN
from model_store.presets import TrainConfig, get_preset
from model_store.train import (
    augment,
    fit,
    level_weights,
    load_tasks,
    objective,
    task_loss,
)
from tests.model_store.conftest import GRAY

DIGITS_SOURCE = (
    "builtin:digits (scikit-learn load_digits, 1797 images 8x8; stratified 80/20 split, "
    "seed 0; 1438 train / 359 test)"
)
SHAPES_SOURCE = (
    "builtin:shapes (procedurally generated 16x16, seed 0; 400 train / 200 test drawn "
    "independently)"
)


def test_tiny_preset_writes_a_loadable_checkpoint(trained_checkpoint: Path) -> None:
    ckpt = load(trained_checkpoint)
    manifest = ckpt.manifest
    assert manifest.name == "tiny"
    assert manifest.architecture.name == "resnet-tiny"
    assert [t.name for t in manifest.tasks] == ["digits", "shapes"]
    assert [t.unit_order for t in manifest.tasks] == [[0, 1, 2, 3], [3, 2, 1, 0]]
    held_out = {"digits": (DIGITS_SOURCE, 359), "shapes": (SHAPES_SOURCE, 200)}
    for task in manifest.tasks:
        assert [lv.level for lv in task.levels] == [1, 2, 3, 4]
        for lv in task.levels:
            assert lv.accuracy is not None, (task.name, lv.level)
            assert (lv.accuracy.data, lv.accuracy.examples) == held_out[task.name]
            assert 0.0 <= lv.accuracy.value <= 1.0
    training = manifest.training
    assert training is not None
    assert training["epochs"] == 2
    assert training["seed"] == 0
    assert training["device"] == "cpu"
    assert training["data"] == {
        "digits": {"source": DIGITS_SOURCE, "n_train": 1438, "n_test": 359},
        "shapes": {"source": SHAPES_SOURCE, "n_train": 400, "n_test": 200},
    }
    assert TrainConfig.model_validate(training["config"]) == get_preset("tiny")
    assert training["duration_s"] > 0


def test_trained_checkpoint_tasks_carry_the_datas_preprocessing(trained_checkpoint: Path) -> None:
    manifest = read_manifest(trained_checkpoint)
    data = {d.spec.name: d for d in load_tasks(get_preset("tiny"))}
    for task in manifest.tasks:
        spec = data[task.name].spec
        assert task.input_shape == list(spec.input_shape)
        assert task.classes == list(spec.classes)
        assert task.preprocessing == spec.preprocessing.to_dict()


def separable_task(n: int = 64, seed: int = 0) -> TaskData:
    """Two classes told apart by the mean brightness of a 1x8x8 image."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n).astype(np.int64)
    noise = rng.normal(0.0, 0.3, (n, 1, 8, 8))
    x = (noise + (2 * y - 1)[:, None, None, None]).astype(np.float32)
    return TaskData(spec=GRAY, x_train=x, y_train=y, x_test=x, y_test=y, source="hand-made")


def summed_loss(model: DVN, data: TaskData) -> float:
    model.eval()
    x, y = torch.from_numpy(data.x_train), torch.from_numpy(data.y_train)
    with torch.no_grad():
        return sum(float(F.cross_entropy(model(x, 0, lv), y)) for lv in range(1, 5))


def gray_model() -> DVN:
    torch.manual_seed(0)
    return DVN(DVNConfig.create(get_architecture("resnet-tiny"), [GRAY]))


QUICK = TrainConfig(tasks=["hand-made"], epochs=3, batch_size=16, lr=0.05, augment="none")


def test_fit_reduces_the_summed_loss() -> None:
    data = separable_task()
    model = gray_model()
    before = summed_loss(model, data)
    fit(model, [data], QUICK, torch.device("cpu"), progress=False)
    assert not model.training
    after = summed_loss(model, data)
    assert after < before


def test_fit_is_deterministic_for_a_seed() -> None:
    data = separable_task()
    a, b = gray_model(), gray_model()
    config = QUICK.model_copy(update={"epochs": 1, "augment": "shift"})
    fit(a, [data], config, torch.device("cpu"), progress=False)
    fit(b, [data], config, torch.device("cpu"), progress=False)
    for (key, va), vb in zip(a.state_dict().items(), b.state_dict().values(), strict=True):
        assert torch.equal(va, vb), key


def test_fit_on_some_levels_leaves_the_others_statistics() -> None:
    data = separable_task()
    model = gray_model()
    norm = model.stem_norms.at(0, 4)
    fit(
        model,
        [data],
        QUICK.model_copy(update={"epochs": 1}),
        torch.device("cpu"),
        [1, 2],
        progress=False,
    )
    assert torch.equal(norm.running_mean, torch.zeros(8))
    assert torch.equal(norm.running_var, torch.ones(8))
    assert not torch.equal(model.stem_norms.at(0, 2).running_mean, torch.zeros(4))


def test_fit_stops_on_a_diverging_loss() -> None:
    data = separable_task()
    data.x_train[0, 0, 0, 0] = np.nan  # every batch that holds it gives a NaN loss
    broken = TaskData(
        spec=GRAY, x_train=data.x_train, y_train=data.y_train, x_test=data.x_test,
        y_test=data.y_test, source="nan",
    )  # fmt: skip
    config = QUICK.model_copy(update={"batch_size": 64})  # one batch: the whole set
    with pytest.raises(FloatingPointError) as info:
        fit(gray_model(), [broken], config, torch.device("cpu"), progress=False)
    assert str(info.value) == (
        "training diverged at step 0 (loss nan); lower the learning rate (now 0.05)"
    )


@pytest.mark.parametrize("mode", ["shift", "shift-flip"])
@pytest.mark.parametrize("shape", [(6, 1, 8, 8), (4, 3, 16, 16), (2, 3, 5, 7)])
def test_augment_keeps_shapes_and_changes_content(mode: str, shape: tuple[int, ...]) -> None:
    x = torch.rand(shape) + 1.0  # no zeros: any zero in the output is padding
    out = augment(x, mode, torch.Generator().manual_seed(0))
    assert out.shape == x.shape
    assert out.dtype == x.dtype
    assert not torch.equal(out, x)
    # Every output pixel is an input pixel of the same example and channel, or padding.
    for b in range(shape[0]):
        for c in range(shape[1]):
            values = set(x[b, c].flatten().tolist()) | {0.0}
            assert set(out[b, c].flatten().tolist()) <= values
    again = augment(x, mode, torch.Generator().manual_seed(0))
    assert torch.equal(out, again)


def test_augment_none_is_the_identity() -> None:
    x = torch.rand(3, 1, 8, 8)
    assert augment(x, "none", torch.Generator()) is x


def test_shift_moves_by_at_most_an_eighth() -> None:
    x = torch.zeros(64, 1, 16, 16)
    x[:, :, 8, 8] = 1.0  # one bright pixel in the middle
    out = augment(x, "shift", torch.Generator().manual_seed(3))
    moved = set()
    for b in range(64):
        (row, col) = (out[b, 0] == 1.0).nonzero()[0].tolist()
        moved.add((row - 8, col - 8))
    assert moved <= {(dy, dx) for dy in range(-2, 3) for dx in range(-2, 3)}
    assert len(moved) > 5


def test_load_tasks_sizes_only_the_generated_tasks() -> None:
    config = TrainConfig(tasks=["shapes", "digits"], n_train=20, n_test=10)
    shapes, digits = load_tasks(config)
    assert (shapes.spec.name, shapes.n_train, shapes.n_test) == ("shapes", 20, 10)
    # digits is a fixed data set: always its whole 80/20 split
    assert (digits.spec.name, digits.n_train, digits.n_test) == ("digits", 1438, 359)


def test_load_tasks_reads_paths_under_data_dir(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    np.savez(
        tmp_path / "blobs.npz",
        x=rng.random((30, 1, 8, 8)).astype(np.float32),
        y=np.arange(30) % 3,
        classes=np.array(["a", "b", "c"]),
    )
    config = TrainConfig(tasks=["blobs.npz"], data_dir=str(tmp_path))
    [blobs] = load_tasks(config)
    assert blobs.spec.classes == ("a", "b", "c")
    assert blobs.n_train + blobs.n_test == 30


# --- the objective: in-place distillation and level weights ---------------------------


def logits_of(seed: int, levels: tuple[int, ...] = (1, 2, 3, 4)) -> dict[int, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return {lv: torch.randn(6, 5, generator=gen, requires_grad=True) for lv in levels}


TARGET = torch.tensor([0, 1, 2, 3, 4, 0])


def test_task_loss_without_distillation_is_the_summed_cross_entropy() -> None:
    logits = logits_of(0)
    expected = sum(F.cross_entropy(z, TARGET) for z in logits.values())
    got = task_loss(logits, TARGET, TrainConfig(), [1.0] * 4)
    torch.testing.assert_close(got, expected)


def test_task_loss_with_level_weights() -> None:
    logits = logits_of(0)
    weights = [0.5, 0.0, 2.0, 1.0]
    expected = sum(
        w * F.cross_entropy(logits[lv], TARGET) for lv, w in zip(logits, weights, strict=True)
    )
    got = task_loss(logits, TARGET, TrainConfig(level_weights=weights), weights)
    torch.testing.assert_close(got, expected)


def test_full_distillation_teaches_small_levels_the_top_levels_predictions() -> None:
    logits = logits_of(1)
    config = TrainConfig(distill=1.0, distill_temperature=2.0)
    top = logits[4]
    soft = F.softmax(top.detach() / 2.0, dim=1)
    expected = F.cross_entropy(top, TARGET) + sum(
        4.0 * F.kl_div(F.log_softmax(logits[lv] / 2.0, dim=1), soft, reduction="batchmean")
        for lv in (1, 2, 3)
    )
    loss = task_loss(logits, TARGET, config, [1.0] * 4)
    torch.testing.assert_close(loss, expected)
    loss.backward()  # type: ignore[no-untyped-call]
    # The top level learns its own cross-entropy alone: the small levels' terms are detached.
    own = torch.autograd.grad(F.cross_entropy(top, TARGET), top)[0]
    assert top.grad is not None
    torch.testing.assert_close(top.grad, own)


def test_distillation_of_a_level_that_agrees_with_the_top_costs_nothing() -> None:
    top = torch.randn(6, 5)
    logits = {1: top.clone(), 4: top.clone()}
    config = TrainConfig(distill=1.0)
    loss = task_loss(logits, TARGET, config, [1.0] * 4)
    torch.testing.assert_close(loss, F.cross_entropy(top, TARGET))


def test_half_distillation_mixes_labels_and_the_top_level() -> None:
    logits = logits_of(2, levels=(2, 4))
    config = TrainConfig(distill=0.25)
    soft = F.softmax(logits[4].detach(), dim=1)
    kd = F.kl_div(F.log_softmax(logits[2], dim=1), soft, reduction="batchmean")
    expected = F.cross_entropy(logits[4], TARGET) + (
        0.75 * F.cross_entropy(logits[2], TARGET) + 0.25 * kd
    )
    torch.testing.assert_close(task_loss(logits, TARGET, config, [1.0] * 4), expected)


def test_level_weights_must_match_the_levels() -> None:
    assert level_weights(TrainConfig(), 4) == [1.0, 1.0, 1.0, 1.0]
    assert level_weights(TrainConfig(level_weights=[1, 1, 2, 4]), 4) == [1.0, 1.0, 2.0, 4.0]
    config = QUICK.model_copy(update={"level_weights": [1.0, 2.0]})
    with pytest.raises(ValueError) as info:
        fit(gray_model(), [separable_task()], config, torch.device("cpu"), progress=False)
    assert str(info.value) == (
        "level_weights has 2 values for a model of 4 levels; give one per level, level 1 first"
    )


def test_fit_with_distillation_reduces_the_summed_loss() -> None:
    data = separable_task()
    model = gray_model()
    before = summed_loss(model, data)
    config = QUICK.model_copy(update={"distill": 1.0, "level_weights": [1.0, 1.0, 1.0, 2.0]})
    fit(model, [data], config, torch.device("cpu"), progress=False)
    assert summed_loss(model, data) < before


@pytest.mark.parametrize(
    ("config", "text"),
    [
        (TrainConfig(), "sum over tasks and levels of cross-entropy (docs/method.md)"),
        (
            TrainConfig(distill=0.5, distill_temperature=4, level_weights=[1, 1, 1, 2]),
            "sum over tasks and levels of cross-entropy (docs/method.md); levels below the top: 0.5 x "
            "cross-entropy + 0.5 x T^2 KL from the top level's detached predictions (in-place "
            "distillation, T = 4); level weights [1.0, 1.0, 1.0, 2.0]",
        ),
    ],
)
def test_objective_in_words(config: TrainConfig, text: str) -> None:
    assert objective(config) == text


def test_load_tasks_resamples_the_builtin_tasks() -> None:
    config = TrainConfig(
        tasks=["digits", "textures"], n_train=16, n_test=10, input_size=12, color_mode="RGB"
    )
    digits, textures = load_tasks(config)
    for data in (digits, textures):
        assert data.spec.input_shape == (3, 12, 12)
        assert data.x_train.shape[1:] == (3, 12, 12)
        assert "resampled bilinearly to 12x12 and converted to RGB" in data.source
