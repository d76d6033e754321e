"""What the decoding tests share: task specs, running the decoder on a body, and bodies of
every kind (JSON, .npy, PNG, JPEG)."""

from __future__ import annotations

import io
import json
from typing import Any

import numpy as np
import pytest
from PIL import Image

from model_store.tasks import TaskSpec
from server.errors import ServeError
from server.http.decode import Inputs, decode
from tests.conftest import DIGITS, SHAPES

SPECS = {"digits": DIGITS, "shapes": SHAPES}


JSON = "application/json"


NPY = "application/x-npy"


def run(
    body: bytes,
    content_type: str | None,
    spec: TaskSpec = DIGITS,
    *,
    max_examples: int = 16,
    max_image_pixels: int = 10_000,
) -> Inputs:
    return decode(
        body, content_type, spec, max_examples=max_examples, max_image_pixels=max_image_pixels
    )


def fails(
    error: type[ServeError],
    body: bytes,
    content_type: str | None,
    spec: TaskSpec = DIGITS,
    **limits: int,
) -> ServeError:
    """Decode, expecting ``error`` exactly, and return it (its message is pinned in
    tests/server/messages.py)."""
    with pytest.raises(ServeError) as info:
        run(body, content_type, spec, **limits)
    assert type(info.value) is error
    assert set(info.value.body()["error"]) == {"type", "message"}
    return info.value


def npy(array: np.ndarray, allow_pickle: bool = False) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=allow_pickle)
    return buffer.getvalue()


def as_json(array: Any) -> bytes:
    return json.dumps({"inputs": np.asarray(array).tolist()}).encode()


def image_bytes(pixels: np.ndarray, fmt: str, **save: Any) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format=fmt, **save)
    return buffer.getvalue()


def rng() -> np.random.Generator:
    return np.random.default_rng(7)


def normalised(pixels: np.ndarray, spec: TaskSpec) -> np.ndarray:
    """(pixel / 255 - mean) / std as (1, C, H, W), computed independently of the server."""
    x = pixels.astype(np.float32) / 255.0
    x = x[None] if x.ndim == 2 else x.transpose(2, 0, 1)
    mean = np.asarray(spec.preprocessing.mean, np.float32)[:, None, None]
    std = np.asarray(spec.preprocessing.std, np.float32)[:, None, None]
    return ((x - mean) / std)[None]
