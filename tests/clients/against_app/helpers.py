"""What the clients' tests against the real in-process app share: the app with a client
of each kind, the model's own answers, and test inputs of every kind."""

from __future__ import annotations

import io
from dataclasses import dataclass
from typing import Any

import httpx
import numpy as np
from PIL import Image

from clients.async_client import AsyncDVNClient
from clients.results import InferResult, ModelSummary
from model_store.checkpoint import Checkpoint
from tests.conftest import DIGITS, SHAPES, AppClient, ServeFactory
from tests.server.helpers import expected_probs

TASKS = {"digits": DIGITS, "shapes": SHAPES}


# Parameter bytes of the tiny checkpoint's levels (float32, resnet-tiny over both tasks).
DIGITS_BYTES = {1: 1744, 2: 5816, 3: 12256, 4: 21064}


SHAPES_BYTES = {1: 1848, 2: 6032, 3: 12584, 4: 21504}


# Units of each level: the tasks walk the shared units in opposite orders.
UNITS = {
    "digits": [[0], [0, 1], [0, 1, 2], [0, 1, 2, 3]],
    "shapes": [[3], [3, 2], [3, 2, 1], [3, 2, 1, 0]],
}


@dataclass
class Served:
    dvn: AsyncDVNClient
    http: AppClient  # the raw app client (metrics)


async def connect(serve: ServeFactory, api_key: str | None = None, **settings: Any) -> Served:
    http = await serve(**settings)
    dvn = AsyncDVNClient(
        base_url="http://test", transport=httpx.ASGITransport(app=http.app), api_key=api_key
    )
    return Served(dvn, http)


def rng_array(seed: int, *shape: int) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


def preprocess(image_bytes: bytes, task: str) -> np.ndarray:
    """The task's image preprocessing, written out: colour mode, bilinear resize to (W, H),
    /255, (x - mean) / std; (1, C, H, W)."""
    prep = TASKS[task].preprocessing
    image = Image.open(io.BytesIO(image_bytes)).convert(prep.color_mode)
    h, w = prep.size
    pixels = np.asarray(image.resize((w, h), Image.Resampling.BILINEAR), dtype=np.float32) / 255
    chw = pixels[None] if pixels.ndim == 2 else pixels.transpose(2, 0, 1)
    mean = np.asarray(prep.mean, dtype=np.float32)[:, None, None]
    std = np.asarray(prep.std, dtype=np.float32)[:, None, None]
    return ((chw - mean) / std)[None]


def image_bytes(fmt: str, size: tuple[int, int], seed: int) -> bytes:
    pixels = np.random.default_rng(seed).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels, "RGB").save(buffer, format=fmt)
    return buffer.getvalue()


def check_result(
    reference: Checkpoint, result: InferResult, x: np.ndarray, models: ModelSummary
) -> None:
    """``result`` is the model's answer for ``x`` (B, C, H, W) at the level it reports."""
    want = expected_probs(reference, result.task, result.level, x)
    assert len(result.predictions) == len(want)
    classes = TASKS[result.task].classes
    for row, pred in zip(want, result.predictions, strict=True):
        assert pred.probabilities is not None and pred.top_k is None
        np.testing.assert_allclose(pred.probabilities, row, rtol=0, atol=1e-5)
        assert pred.class_index == int(row.argmax())
        assert pred.class_name == classes[int(row.argmax())]
        assert abs(pred.probability - float(row.max())) <= 1e-5
    level = models.task(result.task).levels[result.level - 1]
    assert result.units == level.units
    assert result.cost.param_bytes == level.param_bytes
    assert result.cost.params == level.params and result.cost.flops == level.flops
    assert result.model.name == "tiny" and result.model.version == "0.0.1"
    assert result.model.sha256 == reference.manifest.weights_sha256
    assert result.request_id is not None and len(result.request_id) == 32


def digits_unsatisfiable(budget_bytes: int, human: str) -> str:
    return (
        f"memory budget {budget_bytes} B ({human}) is below the smallest level of task "
        f"'digits': level 1 needs {DIGITS_BYTES[1]} B (1.7 KiB); raise the budget to at least that"
    )
