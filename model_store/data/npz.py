"""A task from a ``.npz`` of arrays: ``x`` images, ``y`` labels, optional ``classes``.

``x`` is (N, H, W) grayscale, (N, H, W, C) channels-last or (N, C, H, W) channels-first
with C in {1, 3}; uint8 (0..255) or floats already in [0, 1]. ``y`` holds integer labels
in [0, number of classes). ``classes`` is an array of class-name strings; without it the
classes are named "0", "1", ... up to the largest label. The file is read with
``allow_pickle=False``: an ``.npz`` never runs code when loaded.
"""

from __future__ import annotations

import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from model_store.data._errors import DataError
from model_store.data.dataset import TaskData, make_task_data, stratified_split, task_name_from

_HOW = "save it with np.savez(path, x=images, y=labels, classes=np.array(names))"


def load_npz(
    path: str | Path, *, name: str | None = None, test_fraction: float = 0.2, seed: int = 0
) -> TaskData:
    """Load ``x``/``y`` (and optional ``classes``) from ``path`` and split them stratified.

    ``name`` defaults to the file's stem. Raises :class:`DataError` naming the file when it
    is missing or not a valid npz, a key is missing, or the arrays are malformed: wrong
    ndim or channel count, zero examples, x/y lengths that differ, NaN/Inf or floats
    outside [0, 1], non-integer or negative labels, labels beyond ``classes``, a class
    without examples, or too few examples to hold out a test split. Raises ``ValueError``
    for a bad ``test_fraction``.
    """
    path = Path(path)
    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"test_fraction must be between 0 and 1 (exclusive), got {test_fraction}")
    x_raw, y_raw, classes_raw = _read_arrays(path)
    if x_raw.shape[:1] == (0,) or x_raw.ndim == 0:
        raise DataError(f"{path}: x holds zero examples; {_HOW}")
    x01 = _pixels(path, x_raw)
    y = _labels(path, y_raw, x01.shape[0])
    classes = _classes(path, classes_raw, y)

    train, test = stratified_split(y, test_fraction, seed)
    if len(test) == 0:
        raise DataError(
            f"{path}: every class has a single example, so none can be held out for testing; "
            "add at least 2 examples to a class"
        )
    pct = round(test_fraction * 100, 2)
    return make_task_data(
        name=name if name is not None else task_name_from(path.stem),
        classes=classes,
        x_train=x01[train],
        y_train=y[train],
        x_test=x01[test],
        y_test=y[test],
        source=(
            f"npz {path.resolve()} ({len(y)} examples, {len(classes)} classes; "
            f"stratified {100 - pct:g}/{pct:g} split, seed {seed})"
        ),
    )


def _read_arrays(path: Path) -> tuple[npt.NDArray[Any], npt.NDArray[Any], npt.NDArray[Any] | None]:
    """The ``x``, ``y`` and (if present) ``classes`` arrays of the file, pickles refused."""
    if not path.is_file():
        raise DataError(f"{path}: file not found")
    try:
        loaded = np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError, zipfile.BadZipFile) as e:
        # numpy answers a non-zip file with a ValueError that suggests allow_pickle=True:
        # advice never to pass on for a file of unknown origin.
        reason = "not a zip archive of .npy arrays" if isinstance(e, ValueError) else str(e)
        raise DataError(f"{path}: not a valid .npz file ({reason}); {_HOW}") from e
    if not isinstance(loaded, np.lib.npyio.NpzFile):
        raise DataError(f"{path}: a single .npy array, not an .npz of x and y; {_HOW}")
    with loaded:
        for key in ("x", "y"):
            if key not in loaded.files:
                found = ", ".join(repr(k) for k in loaded.files) or "none"
                raise DataError(f"{path}: missing key {key!r} (found: {found}); {_HOW}")
        try:
            x = loaded["x"]
            y = loaded["y"]
            classes = loaded["classes"] if "classes" in loaded.files else None
        except (ValueError, OSError, EOFError, zipfile.BadZipFile) as e:
            # ValueError here is mostly an object array, which only a pickle could load.
            raise DataError(
                f"{path}: cannot read its arrays ({e}); store plain numeric x/y and a string "
                "classes array (not dtype=object)"
            ) from e
    return x, y, classes


