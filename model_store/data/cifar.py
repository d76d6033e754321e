"""CIFAR-10 / CIFAR-100 from the official "python version" batches, unpickled safely.

The batches are Python pickles, and a pickle can run any code while it loads. They are
read with :class:`CifarUnpickler`, which builds only what a CIFAR batch holds (dicts,
lists, bytes, ints and numpy uint8 arrays) and refuses every other global with a
:class:`DataError` before anything runs.
"""

from __future__ import annotations

import importlib
import pickle
from pathlib import Path
from typing import IO, Any

import numpy as np
import numpy.typing as npt

from model_store.data._errors import DataError
from model_store.data.dataset import TaskData, make_task_data

CIFAR10_DIR = "cifar-10-batches-py"
CIFAR100_DIR = "cifar-100-python"
_CIFAR10_FILES = (*(f"data_batch_{i}" for i in range(1, 6)), "test_batch", "batches.meta")
_CIFAR100_FILES = ("train", "test", "meta")
_ROW = 3 * 32 * 32  # one image: 1024 red, then 1024 green, then 1024 blue bytes

# The only globals a numpy array pickle needs, under numpy 1.x and 2.x module names and
# pickle protocols 2 to 5. Each maps to the module that really holds it in this numpy.
_ALLOWED: dict[tuple[str, str], tuple[tuple[str, ...], str]] = {
    ("numpy.core.multiarray", "_reconstruct"): (
        ("numpy._core.multiarray", "numpy.core.multiarray"),
        "_reconstruct",
    ),
    ("numpy._core.multiarray", "_reconstruct"): (
        ("numpy._core.multiarray", "numpy.core.multiarray"),
        "_reconstruct",
    ),
    ("numpy.core.numeric", "_frombuffer"): (
        ("numpy._core.numeric", "numpy.core.numeric"),
        "_frombuffer",
    ),
    ("numpy._core.numeric", "_frombuffer"): (
        ("numpy._core.numeric", "numpy.core.numeric"),
        "_frombuffer",
    ),
    ("numpy", "ndarray"): (("numpy",), "ndarray"),
    ("numpy", "dtype"): (("numpy",), "dtype"),
    ("_codecs", "encode"): (("_codecs",), "encode"),
}


class CifarUnpickler(pickle.Unpickler):
    """An unpickler that resolves only the globals numpy array pickles need.

    Any other global (``os.system``, ``builtins.eval``, ...) raises :class:`DataError`
    naming the file, so a malicious file is refused before any of its code runs.
    """

    def __init__(self, file: IO[bytes], path: Path) -> None:
        super().__init__(file, encoding="bytes")
        self._path = path

    def find_class(self, module: str, name: str) -> Any:
        allowed = _ALLOWED.get((module, name))
        if allowed is None:
            raise DataError(
                f"{self._path}: refusing to unpickle global {module}.{name}: a CIFAR batch "
                "holds only numpy arrays, lists and bytes. This file is not an official "
                "CIFAR batch and may run code when loaded; download CIFAR again from "
                "https://www.cs.toronto.edu/~kriz/cifar.html"
            )
        modules, attr = allowed
        for candidate in modules:
            try:
                return getattr(importlib.import_module(candidate), attr)
            except (ImportError, AttributeError):
                continue
        raise DataError(f"{self._path}: this numpy has no {module}.{name} to rebuild arrays with")


def read_batch(path: Path) -> dict[bytes, Any]:
    """Unpickle one CIFAR batch file with :class:`CifarUnpickler`.

    Raises :class:`DataError` naming the file if it is missing, not a pickle, refers to a
    global outside the allow-list, or does not hold a dict.
    """
    if not path.is_file():
        raise DataError(
            f"{path}: file not found; a CIFAR directory needs it (re-extract the archive)"
        )
    try:
        with path.open("rb") as f:
            batch = CifarUnpickler(f, path).load()
    except DataError:
        raise
    except Exception as e:  # a corrupt pickle fails with many exception types
        raise DataError(
            f"{path}: not a readable CIFAR batch ({type(e).__name__}: {e}); re-extract the archive"
        ) from e
    if not isinstance(batch, dict):
        raise DataError(f"{path}: expected a dict in a CIFAR batch, got {type(batch).__name__}")
    return batch


def load_cifar(path: str | Path, *, name: str | None = None) -> TaskData:
    """Load CIFAR-10 or CIFAR-100 (fine labels) with the official train/test split.

    ``path`` is the extracted ``cifar-10-batches-py`` (``data_batch_1``..``5``,
    ``test_batch``, ``batches.meta``) or ``cifar-100-python`` (``train``, ``test``,
    ``meta``) directory, or a directory holding exactly one of them. The task is named
    ``name`` or ``cifar10``/``cifar100``; images are RGB 32x32.

    Raises :class:`DataError` naming the path or file when the directory is not a CIFAR
    directory, a file is missing, unsafe or malformed.
    """
    root = _cifar_root(Path(path))
    if (root / "test_batch").exists() or (root / "data_batch_1").exists():
        return _load_cifar10(root, name or "cifar10")
    return _load_cifar100(root, name or "cifar100")


def is_cifar_dir(path: Path) -> bool:
    """Whether ``path`` looks like an extracted CIFAR directory or holds one."""
    return path.is_dir() and (
        (path / "test_batch").is_file()
        or all((path / f).is_file() for f in _CIFAR100_FILES)
        or (path / CIFAR10_DIR).is_dir()
        or (path / CIFAR100_DIR).is_dir()
    )


