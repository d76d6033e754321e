"""Sub-network archives: one (task, level) exported as a checkpoint directory
(model_store.export), packed as a tar."""

from __future__ import annotations

import io
import tarfile
import tempfile
from pathlib import Path

from model_store.checkpoint import Checkpoint
from model_store.export import export_level
from model_store.manifest import MANIFEST, WEIGHTS


def build_archive(checkpoint: Checkpoint, task: str, level: int) -> bytes:
    """The tar archive (manifest.json, weights.safetensors) of one level; the same bytes
    for the same checkpoint (times and owners zeroed)."""
    with tempfile.TemporaryDirectory() as tmp:
        export_level(checkpoint, task, level, tmp)
        buffer = io.BytesIO()
        with tarfile.open(fileobj=buffer, mode="w") as tar:
            for name in (MANIFEST, WEIGHTS):
                info = tar.gettarinfo(str(Path(tmp) / name), arcname=name)
                info.mtime, info.uid, info.gid, info.uname, info.gname = 0, 0, 0, "", ""
                with (Path(tmp) / name).open("rb") as f:
                    tar.addfile(info, f)
        return buffer.getvalue()
