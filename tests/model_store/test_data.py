"""The data layer: built-in tasks, every loader on small files, and every bad-data error."""

from __future__ import annotations

import os
import pickle
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from model_store.data import (
    BUILTIN_TASKS,
    DataError,
    TaskData,
    builtin_task,
    load_cifar,
    load_image_folder,
    load_npz,
    load_task,
)

HOW = "save it with np.savez(path, x=images, y=labels, classes=np.array(names))"


def raw_pixels(data: TaskData, x: np.ndarray) -> np.ndarray:
    """Undo the normalisation: model space back to the [0, 1] pixel scale."""
    pre = data.spec.preprocessing
    mean = np.array(pre.mean, dtype=np.float32)[None, :, None, None]
    std = np.array(pre.std, dtype=np.float32)[None, :, None, None]
    return x * std + mean


def error_of(call: Callable[[], object]) -> str:
    with pytest.raises(DataError) as info:
        call()
    return str(info.value)


# --- built-in tasks -------------------------------------------------------------------


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


# --- image folder ---------------------------------------------------------------------


def write_png(path: Path, pixels: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path)


def gray_folder(root: Path, per_class: int = 5) -> dict[str, list[np.ndarray]]:
    """Classes "b" and "a" (written out of order) of 6x4 grayscale PNGs with known pixels."""
    rng = np.random.default_rng(0)
    images: dict[str, list[np.ndarray]] = {}
    for cls in ("b", "a"):
        images[cls] = []
        for i in range(per_class):
            px = rng.integers(0, 256, (6, 4), dtype=np.uint8)
            write_png(root / cls / f"{i:03d}.png", px)
            images[cls].append(px)
    return images


def test_image_folder_loads_classes_and_exact_pixels(tmp_path: Path) -> None:
    root = tmp_path / "my pets"
    images = gray_folder(root)
    (root / "a" / "notes.txt").write_text("not an image")
    (root / "a" / ".DS_Store").write_bytes(b"\0\1")
    (root / "README.md").write_text("top-level files are ignored")

    data = load_image_folder(root, seed=1)

    assert data.spec.name == "my-pets"
    assert data.spec.classes == ("a", "b")
    assert data.spec.input_shape == (1, 6, 4)
    assert data.spec.preprocessing.color_mode == "L"
    assert (data.n_train, data.n_test) == (8, 2)
    assert sorted(data.y_test.tolist()) == [0, 1]  # stratified: one of each class
    assert data.source == (
        f"image folder {root.resolve()} (10 images, 2 classes, L 6x4; stratified 80/20 "
        "split, seed 1)"
    )
    # Every image comes back exactly, under its own class.
    got = np.round(raw_pixels(data, np.concatenate([data.x_train, data.x_test])) * 255)
    labels = np.concatenate([data.y_train, data.y_test])
    for cls_index, cls in enumerate(data.spec.classes):
        want = sorted(px.tobytes() for px in images[cls])
        have = sorted(g[0].astype(np.uint8).tobytes() for g in got[labels == cls_index])
        assert have == want


def test_image_folder_any_colour_image_makes_the_task_rgb(tmp_path: Path) -> None:
    gray_folder(tmp_path)
    write_png(tmp_path / "b" / "zz.png", np.full((6, 4, 3), (255, 0, 0), dtype=np.uint8))

    data = load_image_folder(tmp_path, name="mixed")

    assert data.spec.name == "mixed"
    assert data.spec.preprocessing.color_mode == "RGB"
    assert data.spec.input_shape == (3, 6, 4)
    assert data.n_train + data.n_test == 11


def test_image_folder_resizes_and_converts_on_request(tmp_path: Path) -> None:
    write_png(tmp_path / "x" / "big.png", np.full((20, 10, 3), 200, dtype=np.uint8))
    write_png(tmp_path / "x" / "small.png", np.full((5, 5, 3), 100, dtype=np.uint8))
    write_png(tmp_path / "y" / "1.png", np.zeros((7, 3, 3), dtype=np.uint8))
    write_png(tmp_path / "y" / "2.png", np.zeros((7, 3, 3), dtype=np.uint8))

    default = load_image_folder(tmp_path)  # size of the first image: x/big.png
    assert default.spec.input_shape == (3, 20, 10)

    data = load_image_folder(tmp_path, size=(8, 6), color_mode="L", test_fraction=0.5)
    assert data.spec.input_shape == (1, 8, 6)
    raw = np.round(raw_pixels(data, np.concatenate([data.x_train, data.x_test])) * 255)
    assert sorted(np.unique(raw).tolist()) == [0.0, 100.0, 200.0]


