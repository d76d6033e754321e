"""A task's data in model space, and the helpers every loader shares to get there.

Loaders produce pixels on the [0, 1] scale as (N, C, H, W); :func:`make_task_data`
computes the per-channel mean/std of the training split, stores them in the task's
:class:`~model_store.tasks.Preprocessing` and normalises both splits with them, so an
image upload preprocessed as the manifest says lands in the same space as training data.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from model_store.tasks import ColorMode, Preprocessing, TaskSpec

FloatArray = npt.NDArray[np.float32]
LabelArray = npt.NDArray[np.int64]

# A channel whose training pixels are (nearly) constant keeps std 1: normalising it by a
# tiny std would blow test-time noise up, and TaskSpec needs a positive std anyway.
_MIN_STD = 1e-6


@dataclass(frozen=True, eq=False)  # eq=False: comparing numpy arrays has no single truth
class TaskData:
    """A task's train/test arrays in model space, plus the spec that describes them.

    ``x_*`` are float32 (N, C, H, W), normalised with ``spec.preprocessing`` mean/std;
    ``y_*`` are int64 (N,) in ``[0, spec.num_classes)``. ``source`` says where the data
    came from and how it was split; it goes into checkpoint manifests.
    """

    spec: TaskSpec
    x_train: FloatArray
    y_train: LabelArray
    x_test: FloatArray
    y_test: LabelArray
    source: str

    def __post_init__(self) -> None:
        for split, x, y in (
            ("train", self.x_train, self.y_train),
            ("test", self.x_test, self.y_test),
        ):
            if x.dtype != np.float32 or x.shape[1:] != self.spec.input_shape:
                raise ValueError(
                    f"task {self.spec.name!r}: x_{split} must be float32 of shape "
                    f"(N, {', '.join(map(str, self.spec.input_shape))}), got {x.dtype} {x.shape}"
                )
            if y.dtype != np.int64 or y.shape != (x.shape[0],):
                raise ValueError(
                    f"task {self.spec.name!r}: y_{split} must be int64 of shape ({x.shape[0]},), "
                    f"got {y.dtype} {y.shape}"
                )
            if y.size and (int(y.min()) < 0 or int(y.max()) >= self.spec.num_classes):
                raise ValueError(
                    f"task {self.spec.name!r}: y_{split} labels must lie in "
                    f"[0, {self.spec.num_classes}), got [{int(y.min())}, {int(y.max())}]"
                )

    @property
    def n_train(self) -> int:
        return int(self.x_train.shape[0])

    @property
    def n_test(self) -> int:
        return int(self.x_test.shape[0])

    def to_dict(self) -> dict[str, Any]:
        """The manifest record of this data: ``{"source", "n_train", "n_test"}``."""
        return {"source": self.source, "n_train": self.n_train, "n_test": self.n_test}


def make_task_data(
    *,
    name: str,
    classes: tuple[str, ...],
    x_train: npt.NDArray[np.floating[Any]],
    y_train: npt.NDArray[np.integer[Any]],
    x_test: npt.NDArray[np.floating[Any]],
    y_test: npt.NDArray[np.integer[Any]],
    source: str,
) -> TaskData:
    """Normalise [0, 1]-scale (N, C, H, W) pixels with the training split's statistics.

    Returns a :class:`TaskData` whose spec carries colour mode ``"L"`` for one channel and
    ``"RGB"`` for three, size (H, W), and the per-channel mean/std of ``x_train``.
    Raises ``ValueError`` if the channel count is not 1 or 3 or the training split is empty.
    """
    if x_train.ndim != 4 or x_train.shape[1] not in (1, 3):
        raise ValueError(f"expected (N, 1 or 3, H, W) pixels, got shape {x_train.shape}")
    if x_train.shape[0] == 0:
        raise ValueError(f"task {name!r} has an empty training split")
    c, h, w = (int(d) for d in x_train.shape[1:])
    # float64 sums: float32 accumulation over ~10^8 CIFAR pixels loses digits.
    mean = x_train.mean(axis=(0, 2, 3), dtype=np.float64)
    std = x_train.std(axis=(0, 2, 3), dtype=np.float64)
    std = np.where(std < _MIN_STD, 1.0, std)
    color_mode: ColorMode = "L" if c == 1 else "RGB"
    spec = TaskSpec(
        name=name,
        classes=classes,
        input_shape=(c, h, w),
        preprocessing=Preprocessing(
            color_mode=color_mode,
            size=(h, w),
            mean=tuple(float(m) for m in mean),
            std=tuple(float(s) for s in std),
        ),
    )
    return TaskData(
        spec=spec,
        x_train=_normalise(x_train, mean, std),
        y_train=np.asarray(y_train, dtype=np.int64),
        x_test=_normalise(x_test, mean, std),
        y_test=np.asarray(y_test, dtype=np.int64),
        source=source,
    )


def resample(
    x: npt.NDArray[np.floating[Any]], size: int | None, color_mode: ColorMode | None
) -> FloatArray:
    """[0, 1]-scale pixels (N, C, H, W) resized to ``size`` x ``size`` and converted to
    ``color_mode``; ``None`` keeps that part as it is.

    Resizing is bilinear with half-pixel centres (``align_corners=False``), as PIL's
    bilinear resize of an upload is; grey becomes RGB by repeating the channel and RGB
    becomes grey by ITU-R 601 luma, as PIL's ``convert`` does.
    """
    out = np.asarray(x, dtype=np.float32)
    if size is not None and out.shape[2:] != (size, size):
        import torch  # imported here: the data layer needs torch only to resample
        import torch.nn.functional as F

        resized = F.interpolate(
            torch.from_numpy(np.ascontiguousarray(out)),
            size=(size, size),
            mode="bilinear",
            align_corners=False,
        )
        out = resized.numpy().clip(0.0, 1.0)
    if color_mode == "RGB" and out.shape[1] == 1:
        out = np.repeat(out, 3, axis=1)
    elif color_mode == "L" and out.shape[1] == 3:
        luma = np.array([0.299, 0.587, 0.114], dtype=np.float32)[None, :, None, None]
        out = (out * luma).sum(axis=1, keepdims=True, dtype=np.float32)
    return out


def _normalise(
    x: npt.NDArray[np.floating[Any]], mean: npt.NDArray[np.float64], std: npt.NDArray[np.float64]
) -> FloatArray:
    out = np.asarray(x, dtype=np.float32).copy()  # never normalise the caller's array in place
    out -= mean.astype(np.float32)[None, :, None, None]
    out /= std.astype(np.float32)[None, :, None, None]
    return out


def stratified_split(
    y: npt.NDArray[np.integer[Any]], test_fraction: float, seed: int
) -> tuple[npt.NDArray[np.intp], npt.NDArray[np.intp]]:
    """Shuffled (train, test) indices holding about ``test_fraction`` of every class in test.

    Every class with at least two examples keeps at least one in each split; a class with
    one example goes to train. Deterministic for a seed. Raises ``ValueError`` unless
    ``0 < test_fraction < 1``.
    """
    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"test_fraction must be between 0 and 1 (exclusive), got {test_fraction}")
    rng = np.random.default_rng(seed)
    train: list[npt.NDArray[np.intp]] = []
    test: list[npt.NDArray[np.intp]] = []
    for label in np.unique(y):
        idx = rng.permutation(np.flatnonzero(y == label))
        # Half rounds up (not Python's half-to-even): 10 examples at 0.25 hold out 3.
        n_test = min(max(int(len(idx) * test_fraction + 0.5), 1), len(idx) - 1)
        test.append(idx[:n_test])
        train.append(idx[n_test:])
    return rng.permutation(np.concatenate(train)), rng.permutation(np.concatenate(test))


def task_name_from(text: str) -> str:
    """A valid task name (letters, digits, '-', '_') made from a file or folder name."""
    name = re.sub(r"[^A-Za-z0-9_-]+", "-", text).strip("-")
    return name or "task"
