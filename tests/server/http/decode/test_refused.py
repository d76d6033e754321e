"""Bodies refused whatever their encoding: wrong shapes, empty or over-limit batches,
unsupported media types; and unreadable, oversized or mislabelled images."""

from __future__ import annotations

import numpy as np
import pytest

from server.errors import InvalidInput, PayloadTooLarge, UnsupportedMediaType
from tests.server.http.decode.helpers import (
    JSON,
    NPY,
    SHAPES,
    SPECS,
    as_json,
    fails,
    image_bytes,
    npy,
    rng,
    run,
)


@pytest.mark.parametrize(
    ("task", "shape"),
    [
        ("digits", (8,)),
        ("digits", (1, 8, 7)),
        ("digits", (2, 1, 8, 7)),
        ("digits", (3, 8, 7)),
        ("digits", (2, 2, 8, 8)),
        ("digits", (1, 1, 1, 8, 8)),
        ("shapes", (16, 16)),
        ("shapes", (1, 16, 16)),
        ("shapes", (16, 16, 3)),
        ("shapes", (2, 1, 3, 16, 16)),
        ("shapes", ()),
    ],
)
@pytest.mark.parametrize("kind", ["json", "npy"])
def test_wrong_shape(task: str, shape: tuple[int, ...], kind: str) -> None:
    spec = SPECS[task]
    x = np.zeros(shape, np.float32)
    body, ctype = (as_json(x), JSON) if kind == "json" else (npy(x), NPY)
    fails(InvalidInput, body, ctype, spec)


def test_empty_batch() -> None:
    fails(InvalidInput, b'{"inputs": []}', JSON)
    fails(InvalidInput, npy(np.zeros((0, 1, 8, 8), np.float32)), NPY)
    fails(InvalidInput, npy(np.zeros((0, 8, 8), np.float32)), NPY)
    fails(InvalidInput, npy(np.zeros((0, 3, 16, 16), np.float32)), NPY, SHAPES)


@pytest.mark.parametrize("kind", ["json", "npy"])
def test_batch_over_the_limit(kind: str) -> None:
    x = np.zeros((5, 1, 8, 8), np.float32)
    body, ctype = (as_json(x), JSON) if kind == "json" else (npy(x), NPY)
    fails(InvalidInput, body, ctype, max_examples=4)
    assert run(body, ctype, max_examples=5).examples == 5


@pytest.mark.parametrize(
    "ctype", ["text/plain", "image/gif", "multipart/form-data; boundary=x", None, ""]
)
def test_unsupported_media_type(ctype: str | None) -> None:
    fails(UnsupportedMediaType, as_json(np.zeros((1, 8, 8))), ctype)


def test_image_over_the_pixel_limit() -> None:
    body = image_bytes(np.zeros((40, 30), np.uint8), "PNG")
    fails(PayloadTooLarge, body, "image/png", max_image_pixels=1199)
    assert run(body, "image/png", max_image_pixels=1200).examples == 1


@pytest.mark.parametrize(
    ("body", "ctype", "fmt"),
    [
        (b"not an image", "image/png", "PNG"),
        (b"not an image", "image/jpeg", "JPEG"),
        (b"", "image/png", "PNG"),
    ],
)
def test_unreadable_image(body: bytes, ctype: str, fmt: str) -> None:
    fails(InvalidInput, body, ctype)


def test_truncated_png() -> None:
    body = image_bytes(rng().integers(0, 256, (8, 8), dtype=np.uint8), "PNG")
    fails(InvalidInput, body[: len(body) // 2], "image/png")


@pytest.mark.parametrize(
    ("fmt", "ctype"), [("PNG", "image/jpeg"), ("JPEG", "image/png"), ("GIF", "image/png")]
)
def test_image_format_must_match_the_content_type(fmt: str, ctype: str) -> None:
    body = image_bytes(np.zeros((8, 8), np.uint8), fmt)
    fails(InvalidInput, body, ctype)
