"""model_store.data.cifar: the official CIFAR-10/100 pickles, and refusing anything else
(malicious pickles included) without running it."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from model_store.data import load_cifar
from tests.model_store.data.files import (
    cifar_rows,
    dump,
    error_of,
    fake_cifar10,
    fake_cifar100,
    raw_pixels,
)


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
