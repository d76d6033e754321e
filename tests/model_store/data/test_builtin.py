"""Built-in tasks (model_store.data.builtin, .generated): shapes, dtypes, labels,
normalisation, determinism and their errors."""

from __future__ import annotations

import numpy as np
import pytest

from model_store.data import (
    BUILTIN_TASKS,
    TaskData,
    builtin_task,
)
from model_store.data.dataset import resample
from tests.model_store.data.files import raw_pixels


@pytest.fixture(scope="module")
def builtin() -> dict[str, TaskData]:
    return {name: builtin_task(name) for name in BUILTIN_TASKS}


EXPECTED_SPECS = {
    "digits": ((1, 8, 8), "L", 10, 1438, 359),
    "shapes": ((3, 16, 16), "RGB", 8, 4000, 1000),
    "textures": ((1, 16, 16), "L", 8, 4000, 1000),
}


@pytest.mark.parametrize("name", BUILTIN_TASKS)
def test_builtin_shapes_dtypes_and_labels(builtin: dict[str, TaskData], name: str) -> None:
    data = builtin[name]
    input_shape, mode, num_classes, n_train, n_test = EXPECTED_SPECS[name]
    assert data.spec.name == name
    assert data.spec.input_shape == input_shape
    assert data.spec.preprocessing.color_mode == mode
    assert data.spec.num_classes == num_classes
    assert data.x_train.shape == (n_train, *input_shape)
    assert data.x_test.shape == (n_test, *input_shape)
    assert data.x_train.dtype == data.x_test.dtype == np.float32
    assert data.y_train.dtype == data.y_test.dtype == np.int64
    for y in (data.y_train, data.y_test):
        assert set(np.unique(y).tolist()) == set(range(num_classes))
    assert np.isfinite(data.x_train).all() and np.isfinite(data.x_test).all()
    assert data.to_dict() == {"source": data.source, "n_train": n_train, "n_test": n_test}


@pytest.mark.parametrize("name", BUILTIN_TASKS)
def test_builtin_train_split_is_normalised_per_channel(
    builtin: dict[str, TaskData], name: str
) -> None:
    data = builtin[name]
    np.testing.assert_allclose(data.x_train.mean(axis=(0, 2, 3)), 0.0, atol=1e-4)
    np.testing.assert_allclose(data.x_train.std(axis=(0, 2, 3)), 1.0, atol=1e-4)
    # The stored mean/std are on the [0, 1] pixel scale: raw pixels land back in [0, 1].
    raw = raw_pixels(data, data.x_test)
    assert raw.min() >= -1e-5 and raw.max() <= 1 + 1e-5


def test_digits_classes_and_pixel_scale(builtin: dict[str, TaskData]) -> None:
    data = builtin["digits"]
    assert data.spec.classes == tuple("0123456789")
    # load_digits values run 0..16 and are scaled by 1/16: 17 distinct pixel levels.
    levels = np.unique(np.round(raw_pixels(data, data.x_train) * 16, 3))
    np.testing.assert_allclose(levels, np.arange(17), atol=1e-3)
    assert data.source == (
        "builtin:digits (scikit-learn load_digits, 1797 images 8x8; stratified 80/20 split, "
        "seed 0; 1438 train / 359 test)"
    )


@pytest.mark.parametrize("name", BUILTIN_TASKS)
def test_builtin_is_deterministic_for_a_seed(name: str) -> None:
    a = builtin_task(name, seed=3, n_train=120, n_test=40)
    b = builtin_task(name, seed=3, n_train=120, n_test=40)
    c = builtin_task(name, seed=4, n_train=120, n_test=40)
    for field in ("x_train", "y_train", "x_test", "y_test"):
        np.testing.assert_array_equal(getattr(a, field), getattr(b, field))
    assert a.spec == b.spec
    assert not np.array_equal(a.x_train, c.x_train)
    assert a.x_train.shape == (120, *a.spec.input_shape)
    assert a.x_test.shape == (40, *a.spec.input_shape)