def test_image_folder_missing_path(tmp_path: Path) -> None:
    missing = tmp_path / "nope"
    assert error_of(lambda: load_image_folder(missing)) == (
        f"{missing}: no such directory; pass a folder with one subfolder per class"
    )


def test_image_folder_path_is_a_file(tmp_path: Path) -> None:
    file = tmp_path / "f.png"
    write_png(file, np.zeros((2, 2), dtype=np.uint8))
    assert error_of(lambda: load_image_folder(file)) == (
        f"{file}: not a directory; pass a folder with one subfolder per class"
    )


def test_image_folder_without_class_subfolders(tmp_path: Path) -> None:
    write_png(tmp_path / "loose.png", np.zeros((2, 2), dtype=np.uint8))
    (tmp_path / ".hidden").mkdir()
    assert error_of(lambda: load_image_folder(tmp_path)) == (
        f"{tmp_path}: no class subfolders; put each class's images in its own subfolder "
        "(e.g. cat/001.png, dog/001.png)"
    )


def test_image_folder_with_one_class(tmp_path: Path) -> None:
    write_png(tmp_path / "cat" / "1.png", np.zeros((2, 2), dtype=np.uint8))
    assert error_of(lambda: load_image_folder(tmp_path)) == (
        f"{tmp_path}: only one class subfolder ('cat'); a task needs at least 2 classes"
    )


def test_image_folder_empty_class(tmp_path: Path) -> None:
    gray_folder(tmp_path)
    (tmp_path / "c").mkdir()
    (tmp_path / "c" / "labels.csv").write_text("only non-images here")
    assert error_of(lambda: load_image_folder(tmp_path)) == (
        f"{tmp_path / 'c'}: class folder holds no images; add images or remove the folder"
    )


@pytest.mark.parametrize("content", [b"", b"this is not a png", b"\x89PNG\r\n\x1a\n" + b"\0" * 40])
def test_image_folder_corrupt_image_names_the_file(tmp_path: Path, content: bytes) -> None:
    gray_folder(tmp_path)
    bad = tmp_path / "a" / "broken.png"
    bad.write_bytes(content)
    message = error_of(lambda: load_image_folder(tmp_path))
    assert message.startswith(f"{bad}: not a readable image (")
    assert message.endswith("); replace it with a valid image or remove it")


def test_image_folder_truncated_image_names_the_file(tmp_path: Path) -> None:
    gray_folder(tmp_path)
    bad = tmp_path / "b" / "cut.png"
    write_png(bad, np.random.default_rng(0).integers(0, 256, (64, 64), dtype=np.uint8))
    bad.write_bytes(bad.read_bytes()[:200])  # header intact, pixel data cut short
    message = error_of(lambda: load_image_folder(tmp_path))
    assert message.startswith(f"{bad}: not a readable image (")


def test_image_folder_single_image_per_class_has_no_test_split(tmp_path: Path) -> None:
    gray_folder(tmp_path, per_class=1)
    assert error_of(lambda: load_image_folder(tmp_path)) == (
        f"{tmp_path}: every class has a single image, so none can be held out for testing; "
        "add at least 2 images to a class"
    )


def test_image_folder_rejects_bad_arguments(tmp_path: Path) -> None:
    gray_folder(tmp_path)
    with pytest.raises(ValueError, match=r"^color_mode must be 'L' or 'RGB', got 'CMYK'$"):
        load_image_folder(tmp_path, color_mode="CMYK")
    with pytest.raises(ValueError, match=r"^test_fraction must be between 0 and 1"):
        load_image_folder(tmp_path, test_fraction=1.0)


# --- npz ------------------------------------------------------------------------------


def save_npz(path: Path, **arrays: Any) -> Path:
    np.savez(path, **arrays)
    return path


def labels(n: int, k: int = 3) -> np.ndarray:
    return np.arange(n) % k


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


def npz_error(tmp_path: Path, **arrays: Any) -> tuple[Path, str]:
    path = save_npz(tmp_path / "bad.npz", **arrays)
    return path, error_of(lambda: load_npz(path))


GOOD_X = np.zeros((6, 4, 4), dtype=np.uint8)
GOOD_Y = np.array([0, 1, 2, 0, 1, 2])


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


# --- CIFAR ----------------------------------------------------------------------------


def dump(path: Path, obj: object, protocol: int) -> None:
    with path.open("wb") as f:
        pickle.dump(obj, f, protocol=protocol)


def cifar_rows(n: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, 3072), dtype=np.uint8)


