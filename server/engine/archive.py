"""Sub-network archives for ``/v1/models/{task}/levels/{level}/export``: the level exported
as a checkpoint directory (model_store.export), packed as a tar, cached per level."""

from __future__ import annotations

import asyncio
import hashlib
import io
import tarfile
import tempfile
from pathlib import Path

from fastapi.responses import Response

from model_store.checkpoint import MANIFEST, WEIGHTS
from model_store.export import export_level
from model_store.manifest import TaskEntry
from server.engine.core import InferenceService


def build_archive(service: InferenceService, task: str, level: int) -> bytes:
    """The tar archive (manifest.json, weights.safetensors) of one level."""
    with tempfile.TemporaryDirectory() as tmp:
        export_level(service.checkpoint, task, level, tmp)
        buffer = io.BytesIO()
        with tarfile.open(fileobj=buffer, mode="w") as tar:
            for name in (MANIFEST, WEIGHTS):
                info = tar.gettarinfo(str(Path(tmp) / name), arcname=name)
                info.mtime, info.uid, info.gid, info.uname, info.gname = 0, 0, 0, "", ""
                with (Path(tmp) / name).open("rb") as f:
                    tar.addfile(info, f)
        return buffer.getvalue()


async def archive_for(service: InferenceService, task: TaskEntry, level: int) -> Response:
    key = (task.name, level)
    data = service.archives.get(key)
    if data is None:
        data = await asyncio.to_thread(build_archive, service, task.name, level)
        service.archives[key] = data
    name = f"{service.manifest.name}-{task.name}-level{level}.tar"
    return Response(
        data,
        media_type="application/x-tar",
        headers={
            "Content-Disposition": f'attachment; filename="{name}"',
            "X-DVN-Archive-SHA256": hashlib.sha256(data).hexdigest(),
            "X-DVN-Level": str(level),
            "X-DVN-Units": ",".join(str(u) for u in task.levels[level - 1].units),
        },
    )
