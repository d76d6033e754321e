"""What a task is: its classes, input shape and how an uploaded image becomes an input.

A task's inputs live in *model space*: float32 tensors of ``input_shape`` (C, H, W),
already normalised. JSON and ``.npy`` bodies carry model-space tensors; image uploads go
through :class:`Preprocessing` (colour mode, resize, scale to [0, 1], mean/std).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Literal

ColorMode = Literal["L", "RGB"]


@dataclass(frozen=True)
class Preprocessing:
    """How an image upload becomes a model-space tensor of the task."""

    color_mode: ColorMode
    size: tuple[int, int]  # (H, W) after resize
    mean: tuple[float, ...]  # per channel, on the [0, 1] pixel scale
    std: tuple[float, ...]

    def __post_init__(self) -> None:
        channels = 1 if self.color_mode == "L" else 3
        if len(self.mean) != channels or len(self.std) != channels:
            raise ValueError(
                f"preprocessing for colour mode {self.color_mode!r} needs {channels} mean and "
                f"std values, got {len(self.mean)} and {len(self.std)}"
            )
        if any(s <= 0 for s in self.std):
            raise ValueError(f"preprocessing std must be positive, got {self.std}")

    @property
    def channels(self) -> int:
        return 1 if self.color_mode == "L" else 3

    def to_dict(self) -> dict[str, Any]:
        return {
            **asdict(self),
            "size": list(self.size),
            "mean": list(self.mean),
            "std": list(self.std),
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Preprocessing:
        return cls(
            color_mode=d["color_mode"],
            size=(int(d["size"][0]), int(d["size"][1])),
            mean=tuple(float(v) for v in d["mean"]),
            std=tuple(float(v) for v in d["std"]),
        )


@dataclass(frozen=True)
class TaskSpec:
    """A task served by the DVN: name, class names, model-space input shape (C, H, W)."""

    name: str
    classes: tuple[str, ...]
    input_shape: tuple[int, int, int]
    preprocessing: Preprocessing

    def __post_init__(self) -> None:
        if not self.name or not self.name.replace("-", "").replace("_", "").isalnum():
            raise ValueError(
                f"task name {self.name!r} must be non-empty letters, digits, '-' or '_' "
                "(it appears in URLs and metric labels)"
            )
        if len(self.classes) < 2:
            raise ValueError(
                f"task {self.name!r} needs at least 2 classes, got {len(self.classes)}"
            )
        c, h, w = self.input_shape
        if min(c, h, w) < 1:
            raise ValueError(
                f"task {self.name!r} input shape must be positive, got {self.input_shape}"
            )
        if c != self.preprocessing.channels or (h, w) != self.preprocessing.size:
            raise ValueError(
                f"task {self.name!r}: input shape {self.input_shape} does not match its "
                f"preprocessing ({self.preprocessing.color_mode}, size {self.preprocessing.size})"
            )

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "classes": list(self.classes),
            "input_shape": list(self.input_shape),
            "preprocessing": self.preprocessing.to_dict(),
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TaskSpec:
        shape = d["input_shape"]
        return cls(
            name=str(d["name"]),
            classes=tuple(str(c) for c in d["classes"]),
            input_shape=(int(shape[0]), int(shape[1]), int(shape[2])),
            preprocessing=Preprocessing.from_dict(d["preprocessing"]),
        )
