"""The ``manifest.json`` of a DVN checkpoint (see docs/checkpoint-format.md): its schema,
reading it, and the architecture it describes. Needs no torch: front ends read it too."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from model_store.arch import Backbone, DVNConfig
from model_store.tasks import TaskSpec

FORMAT: Literal["dvn-checkpoint"] = "dvn-checkpoint"
FORMAT_VERSION = 1
WEIGHTS = "weights.safetensors"
MANIFEST = "manifest.json"


class CheckpointError(ValueError):
    """A checkpoint cannot be loaded; the message says why and what to do."""


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


def read_manifest(path: str | os.PathLike[str]) -> Manifest:
    """Read and validate ``manifest.json`` of a checkpoint directory (weights untouched).

    Raises:
        CheckpointError: missing, not JSON, another format, a newer version, bad fields.
    """
    root = Path(path)
    file = root / MANIFEST
    if not root.is_dir():
        raise CheckpointError(
            f"checkpoint directory {root} does not exist; pass a directory holding "
            f"{MANIFEST} and {WEIGHTS} (e.g. model_store/checkpoints/demo)"
        )
    if not file.is_file():
        raise CheckpointError(
            f"{file} is missing: {root} is not a DVN checkpoint; create one with "
            "`dvn train` or `dvn export`"
        )
    try:
        raw = json.loads(file.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CheckpointError(
            f"{file} is not valid JSON ({e}); the file is damaged: re-copy the checkpoint"
        ) from e
    if not isinstance(raw, dict) or raw.get("format") != FORMAT:
        got = raw.get("format") if isinstance(raw, dict) else type(raw).__name__
        raise CheckpointError(
            f"{file} has format {got!r}, expected {FORMAT!r}: not a DVN checkpoint"
        )
    version = raw.get("format_version")
    if not isinstance(version, int) or version < 1:
        raise CheckpointError(f"{file} has no valid format_version (got {version!r})")
    if version > FORMAT_VERSION:
        raise CheckpointError(
            f"{file} has format_version {version}, newer than this dvn-serve reads "
            f"(up to {FORMAT_VERSION}); upgrade dvn-serve to load it"
        )
    try:
        return Manifest.model_validate(raw)
    except ValidationError as e:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc'])}: {err['msg']}" for err in e.errors()[:5]
        )
        raise CheckpointError(f"{file} does not match the checkpoint schema: {problems}") from e


def config_from_manifest(manifest: Manifest) -> DVNConfig:
    """Rebuild the architecture a manifest describes."""
    try:
        backbone = Backbone.from_dict(manifest.architecture.backbone)
        tasks = tuple(
            TaskSpec.from_dict(
                t.model_dump(include={"name", "classes", "input_shape", "preprocessing"})
            )
            for t in manifest.tasks
        )
        return DVNConfig(
            backbone=backbone,
            tasks=tasks,
            unit_orders=tuple(tuple(t.unit_order) for t in manifest.tasks),
            arch_name=manifest.architecture.name,
            dtype=manifest.architecture.dtype,
        )
    except (KeyError, TypeError, ValueError) as e:
        raise CheckpointError(f"manifest describes an invalid architecture: {e}") from e
