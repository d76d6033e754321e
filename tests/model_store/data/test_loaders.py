"""model_store.data.loaders: load_task dispatches on what is there; its errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from model_store.data import (
    DataError,
    load_task,
)
from tests.model_store.data.files import (
    GOOD_Y,
    error_of,
    fake_cifar10,
    gray_folder,
    labels,
    raw_pixels,
    save_npz,
)


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
