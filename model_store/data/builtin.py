"""Built-in offline tasks: scikit-learn's handwritten ``digits`` and two generated ones.

The machine that trains may have no internet, so every built-in task ships with the
code: ``digits`` with scikit-learn, ``shapes`` and ``textures`` generated on the fly
(see :mod:`model_store.data.generated`).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from model_store.data import generated
from model_store.data.dataset import TaskData, make_task_data, resample, stratified_split
from model_store.tasks import ColorMode

BUILTIN_TASKS: tuple[str, ...] = ("digits", "shapes", "textures")

DEFAULT_N_TRAIN = 4000
DEFAULT_N_TEST = 1000
_DIGITS_MAX = 16.0  # load_digits pixel values run 0..16
_DIGITS_TEST_FRACTION = 0.2

_Generator = Callable[[int, np.random.Generator], tuple[generated.Pixels, generated.Labels]]
_GENERATED: dict[str, tuple[_Generator, tuple[str, ...]]] = {
    "shapes": (generated.shapes, generated.SHAPE_CLASSES),
    "textures": (generated.textures, generated.TEXTURE_CLASSES),
}


def builtin_task(
    name: str,
    *,
    seed: int = 0,
    n_train: int | None = None,
    n_test: int | None = None,
    size: int | None = None,
    color_mode: ColorMode | None = None,
) -> TaskData:
    """Build the built-in task ``name``, deterministically for ``seed``.

    ``digits``: the 1,797 8x8 images of scikit-learn, split 80/20 stratified by ``seed``;
    ``n_train``/``n_test`` take the first examples of the shuffled splits (at most 1,438
    and 359). ``shapes``/``textures``: 16x16 generated images, ``n_train`` (default 4,000)
    and ``n_test`` (default 1,000) drawn from independent streams, so the training set for
    a seed does not depend on ``n_test``.

    ``size`` resamples every image to ``size`` x ``size`` (bilinear) and ``color_mode``
    converts it (:func:`~model_store.data.dataset.resample`) before the normalisation
    statistics are taken, so an upload preprocessed as the spec says matches; by default
    each task keeps its native geometry.

    Raises ``ValueError`` for an unknown name (listing the valid ones) or a size that is
    not positive or exceeds what the task has.
    """
    for label, n in (("n_train", n_train), ("n_test", n_test)):
        if n is not None and n < 1:
            raise ValueError(f"{label} must be at least 1, got {n}")
    if size is not None and size < 1:
        raise ValueError(f"size must be at least 1, got {size}")
    if name == "digits":
        return _digits(seed, n_train, n_test, size, color_mode)
    if name in _GENERATED:
        make, classes = _GENERATED[name]
        n_tr = DEFAULT_N_TRAIN if n_train is None else n_train
        n_te = DEFAULT_N_TEST if n_test is None else n_test
        x_train, y_train = make(n_tr, np.random.default_rng([seed, 0]))
        x_test, y_test = make(n_te, np.random.default_rng([seed, 1]))
        return make_task_data(
            name=name,
            classes=classes,
            x_train=resample(x_train, size, color_mode),
            y_train=y_train,
            x_test=resample(x_test, size, color_mode),
            y_test=y_test,
            source=(
                f"builtin:{name} (procedurally generated 16x16{_geometry(size, color_mode)}, "
                f"seed {seed}; {n_tr} train / {n_te} test drawn independently)"
            ),
        )
    raise ValueError(f"unknown built-in task {name!r}; valid names: {', '.join(BUILTIN_TASKS)}")


def _geometry(size: int | None, color_mode: ColorMode | None) -> str:
    """How the source string says the images were resampled ("" when they were not)."""
    parts = ([f"resampled bilinearly to {size}x{size}"] if size is not None else []) + (
        [f"converted to {color_mode}"] if color_mode is not None else []
    )
    return f" {' and '.join(parts)}" if parts else ""


def _digits(
    seed: int,
    n_train: int | None,
    n_test: int | None,
    size: int | None = None,
    color_mode: ColorMode | None = None,
) -> TaskData:
    # Imported here: scikit-learn is slow to import and only this task needs it.
    from sklearn.datasets import load_digits

    digits = load_digits()
    x = (np.asarray(digits.images, dtype=np.float32) / _DIGITS_MAX)[:, None]  # (N, 1, 8, 8)
    y = np.asarray(digits.target, dtype=np.int64)
    train, test = stratified_split(y, _DIGITS_TEST_FRACTION, seed)
    for label, n, available in (("n_train", n_train, len(train)), ("n_test", n_test, len(test))):
        if n is not None and n > available:
            raise ValueError(f"digits has {available} examples for {label}, asked for {n}")
    train = train[:n_train]
    test = test[:n_test]
    return make_task_data(
        name="digits",
        classes=tuple(str(d) for d in range(10)),
        x_train=resample(x[train], size, color_mode),
        y_train=y[train],
        x_test=resample(x[test], size, color_mode),
        y_test=y[test],
        source=(
            f"builtin:digits (scikit-learn load_digits, {len(y)} images 8x8"
            f"{_geometry(size, color_mode)}; stratified "
            f"80/20 split, seed {seed}; {len(train)} train / {len(test)} test)"
        ),
    )
