"""Training configurations: named presets and config files (JSON or TOML)."""

from __future__ import annotations

import json
import tomllib
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator


class TrainConfig(BaseModel):
    """How to train a DVN. Task sources are builtin task names or paths to user data."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = "dvn"
    version: str = "1.0.0"
    architecture: str = "resnet-demo"
    tasks: list[str] = Field(default_factory=lambda: ["digits", "shapes", "textures"], min_length=1)
    unit_orders: list[list[int]] | None = None
    epochs: int = Field(default=15, ge=1)
    batch_size: int = Field(default=128, ge=1)
    lr: float = Field(default=0.1, gt=0)
    momentum: float = Field(default=0.9, ge=0, lt=1)
    weight_decay: float = Field(default=5e-4, ge=0)
    warmup_epochs: float = Field(default=0.5, ge=0)
    augment: Literal["none", "shift", "shift-flip"] = "shift"
    seed: int = 0
    n_train: int | None = Field(default=None, ge=10, description="generated tasks: examples")
    n_test: int | None = Field(default=None, ge=10, description="generated tasks: held out")
    data_dir: str = Field(default=".", description="where relative task paths are looked up")
    input_size: int | None = Field(
        default=None, ge=4, description="builtin tasks: resample images to this square side"
    )
    color_mode: Literal["L", "RGB"] | None = Field(
        default=None, description="builtin tasks: convert images to this colour mode"
    )
    # In-place distillation (slimmable / universally slimmable networks): every level below
    # the top learns (1 - distill) * cross-entropy + distill * T^2 * KL(top || level), the
    # top level's predictions detached and softened by temperature T. 0 is the paper's
    # plain summed cross-entropy; 1 is US-nets' recipe (smaller levels see no labels).
    distill: float = Field(default=0.0, ge=0, le=1)
    distill_temperature: float = Field(default=1.0, gt=0)
    # A weight per level (level 1 first) on its loss in the sum; equal weights by default.
    level_weights: list[float] | None = Field(default=None, min_length=1)

    @field_validator("level_weights")
    @classmethod
    def _weights_non_negative(cls, v: list[float] | None) -> list[float] | None:
        if v is not None and (any(w < 0 for w in v) or not any(w > 0 for w in v)):
            raise ValueError(f"level weights must be >= 0 with at least one > 0, got {v}")
        return v


PRESETS: dict[str, TrainConfig] = {
    # Exercises the whole training path in well under a minute: for tests and smoke runs.
    "tiny": TrainConfig(
        name="tiny",
        architecture="resnet-tiny",
        tasks=["digits", "shapes"],
        epochs=2,
        batch_size=64,
        n_train=400,
        n_test=200,
    ),
    # The shipped demo checkpoint: 3 tasks, 4 units, 4 levels each, minutes on 2 CPU cores;
    # summed cross-entropy with level 1's loss weighted 1.5 and the top level's 2
    # (docs/training.md has the A/B runs).
    "demo": TrainConfig(
        name="demo",
        architecture="resnet-demo",
        epochs=16,
        n_train=8000,
        n_test=4000,
        level_weights=[1.5, 1, 1, 2],
    ),
    # The shipped standard checkpoint, served by default: 32x32 RGB inputs (the three
    # builtin tasks resampled), a 1.5 M-parameter wide residual trunk whose levels differ in
    # cost at batch 1 on a CPU, summed cross-entropy with the top level's loss weighted 2
    # (docs/training.md has the A/B runs). 1,413 steps: about 80 minutes on 2 CPU cores,
    # 3 on a GPU.
    "standard": TrainConfig(
        name="standard",
        architecture="wrn-standard",
        epochs=9,
        batch_size=64,
        lr=0.1,
        n_train=10000,
        n_test=2000,
        input_size=32,
        color_mode="RGB",
        level_weights=[1, 1, 1, 2],
    ),
    # The standard preset's geometry and recipe in seconds: for tests.
    "standard-tiny": TrainConfig(
        name="standard-tiny",
        architecture="wrn-standard-tiny",
        epochs=1,
        batch_size=32,
        lr=0.1,
        n_train=64,
        n_test=32,
        input_size=32,
        color_mode="RGB",
        level_weights=[1, 1, 1, 2],
    ),
    # The paper's CIFAR-10 + CIFAR-100 setting (Table 1): WRN-32-4, 2 units, SGD with
    # Nesterov momentum, batch 128, from scratch. Needs the python batches on disk (under
    # data_dir) and a GPU to finish in hours rather than weeks.
    "cifar-j1": TrainConfig(
        name="cifar-j1",
        architecture="wrn-32-4",
        tasks=["cifar-10-batches-py", "cifar-100-python"],
        epochs=200,
        batch_size=128,
        lr=0.1,
        weight_decay=5e-4,
        warmup_epochs=1,
        augment="shift-flip",
        data_dir="data",
    ),
}


def get_preset(name: str) -> TrainConfig:
    """Raises ValueError listing the valid preset names."""
    try:
        return PRESETS[name]
    except KeyError:
        valid = ", ".join(sorted(PRESETS))
        raise ValueError(f"unknown preset {name!r}; valid presets: {valid}") from None


def load_config(path: str | Path) -> TrainConfig:
    """Read a training config from a ``.json`` or ``.toml`` file.

    Raises:
        ValueError: naming the file and each bad field.
    """
    file = Path(path)
    try:
        text = file.read_text()
    except OSError as e:
        raise ValueError(f"cannot read training config {file}: {e.strerror}") from e
    try:
        raw = tomllib.loads(text) if file.suffix == ".toml" else json.loads(text)
    except (tomllib.TOMLDecodeError, json.JSONDecodeError) as e:
        raise ValueError(
            f"training config {file} is not valid {file.suffix[1:] or 'JSON'}: {e}"
        ) from e
    try:
        return TrainConfig.model_validate(raw)
    except ValidationError as e:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or '(root)'}: {err['msg']}"
            for err in e.errors()
        )
        raise ValueError(f"training config {file} is invalid: {problems}") from e