def fake_cifar10(parent: Path, protocol: int = 2, per_batch: int = 4) -> Path:
    root = parent / "cifar-10-batches-py"
    root.mkdir(parents=True)
    names = [b"airplane", b"automobile", b"bird", b"cat", b"deer"]
    names += [b"dog", b"frog", b"horse", b"ship", b"truck"]
    dump(root / "batches.meta", {b"label_names": names, b"num_vis": 3072}, protocol)
    for i in range(1, 6):
        batch = {
            b"batch_label": f"training batch {i} of 5".encode(),
            b"labels": [(i + j) % 10 for j in range(per_batch)],
            b"data": cifar_rows(per_batch, i),
            b"filenames": [b"x.png"] * per_batch,
        }
        dump(root / f"data_batch_{i}", batch, protocol)
    dump(root / "test_batch", {b"labels": [9, 8, 7], b"data": cifar_rows(3, 99)}, protocol)
    return root


def fake_cifar100(parent: Path, protocol: int = 2) -> Path:
    root = parent / "cifar-100-python"
    root.mkdir(parents=True)
    fine = [f"class{i}".encode() for i in range(100)]
    dump(root / "meta", {b"fine_label_names": fine, b"coarse_label_names": [b"c"]}, protocol)
    train = {
        b"fine_labels": [0, 50, 99, 1, 2],
        b"coarse_labels": [0] * 5,
        b"data": cifar_rows(5, 1),
    }
    dump(root / "train", train, protocol)
    dump(root / "test", {b"fine_labels": [98, 97], b"data": cifar_rows(2, 2)}, protocol)
    return root


@pytest.mark.parametrize("protocol", [2, 5])
def test_cifar10_official_split_and_channel_major_rows(tmp_path: Path, protocol: int) -> None:
    root = fake_cifar10(tmp_path, protocol)

    data = load_cifar(root)

    assert data.spec.name == "cifar10"
    assert data.spec.classes[:3] == ("airplane", "automobile", "bird")
    assert data.spec.num_classes == 10
    assert data.spec.input_shape == (3, 32, 32)
    assert data.spec.preprocessing.color_mode == "RGB"
    assert (data.n_train, data.n_test) == (20, 3)
    assert data.y_train.tolist() == [(i + j) % 10 for i in range(1, 6) for j in range(4)]
    assert data.y_test.tolist() == [9, 8, 7]
    assert data.source == (f"CIFAR-10 at {root.resolve()} (official split: 20 train / 3 test)")
    # Row layout: 1024 red, 1024 green, 1024 blue bytes, each row-major 32x32.
    rows = cifar_rows(4, 1)
    got = np.round(raw_pixels(data, data.x_train[:4]) * 255).astype(np.uint8)
    np.testing.assert_array_equal(got, rows.reshape(4, 3, 32, 32))
    assert got[0, 1, 0, 5] == rows[0, 1024 + 5]


def test_cifar100_uses_fine_labels_and_parent_dir(tmp_path: Path) -> None:
    root = fake_cifar100(tmp_path, protocol=4)

    data = load_cifar(tmp_path, name="c100")  # the folder that holds cifar-100-python

    assert data.spec.name == "c100"
    assert data.spec.num_classes == 100
    assert data.spec.classes[99] == "class99"
    assert data.y_train.tolist() == [0, 50, 99, 1, 2]
    assert data.y_test.tolist() == [98, 97]
    assert data.source == (
        f"CIFAR-100 (fine labels) at {root.resolve()} (official split: 5 train / 2 test)"
    )


