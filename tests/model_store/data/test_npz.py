"""model_store.data.npz: every array layout, and every bad-data error naming the file."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from model_store.data import load_npz
from tests.model_store.data.files import (
    GOOD_X,
    GOOD_Y,
    HOW,
    error_of,
    labels,
    npz_error,
    raw_pixels,
    save_npz,
)


@pytest.mark.parametrize(
    ("shape", "transpose", "channels"),
    [
        ((30, 5, 7), None, 1),  # (N, H, W) grayscale
        ((30, 5, 7, 3), (0, 3, 1, 2), 3),  # channels-last RGB
        ((30, 5, 7, 1), (0, 3, 1, 2), 1),  # channels-last grayscale
        ((30, 3, 5, 7), None, 3),  # channels-first RGB
        ((30, 1, 5, 7), None, 1),  # channels-first grayscale
    ],
)
def test_npz_layouts(
    tmp_path: Path, shape: tuple[int, ...], transpose: tuple[int, ...] | None, channels: int
) -> None:
    x = np.random.default_rng(0).integers(0, 256, shape, dtype=np.uint8)
    path = save_npz(tmp_path / "set.npz", x=x, y=labels(30))

    data = load_npz(path, seed=2)

    assert data.spec.name == "set"
    assert data.spec.classes == ("0", "1", "2")
    assert data.spec.input_shape == (channels, 5, 7)
    assert (data.n_train, data.n_test) == (24, 6)
    expected = x.transpose(transpose) if transpose else x
    expected = expected.reshape(30, channels, 5, 7)
    got = np.round(raw_pixels(data, data.x_train) * 255).astype(np.uint8)
    order = {e.tobytes(): i for i, e in enumerate(expected)}
    for img, label in zip(got, data.y_train, strict=True):
        assert labels(30)[order[img.tobytes()]] == label


def test_npz_float_pixels_and_class_names(tmp_path: Path) -> None:
    x = np.random.default_rng(1).uniform(0.0, 1.0, (20, 4, 4)).astype(np.float32)
    path = save_npz(
        tmp_path / "f.npz", x=x, y=labels(20, 2).astype(np.float64), classes=np.array(["no", "yes"])
    )

    data = load_npz(path, name="flt", test_fraction=0.25)

    assert data.spec.name == "flt"
    assert data.spec.classes == ("no", "yes")
    assert (data.n_train, data.n_test) == (14, 6)
    assert data.source == (
        f"npz {path.resolve()} (20 examples, 2 classes; stratified 75/25 split, seed 0)"
    )
    # Floats in [0, 1] are taken as they are: every pixel value comes back.
    raw = raw_pixels(data, np.concatenate([data.x_train, data.x_test]))
    np.testing.assert_allclose(np.sort(raw.ravel()), np.sort(x.ravel()), atol=1e-5)


@pytest.mark.parametrize(
    ("arrays", "problem"),
    [
        ({"y": GOOD_Y}, f"missing key 'x' (found: 'y'); {HOW}"),
        ({"x": GOOD_X, "labels": GOOD_Y}, f"missing key 'y' (found: 'x', 'labels'); {HOW}"),
        ({"x": GOOD_X, "y": GOOD_Y[:5]}, "x has 6 examples but y has 5 labels; they must match"),
        (
            {"x": np.zeros((6, 16), np.uint8), "y": GOOD_Y},
            "x must be (N, H, W), (N, H, W, C) or (N, C, H, W) with C 1 or 3, got shape (6, 16)",
        ),
        (
            {"x": np.zeros((6, 4, 4, 5), np.uint8), "y": GOOD_Y},
            "x must be (N, H, W), (N, H, W, C) or (N, C, H, W) with C 1 or 3, "
            "got shape (6, 4, 4, 5)",
        ),
        (
            {"x": np.zeros((6, 3, 4, 3), np.uint8), "y": GOOD_Y},
            "x of shape (6, 3, 4, 3) could be channels-first or channels-last; "
            "store it as (N, H, W, C)",
        ),
        (
            {"x": np.zeros((0, 4, 4), np.uint8), "y": np.zeros(0, np.int64)},
            f"x holds zero examples; {HOW}",
        ),
        (
            {"x": GOOD_X, "y": np.array([0, 1, 2, 0, 1.5, 2])},
            "labels must be integers, got y[4] = 1.5",
        ),
        ({"x": GOOD_X, "y": np.array(list("abcabc"))}, "labels must be integers, got dtype <U1"),
        (
            {"x": GOOD_X, "y": np.array([0, 1, 2, 0, -1, 2])},
            "labels must be non-negative, got y[4] = -1",
        ),
        (
            {"x": GOOD_X, "y": GOOD_Y, "classes": np.array(["a", "b"])},
            "label 2 is out of range for the 2 class names (labels must be 0..1)",
        ),
        (
            {"x": GOOD_X, "y": np.array([0, 1, 3, 0, 1, 3])},
            "class(es) '2' have no examples; every class needs at least one",
        ),
        (
            {"x": GOOD_X, "y": GOOD_Y, "classes": np.array(["a", "b", "c", "d"])},
            "class(es) 'd' have no examples; every class needs at least one",
        ),
        (
            {"x": GOOD_X, "y": np.zeros(6, np.int64)},
            "only one class ('0'); a task needs at least 2 classes",
        ),
        (
            {"x": np.full((6, 4, 4), np.nan, np.float32), "y": GOOD_Y},
            "x contains NaN or Inf values; remove or repair those examples",
        ),
        (
            {"x": np.full((6, 4, 4), np.inf, np.float64), "y": GOOD_Y},
            "x contains NaN or Inf values; remove or repair those examples",
        ),
        (
            {"x": np.full((6, 4, 4), 255.0), "y": GOOD_Y},
            "float x must lie in [0, 1], got values in [255, 255]; divide by 255 or store "
            "uint8 pixels",
        ),
        (
            {"x": GOOD_X.astype(np.int64), "y": GOOD_Y},
            "x has dtype int64; store uint8 pixels (0..255) or floats in [0, 1]",
        ),
        (
            {"x": GOOD_X, "y": GOOD_Y, "classes": np.array([1, 2, 3])},
            "classes must be a 1-D array of strings, got int64 (3,)",
        ),
        (
            {"x": GOOD_X, "y": np.array([0, 1])[:, None].repeat(3, axis=1)},
            "y must be 1-D (one label per example), got shape (2, 3)",
        ),
        (
            {"x": np.zeros((2, 4, 4), np.uint8), "y": np.array([0, 1])},
            "every class has a single example, so none can be held out for testing; add at "
            "least 2 examples to a class",
        ),
    ],
)
def test_npz_bad_data_names_the_file(tmp_path: Path, arrays: dict[str, Any], problem: str) -> None:
    path, message = npz_error(tmp_path, **arrays)
    assert message == f"{path}: {problem}"


def test_npz_refuses_pickled_object_arrays(tmp_path: Path) -> None:
    path, message = npz_error(tmp_path, x=np.array([object()] * 6, dtype=object), y=GOOD_Y)
    assert message == (
        f"{path}: cannot read its arrays (Object arrays cannot be loaded when "
        "allow_pickle=False); store plain numeric x/y and a string classes array (not "
        "dtype=object)"
    )


def test_npz_not_a_zip(tmp_path: Path) -> None:
    path = tmp_path / "junk.npz"
    path.write_bytes(b"definitely not a zip archive")
    assert error_of(lambda: load_npz(path)) == (
        f"{path}: not a valid .npz file (not a zip archive of .npy arrays); {HOW}"
    )


def test_npz_that_is_a_single_npy(tmp_path: Path) -> None:
    path = tmp_path / "one.npz"
    with path.open("wb") as f:
        np.save(f, GOOD_X)
    assert error_of(lambda: load_npz(path)) == (
        f"{path}: a single .npy array, not an .npz of x and y; {HOW}"
    )


def test_npz_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "absent.npz"
    assert error_of(lambda: load_npz(path)) == f"{path}: file not found"
