"""Small data files for the loaders' tests, written where a test asks, and the helpers
that read their results and errors."""

from __future__ import annotations

import pickle
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from model_store.data import (
    DataError,
    TaskData,
    load_npz,
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


def save_npz(path: Path, **arrays: Any) -> Path:
    np.savez(path, **arrays)
    return path


def labels(n: int, k: int = 3) -> np.ndarray:
    return np.arange(n) % k


def npz_error(tmp_path: Path, **arrays: Any) -> tuple[Path, str]:
    path = save_npz(tmp_path / "bad.npz", **arrays)
    return path, error_of(lambda: load_npz(path))


GOOD_X = np.zeros((6, 4, 4), dtype=np.uint8)


GOOD_Y = np.array([0, 1, 2, 0, 1, 2])


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
