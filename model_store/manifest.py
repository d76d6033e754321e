"""The ``manifest.json`` schema of a DVN checkpoint (see docs/checkpoint-format.md)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

FORMAT: Literal["dvn-checkpoint"] = "dvn-checkpoint"
FORMAT_VERSION = 1


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Accuracy(_Strict):
    """Held-out accuracy of one (task, level) and what it was measured on."""

    value: float = Field(ge=0.0, le=1.0)
    examples: int = Field(ge=1)
    data: str


class LevelEntry(_Strict):
    level: int = Field(ge=1)
    units: list[int]
    params: int = Field(ge=1)
    param_bytes: int = Field(ge=1)
    flops: int = Field(ge=0)
    accuracy: Accuracy | None = None


class TaskEntry(_Strict):
    name: str
    classes: list[str]
    input_shape: list[int] = Field(min_length=3, max_length=3)
    preprocessing: dict[str, Any]
    unit_order: list[int]
    levels: list[LevelEntry]


class Architecture(_Strict):
    name: str
    backbone: dict[str, Any]
    dtype: str


class ExportedFrom(_Strict):
    """Where an exported sub-network came from."""

    name: str
    version: str
    weights_sha256: str
    task: str
    level: int
    units: list[int]


class Manifest(_Strict):
    format: Literal["dvn-checkpoint"]
    format_version: int
    name: str
    version: str
    created_at: str
    architecture: Architecture
    num_units: int = Field(ge=1)
    tasks: list[TaskEntry] = Field(min_length=1)
    training: dict[str, Any] | None = None
    exported_from: ExportedFrom | None = None
    weights_sha256: str = Field(pattern=r"^[0-9a-f]{64}$")

    def task(self, name: str) -> TaskEntry:
        for t in self.tasks:
            if t.name == name:
                return t
        raise KeyError(name)