@pytest.mark.parametrize("name", ["shapes", "textures"])
def test_generated_training_set_does_not_depend_on_n_test(name: str) -> None:
    a = builtin_task(name, n_train=64, n_test=8)
    b = builtin_task(name, n_train=64, n_test=32)
    np.testing.assert_array_equal(a.y_train, b.y_train)
    np.testing.assert_array_equal(raw_pixels(a, a.x_train), raw_pixels(b, b.x_train))


def test_generated_classes_are_balanced() -> None:
    data = builtin_task("shapes", n_train=80, n_test=16)
    assert np.bincount(data.y_train).tolist() == [10] * 8
    assert np.bincount(data.y_test).tolist() == [2] * 8


def test_unknown_builtin_lists_valid_names() -> None:
    with pytest.raises(ValueError) as info:
        builtin_task("mnist")
    assert str(info.value) == "unknown built-in task 'mnist'; valid names: digits, shapes, textures"


def test_builtin_rejects_impossible_sizes() -> None:
    with pytest.raises(ValueError, match=r"^n_train must be at least 1, got 0$"):
        builtin_task("shapes", n_train=0)
    with pytest.raises(ValueError, match=r"^digits has 359 examples for n_test, asked for 500$"):
        builtin_task("digits", n_test=500)


# --- resampling to another geometry ---------------------------------------------------


def test_resample_keeps_what_it_is_not_asked_to_change() -> None:
    x = np.random.default_rng(0).random((2, 1, 8, 8)).astype(np.float32)
    np.testing.assert_array_equal(resample(x, None, None), x)
    np.testing.assert_array_equal(resample(x, 8, "L"), x)


def test_resample_grey_to_rgb_repeats_the_channel() -> None:
    x = np.random.default_rng(0).random((2, 1, 4, 4)).astype(np.float32)
    out = resample(x, None, "RGB")
    assert out.shape == (2, 3, 4, 4)
    for c in range(3):
        np.testing.assert_array_equal(out[:, c], x[:, 0])


def test_resample_rgb_to_grey_is_luma() -> None:
    x = np.zeros((1, 3, 2, 2), dtype=np.float32)
    x[0, 0] = 1.0  # pure red
    np.testing.assert_allclose(resample(x, None, "L"), np.full((1, 1, 2, 2), 0.299), rtol=1e-6)


def test_resample_upsamples_bilinearly() -> None:
    flat = np.full((1, 1, 8, 8), 0.25, dtype=np.float32)
    np.testing.assert_allclose(resample(flat, 32, None), np.full((1, 1, 32, 32), 0.25))
    ramp = np.array([[[[0.0, 1.0]]]], dtype=np.float32)  # (1, 1, 1, 2)
    # Half-pixel centres: 2 -> 4 samples at 0, 0.25, 0.75, 1 (edges clamp).
    out = resample(np.repeat(ramp, 2, axis=2), 4, None)
    np.testing.assert_allclose(out[0, 0, 0], [0.0, 0.25, 0.75, 1.0])


def test_builtin_task_at_another_geometry() -> None:
    data = builtin_task("digits", size=32, color_mode="RGB")
    assert data.spec.input_shape == (3, 32, 32)
    assert data.spec.preprocessing.color_mode == "RGB"
    assert data.x_train.shape == (1438, 3, 32, 32)
    assert data.source == (
        "builtin:digits (scikit-learn load_digits, 1797 images 8x8 resampled bilinearly to "
        "32x32 and converted to RGB; stratified 80/20 split, seed 0; 1438 train / 359 test)"
    )
    # The statistics are those of the resampled pixels: the split is normalised.
    np.testing.assert_allclose(data.x_train.mean(axis=(0, 2, 3)), 0.0, atol=1e-4)
    shapes = builtin_task("shapes", n_train=8, n_test=8, size=24)
    assert shapes.x_test.shape == (8, 3, 24, 24)
    assert "16x16 resampled bilinearly to 24x24, seed 0" in shapes.source


def test_builtin_task_rejects_a_bad_size() -> None:
    with pytest.raises(ValueError) as info:
        builtin_task("shapes", size=0)
    assert str(info.value) == "size must be at least 1, got 0"
