"""model_store.data.image_folder: class subfolders of images, exact pixels, and every
bad-folder error."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from model_store.data import load_image_folder
from tests.model_store.data.files import error_of, gray_folder, raw_pixels, write_png


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