class RunsShell:
    """A pickle payload that, unpickled unsafely, runs a shell command."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, ...]:
        return (os.system, (f"touch {self.marker}",))


class EvalsCode:
    def __reduce__(self) -> tuple[Any, ...]:
        return (eval, ("__import__('os').getpid()",))


@pytest.mark.parametrize(
    ("payload", "protocol", "culprit"),
    [
        ("system", 2, f"{os.system.__module__}.system"),
        ("system", 5, f"{os.system.__module__}.system"),
        ("eval", 2, "__builtin__.eval"),  # protocol 2 writes Python 2 module names
        ("eval", 5, "builtins.eval"),
    ],
)
def test_cifar_refuses_malicious_pickle_without_running_it(
    tmp_path: Path, payload: str, protocol: int, culprit: str
) -> None:
    root = fake_cifar10(tmp_path)
    marker = tmp_path / "pwned"
    evil: object = RunsShell(marker) if payload == "system" else EvalsCode()
    dump(root / "data_batch_3", {b"data": evil, b"labels": [0]}, protocol)

    message = error_of(lambda: load_cifar(root))

    assert message == (
        f"{root / 'data_batch_3'}: refusing to unpickle global {culprit}: a CIFAR batch "
        "holds only numpy arrays, lists and bytes. This file is not an official CIFAR batch "
        "and may run code when loaded; download CIFAR again from "
        "https://www.cs.toronto.edu/~kriz/cifar.html"
    )
    assert not marker.exists()


def test_cifar_missing_batch(tmp_path: Path) -> None:
    root = fake_cifar10(tmp_path)
    (root / "data_batch_4").unlink()
    assert error_of(lambda: load_cifar(root)) == (
        f"{root}: CIFAR directory is missing data_batch_4; re-extract the archive"
    )


def test_cifar_not_a_cifar_dir(tmp_path: Path) -> None:
    assert error_of(lambda: load_cifar(tmp_path)) == (
        f"{tmp_path}: not a CIFAR directory; expected data_batch_1, data_batch_2, "
        "data_batch_3, data_batch_4, data_batch_5, test_batch, batches.meta (CIFAR-10) or "
        "train, test, meta (CIFAR-100)"
    )


def test_cifar_archive_must_be_extracted(tmp_path: Path) -> None:
    archive = tmp_path / "cifar-10-python.tar.gz"
    archive.write_bytes(b"\x1f\x8b")
    assert error_of(lambda: load_cifar(archive)) == (
        f"{archive}: a CIFAR archive; extract it first (tar xzf cifar-10-python.tar.gz)"
    )


def test_cifar_corrupt_pickle(tmp_path: Path) -> None:
    root = fake_cifar10(tmp_path)
    (root / "test_batch").write_bytes(b"garbage that is not a pickle")
    message = error_of(lambda: load_cifar(root))
    assert message.startswith(f"{root / 'test_batch'}: not a readable CIFAR batch (")
    assert message.endswith("); re-extract the archive")


def test_cifar_wrong_row_size(tmp_path: Path) -> None:
    root = fake_cifar10(tmp_path)
    dump(root / "test_batch", {b"labels": [1], b"data": np.zeros((1, 100), np.uint8)}, 2)
    assert error_of(lambda: load_cifar(root)) == (
        f"{root / 'test_batch'}: b'data' must be uint8 rows of 3072 bytes (3x32x32), "
        "got uint8 (1, 100)"
    )


def test_cifar_label_out_of_range(tmp_path: Path) -> None:
    root = fake_cifar10(tmp_path)
    dump(root / "test_batch", {b"labels": [10], b"data": cifar_rows(1, 0)}, 2)
    assert error_of(lambda: load_cifar(root)) == (
        f"{root / 'test_batch'}: labels must lie in [0, 10) for the 10 class names, got [10, 10]"
    )


# --- load_task ------------------------------------------------------------------------


def test_load_task_dispatches_on_what_is_there(tmp_path: Path) -> None:
    assert load_task("digits", seed=1).spec.name == "digits"

    gray_folder(tmp_path / "folder")
    assert load_task(str(tmp_path / "folder")).spec.classes == ("a", "b")

    save_npz(tmp_path / "arr.npz", x=np.zeros((6, 4, 4), np.uint8), y=GOOD_Y)
    assert load_task(str(tmp_path / "arr.npz")).spec.name == "arr"

    fake_cifar10(tmp_path / "c10")
    assert load_task(str(tmp_path / "c10")).spec.name == "cifar10"
    assert load_task(str(tmp_path / "c10" / "cifar-10-batches-py")).spec.name == "cifar10"


def test_load_task_seed_reaches_the_split(tmp_path: Path) -> None:
    save_npz(
        tmp_path / "arr.npz", x=np.arange(60 * 4, dtype=np.uint8).reshape(60, 2, 2), y=labels(60)
    )
    a = load_task(str(tmp_path / "arr.npz"), seed=0)
    b = load_task(str(tmp_path / "arr.npz"), seed=1)
    assert not np.array_equal(raw_pixels(a, a.x_test), raw_pixels(b, b.x_test))


def test_load_task_unknown_source(tmp_path: Path) -> None:
    missing = str(tmp_path / "nothing")
    assert error_of(lambda: load_task(missing)) == (
        f"{missing}: neither a built-in task (digits, shapes, textures) nor an existing file "
        "or directory"
    )


def test_load_task_unsupported_file(tmp_path: Path) -> None:
    file = tmp_path / "data.csv"
    file.write_text("1,2,3")
    assert error_of(lambda: load_task(str(file))) == (
        f"{file}: unsupported file; pass a .npz, a folder of class subfolders of images, or "
        "an extracted CIFAR directory"
    )


def test_data_error_is_a_value_error() -> None:
    assert issubclass(DataError, ValueError)
