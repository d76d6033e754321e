"""Saving and loading DVN checkpoints: ``weights.safetensors`` + ``manifest.json``.

Loading never unpickles. It verifies the format version, the weights' sha256, that the
tensors match the architecture, and that the manifest's costs match the model's; every
failure is a :class:`CheckpointError` saying what is wrong and how to fix it.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from model_store.costs import LevelCost, dtype_size, level_costs, level_params
from model_store.manifest import (
    FORMAT,
    FORMAT_VERSION,
    MANIFEST,
    WEIGHTS,
    Accuracy,
    Architecture,
    CheckpointError,
    LevelEntry,
    Manifest,
    TaskEntry,
    config_from_manifest,
    read_manifest,
)
from model_store.model import DVN


@dataclass(frozen=True)
class Checkpoint:
    """A loaded checkpoint: the model (eval mode) and its manifest."""

    model: DVN
    manifest: Manifest
    path: Path


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def build_manifest(
    model: DVN,
    *,
    name: str,
    version: str,
    weights_sha256: str,
    accuracy: dict[tuple[str, int], Accuracy] | None = None,
    training: dict[str, Any] | None = None,
    costs: list[LevelCost] | None = None,
    extra: dict[str, Any] | None = None,
) -> Manifest:
    """The manifest of ``model``, with costs computed from its shapes."""
    cfg = model.config
    costs = costs if costs is not None else level_costs(model)
    accuracy = accuracy or {}
    tasks = []
    for t, spec in enumerate(cfg.tasks):
        levels = [
            LevelEntry(**c.to_dict(), accuracy=accuracy.get((spec.name, c.level)))
            for c in costs
            if c.task == spec.name
        ]
        tasks.append(
            TaskEntry(**spec.to_dict(), unit_order=list(cfg.unit_orders[t]), levels=levels)
        )
    return Manifest(
        format=FORMAT,
        format_version=FORMAT_VERSION,
        name=name,
        version=version,
        created_at=datetime.now(UTC).isoformat(timespec="seconds"),
        architecture=Architecture(**cfg.to_dict()),
        num_units=cfg.num_units,
        tasks=tasks,
        training=training,
        weights_sha256=weights_sha256,
        **(extra or {}),
    )


def save(
    model: DVN,
    out_dir: str | os.PathLike[str],
    *,
    name: str,
    version: str = "1.0.0",
    accuracy: dict[tuple[str, int], Accuracy] | None = None,
    training: dict[str, Any] | None = None,
    extra: dict[str, Any] | None = None,
) -> Manifest:
    """Write ``model`` as a checkpoint directory (created if missing, files replaced
    atomically) and return its manifest."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    dtype = getattr(torch, model.config.dtype)
    tensors = {k: v.detach().to("cpu", dtype).contiguous() for k, v in model.state_dict().items()}
    with tempfile.TemporaryDirectory(dir=out) as tmp:
        weights_tmp = Path(tmp) / WEIGHTS
        save_file(tensors, str(weights_tmp), metadata={"format": "pt"})
        manifest = build_manifest(
            model,
            name=name,
            version=version,
            weights_sha256=sha256_file(weights_tmp),
            accuracy=accuracy,
            training=training,
            extra=extra,
        )
        manifest_tmp = Path(tmp) / MANIFEST
        manifest_tmp.write_text(json.dumps(manifest.model_dump(mode="json"), indent=2) + "\n")
        for tmp_file in (weights_tmp, manifest_tmp):
            tmp_file.chmod(0o644)  # temp files are 0600: a server user must read them
        os.replace(weights_tmp, out / WEIGHTS)
        os.replace(manifest_tmp, out / MANIFEST)
    return manifest


def _check_shapes(model: DVN, tensors: dict[str, torch.Tensor], weights: Path) -> None:
    expected = model.state_dict()
    missing = sorted(set(expected) - set(tensors))
    unexpected = sorted(set(tensors) - set(expected))
    wrong = [
        f"{k} is {tuple(tensors[k].shape)} but the architecture needs {tuple(v.shape)}"
        for k, v in expected.items()
        if k in tensors and tensors[k].shape != v.shape
    ]
    problems = []
    if missing:
        problems.append(f"{len(missing)} tensors missing (first: {missing[0]})")
    if unexpected:
        problems.append(f"{len(unexpected)} unexpected tensors (first: {unexpected[0]})")
    if wrong:
        problems.append(f"{len(wrong)} shape mismatches (first: {wrong[0]})")
    if problems:
        raise CheckpointError(
            f"{weights} does not match the manifest's architecture: {'; '.join(problems)}; "
            "the manifest and weights come from different models: re-export the checkpoint"
        )


def _check_levels(model: DVN, manifest: Manifest) -> None:
    """The manifest's level table must be the one the weights give: the server selects
    levels by these units and costs."""
    cfg = model.config
    size = dtype_size(cfg.dtype)
    edited = "the manifest was edited: re-export"
    if manifest.num_units != cfg.num_units:
        raise CheckpointError(
            f"manifest says num_units {manifest.num_units} but its backbone has "
            f"{cfg.num_units}; {edited}"
        )
    for t, entry in enumerate(manifest.tasks):
        levels = [lv.level for lv in entry.levels]
        if levels != list(range(1, cfg.num_levels + 1)):
            raise CheckpointError(
                f"manifest lists levels {levels} for task {entry.name!r} but the architecture "
                f"has levels 1..{cfg.num_levels}; {edited}"
            )
        for lv in entry.levels:
            where = f"manifest says task {entry.name!r} level {lv.level}"
            units = list(cfg.unit_orders[t][: lv.level])
            if lv.units != units:
                raise CheckpointError(
                    f"{where} holds units {lv.units} but its unit order gives {units}; {edited}"
                )
            actual = level_params(model, t, lv.level)
            if actual != lv.params:
                raise CheckpointError(
                    f"{where} has {lv.params} params but the weights give {actual}; {edited}"
                )
            if lv.param_bytes != actual * size:
                raise CheckpointError(
                    f"{where} has {lv.param_bytes} param_bytes but the weights give "
                    f"{actual * size}; {edited}"
                )


def load(path: str | os.PathLike[str], device: str | torch.device = "cpu") -> Checkpoint:
    """Load and verify a checkpoint; the model is returned in eval mode on ``device``.

    Raises:
        CheckpointError: see the module docstring.
    """
    root = Path(path)
    manifest = read_manifest(root)
    weights = root / WEIGHTS
    if not weights.is_file():
        raise CheckpointError(f"{weights} is missing; re-copy the checkpoint directory")
    digest = sha256_file(weights)
    if digest != manifest.weights_sha256:
        raise CheckpointError(
            f"{weights} has sha256 {digest[:12]}…, but the manifest expects "
            f"{manifest.weights_sha256[:12]}…: the file was modified or truncated; "
            "re-copy the checkpoint from its source"
        )
    try:
        tensors = load_file(str(weights))
    except (SafetensorError, OSError, ValueError) as e:
        raise CheckpointError(f"{weights} is not a readable safetensors file ({e})") from e
    config = config_from_manifest(manifest)
    model = DVN(config)
    _check_shapes(model, tensors, weights)
    model.load_state_dict(tensors, strict=True)
    _check_levels(model, manifest)
    model.to(device).eval()
    return Checkpoint(model=model, manifest=manifest, path=root)