def _cifar_root(path: Path) -> Path:
    if path.is_file() and path.name.endswith((".tar.gz", ".tgz")):
        raise DataError(f"{path}: a CIFAR archive; extract it first (tar xzf {path.name})")
    if not path.is_dir():
        raise DataError(
            f"{path}: no such directory; pass the extracted {CIFAR10_DIR} or {CIFAR100_DIR}"
        )
    inside = [path / d for d in (CIFAR10_DIR, CIFAR100_DIR) if (path / d).is_dir()]
    if len(inside) == 1:
        return inside[0]
    if len(inside) > 1:
        raise DataError(f"{path}: holds both {CIFAR10_DIR} and {CIFAR100_DIR}; pass one of them")
    if (path / "test_batch").exists() or (path / "data_batch_1").exists():
        missing = [f for f in _CIFAR10_FILES if not (path / f).is_file()]
    elif any((path / f).exists() for f in _CIFAR100_FILES):
        missing = [f for f in _CIFAR100_FILES if not (path / f).is_file()]
    else:
        raise DataError(
            f"{path}: not a CIFAR directory; expected {', '.join(_CIFAR10_FILES)} "
            f"(CIFAR-10) or {', '.join(_CIFAR100_FILES)} (CIFAR-100)"
        )
    if missing:
        raise DataError(
            f"{path}: CIFAR directory is missing {', '.join(missing)}; re-extract the archive"
        )
    return path


def _load_cifar10(root: Path, name: str) -> TaskData:
    classes = _class_names(read_batch(root / "batches.meta"), b"label_names", root / "batches.meta")
    parts = [
        _images_and_labels(root / f"data_batch_{i}", b"labels", len(classes)) for i in range(1, 6)
    ]
    x_train = np.concatenate([p[0] for p in parts])
    y_train = np.concatenate([p[1] for p in parts])
    x_test, y_test = _images_and_labels(root / "test_batch", b"labels", len(classes))
    return _task(name, classes, x_train, y_train, x_test, y_test, f"CIFAR-10 at {root.resolve()}")


def _load_cifar100(root: Path, name: str) -> TaskData:
    classes = _class_names(read_batch(root / "meta"), b"fine_label_names", root / "meta")
    x_train, y_train = _images_and_labels(root / "train", b"fine_labels", len(classes))
    x_test, y_test = _images_and_labels(root / "test", b"fine_labels", len(classes))
    return _task(
        name,
        classes,
        x_train,
        y_train,
        x_test,
        y_test,
        f"CIFAR-100 (fine labels) at {root.resolve()}",
    )


def _task(
    name: str,
    classes: tuple[str, ...],
    x_train: npt.NDArray[np.uint8],
    y_train: npt.NDArray[np.int64],
    x_test: npt.NDArray[np.uint8],
    y_test: npt.NDArray[np.int64],
    where: str,
) -> TaskData:
    return make_task_data(
        name=name,
        classes=classes,
        x_train=_to_unit(x_train),
        y_train=y_train,
        x_test=_to_unit(x_test),
        y_test=y_test,
        source=f"{where} (official split: {len(y_train)} train / {len(y_test)} test)",
    )


def _to_unit(x: npt.NDArray[np.uint8]) -> npt.NDArray[np.float32]:
    out = x.astype(np.float32)
    out /= 255.0  # in place: CIFAR-10's training set is 600 MB as float32
    return out


def _class_names(meta: dict[bytes, Any], key: bytes, path: Path) -> tuple[str, ...]:
    names = meta.get(key)
    if not isinstance(names, list) or not all(isinstance(n, bytes | str) for n in names):
        raise DataError(f"{path}: expected a list of class names under key {key!r}")
    return tuple(n.decode("utf-8") if isinstance(n, bytes) else n for n in names)


def _images_and_labels(
    path: Path, label_key: bytes, num_classes: int
) -> tuple[npt.NDArray[np.uint8], npt.NDArray[np.int64]]:
    """(N, 3, 32, 32) uint8 images and (N,) int64 labels of one batch file."""
    batch = read_batch(path)
    data = batch.get(b"data")
    labels = batch.get(label_key)
    if not isinstance(data, np.ndarray) or labels is None:
        raise DataError(f"{path}: expected keys b'data' (a numpy array) and {label_key!r}")
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != _ROW:
        raise DataError(
            f"{path}: b'data' must be uint8 rows of {_ROW} bytes (3x32x32), "
            f"got {data.dtype} {data.shape}"
        )
    y = np.asarray(labels)
    if y.dtype.kind not in "iu":
        raise DataError(f"{path}: {label_key!r} must be a list of integers, got dtype {y.dtype}")
    y = y.astype(np.int64)
    if y.shape != (data.shape[0],):
        raise DataError(f"{path}: {data.shape[0]} images but {y.size} labels under {label_key!r}")
    if y.size and (int(y.min()) < 0 or int(y.max()) >= num_classes):
        raise DataError(
            f"{path}: labels must lie in [0, {num_classes}) for the {num_classes} class names, "
            f"got [{int(y.min())}, {int(y.max())}]"
        )
    return data.reshape(-1, 3, 32, 32), y
