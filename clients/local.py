"""``LocalDVN``: run an exported (task, level) sub-network on this machine.

    path = DVNClient(url).export("digits", budget="200kB", out_dir="digits-small")
    local = LocalDVN.load(path)
    local.predict(x)  # the probabilities the server would have answered at that level

The one place ``clients`` uses ``model_store``: loading verifies the checkpoint (format,
weights sha256, costs) exactly as the server does.
"""

from __future__ import annotations

import os
import tarfile
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from clients import _archive
from clients._encoding import as_float_array
from clients.results import ClassProbability, Prediction

if TYPE_CHECKING:
    import torch

    from model_store.manifest import Manifest
    from model_store.model import DVN


class LocalDVN:
    """An exported sub-network (one task, one level) ready to predict.

    Build it with :meth:`load`; the attributes say what it is: ``task``, ``classes``,
    ``input_shape``, ``level`` and ``units`` (in the network it was exported from),
    ``param_bytes`` and the full ``manifest``.
    """

    def __init__(self, model: DVN, manifest: Manifest, device: torch.device) -> None:
        if len(manifest.tasks) != 1 or len(manifest.tasks[0].levels) != 1:
            levels = sum(len(t.levels) for t in manifest.tasks)
            raise ValueError(
                f"checkpoint {manifest.name!r} has {len(manifest.tasks)} tasks and {levels} "
                "levels; LocalDVN runs one exported (task, level): export it first with "
                "`dvn export DIR --task T --level L --out DIR2` or DVNClient.export()"
            )
        self._model = model
        self._device = device
        self.manifest = manifest
        task = manifest.tasks[0]
        entry = task.levels[0]
        source = manifest.exported_from
        self.task: str = task.name
        self.classes: tuple[str, ...] = tuple(task.classes)
        self.input_shape: tuple[int, ...] = tuple(task.input_shape)
        self.level: int = source.level if source is not None else entry.level
        self.units: tuple[int, ...] = tuple(source.units if source is not None else entry.units)
        self.param_bytes: int = entry.param_bytes

    @classmethod
    def load(cls, path: str | os.PathLike[str], device: str = "cpu") -> LocalDVN:
        """Load an exported checkpoint: its directory or the ``.tar`` the server exports.

        Raises:
            model_store.manifest.CheckpointError (a ValueError): not a valid checkpoint
            (the message says what to fix). ValueError: more than one task or level.
            ArchiveError: an unsafe or unreadable archive. FileNotFoundError: no such path.
        """
        import torch

        from model_store.checkpoint import load

        source = Path(path)
        if not source.exists():
            raise FileNotFoundError(f"{source} does not exist")
        dev = torch.device(device)
        if source.is_file() and tarfile.is_tarfile(source):
            with tempfile.TemporaryDirectory(prefix="dvn-local-") as tmp:
                root = _archive.extract_checkpoint(source.read_bytes(), tmp)
                ckpt = load(root, device=dev)  # weights are in memory once loaded
        else:
            ckpt = load(source, device=dev)
        return cls(ckpt.model, ckpt.manifest, dev)

    def logits(self, inputs: Any) -> np.ndarray[Any, np.dtype[np.float32]]:
        """Logits ``(B, classes)`` for model-space ``inputs`` of shape ``(C, H, W)`` or
        ``(B, C, H, W)`` (``(H, W)``/``(B, H, W)`` for one-channel tasks).

        Raises:
            ValueError: wrong shape, or non-finite values. TypeError: not numeric.
        """
        import torch

        batch = self._batch(as_float_array(inputs))
        with torch.inference_mode():
            x = torch.from_numpy(batch).to(self._device)
            out = self._model(x, task=0, level=1)
        return np.asarray(out.float().cpu().numpy(), dtype=np.float32)

    def predict(self, inputs: Any, top_k: int | None = None) -> list[Prediction]:
        """One :class:`Prediction` per example, as the server computes it: softmax of the
        logits in float32, class names from the manifest; ``top_k`` replaces the full
        ``probabilities`` with the k most probable classes.

        Raises:
            ValueError: wrong shape, non-finite values or a bad ``top_k``. TypeError: not
            numeric.
        """
        if top_k is not None and not 1 <= top_k <= len(self.classes):
            raise ValueError(f"top_k must be between 1 and {len(self.classes)}, got {top_k}")
        return [self._prediction(row, top_k) for row in softmax(self.logits(inputs))]

    def _prediction(self, probs: np.ndarray[Any, Any], top_k: int | None) -> Prediction:
        best = int(np.argmax(probs))
        values: Sequence[float] = probs.tolist()
        ranked = None
        if top_k is not None:
            order = np.argsort(-probs, kind="stable")[:top_k]
            ranked = [
                ClassProbability(
                    class_index=int(i), class_name=self.classes[i], probability=values[i]
                )
                for i in order
            ]
        return Prediction(
            class_index=best,
            class_name=self.classes[best],
            probability=values[best],
            probabilities=None if top_k is not None else list(values),
            top_k=ranked,
        )

    def _batch(self, array: np.ndarray[Any, Any]) -> np.ndarray[Any, np.dtype[np.float32]]:
        shape = self.input_shape
        if shape[0] == 1 and array.ndim in (2, 3) and array.shape[-2:] == shape[1:]:
            array = array.reshape(-1, *shape)  # (H, W) or (B, H, W) of a one-channel task
        elif array.ndim == 3:
            array = array[None]
        if array.ndim != 4 or array.shape[1:] != shape or array.shape[0] == 0:
            raise ValueError(
                f"task {self.task!r} takes inputs of shape {shape} or "
                f"(B, {', '.join(map(str, shape))}) with B >= 1, got {array.shape}"
            )
        if not np.all(np.isfinite(array)):
            raise ValueError("inputs contain NaN or infinite values")
        return np.ascontiguousarray(array, dtype=np.float32)


def softmax(logits: np.ndarray[Any, Any]) -> np.ndarray[Any, np.dtype[np.float32]]:
    """Row-wise softmax in float32, computed as the server does (``torch.softmax``)."""
    import torch

    return torch.softmax(torch.from_numpy(np.asarray(logits, dtype=np.float32)), dim=-1).numpy()