def _pixels(path: Path, x: npt.NDArray[Any]) -> npt.NDArray[np.float32]:
    """``x`` as float32 (N, C, H, W) on the [0, 1] scale."""
    if x.dtype == np.uint8:
        x01 = x.astype(np.float32) / 255.0
    elif x.dtype.kind == "f":
        if not np.isfinite(x).all():
            raise DataError(
                f"{path}: x contains NaN or Inf values; remove or repair those examples"
            )
        lo, hi = float(x.min()), float(x.max())
        if lo < 0.0 or hi > 1.0:
            raise DataError(
                f"{path}: float x must lie in [0, 1], got values in [{lo:g}, {hi:g}]; divide "
                "by 255 or store uint8 pixels"
            )
        x01 = x.astype(np.float32)
    else:
        raise DataError(
            f"{path}: x has dtype {x.dtype}; store uint8 pixels (0..255) or floats in [0, 1]"
        )

    if x01.ndim == 3:
        return x01[:, None]
    if x01.ndim == 4:
        last, first = x01.shape[3] in (1, 3), x01.shape[1] in (1, 3)
        if last and not first:
            return x01.transpose(0, 3, 1, 2)
        if first and not last:
            return x01
        if first and last:
            raise DataError(
                f"{path}: x of shape {x.shape} could be channels-first or channels-last; "
                "store it as (N, H, W, C)"
            )
    raise DataError(
        f"{path}: x must be (N, H, W), (N, H, W, C) or (N, C, H, W) with C 1 or 3, "
        f"got shape {x.shape}"
    )


def _labels(path: Path, y: npt.NDArray[Any], n: int) -> npt.NDArray[np.int64]:
    """``y`` as int64 (N,), checked to be whole, non-negative numbers."""
    if y.ndim != 1:
        raise DataError(f"{path}: y must be 1-D (one label per example), got shape {y.shape}")
    if len(y) != n:
        raise DataError(f"{path}: x has {n} examples but y has {len(y)} labels; they must match")
    if y.dtype.kind == "f":
        bad = ~np.isfinite(y) | (y != np.round(y))
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            raise DataError(f"{path}: labels must be integers, got y[{i}] = {y[i]}")
    elif y.dtype.kind not in "iu":
        raise DataError(f"{path}: labels must be integers, got dtype {y.dtype}")
    if y.size and y.min() < 0:
        i = int(np.argmin(y))
        raise DataError(f"{path}: labels must be non-negative, got y[{i}] = {y[i]}")
    return y.astype(np.int64)


def _classes(
    path: Path, classes: npt.NDArray[Any] | None, y: npt.NDArray[np.int64]
) -> tuple[str, ...]:
    """Class names from ``classes`` (or "0".."max label"), every class having an example."""
    if classes is None:
        names = tuple(str(i) for i in range(int(y.max()) + 1))
    else:
        if classes.ndim != 1 or classes.dtype.kind not in "US":
            raise DataError(
                f"{path}: classes must be a 1-D array of strings, "
                f"got {classes.dtype} {classes.shape}"
            )
        names = tuple(
            c.decode("utf-8") if isinstance(c, bytes) else str(c) for c in classes.tolist()
        )
        if int(y.max()) >= len(names):
            raise DataError(
                f"{path}: label {int(y.max())} is out of range for the {len(names)} class names "
                f"(labels must be 0..{len(names) - 1})"
            )
    counts = np.bincount(y, minlength=len(names))
    empty = [names[i] for i in np.flatnonzero(counts == 0)]
    if empty:
        raise DataError(
            f"{path}: class(es) {', '.join(repr(c) for c in empty)} have no examples; every "
            "class needs at least one"
        )
    if len(names) < 2:
        raise DataError(f"{path}: only one class ({names[0]!r}); a task needs at least 2 classes")
    return names
