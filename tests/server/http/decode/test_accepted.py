"""Request bodies the decoder accepts, to model-space arrays: JSON, .npy, PNG and JPEG."""

from __future__ import annotations

import io
from typing import Any

import numpy as np
import pytest
from PIL import Image

from tests.server.http.decode.helpers import (
    DIGITS,
    JSON,
    NPY,
    SHAPES,
    SPECS,
    as_json,
    image_bytes,
    normalised,
    npy,
    rng,
    run,
)


@pytest.mark.parametrize("task", ["digits", "shapes"])
@pytest.mark.parametrize("kind", ["json", "npy"])
@pytest.mark.parametrize("batch", [None, 1, 3])
def test_arrays(task: str, kind: str, batch: int | None) -> None:
    spec = SPECS[task]
    shape = spec.input_shape if batch is None else (batch, *spec.input_shape)
    x = rng().standard_normal(shape).astype(np.float32)
    body, ctype = (as_json(x), JSON) if kind == "json" else (npy(x), NPY)
    got = run(body, ctype, spec)
    assert got.array.dtype == np.float32
    assert got.array.flags.c_contiguous
    assert got.batched is (batch is not None)
    assert got.examples == (1 if batch is None else batch)
    np.testing.assert_array_equal(got.array, x.reshape(-1, *spec.input_shape))


@pytest.mark.parametrize(
    ("shape", "examples", "batched"), [((8, 8), 1, False), ((5, 8, 8), 5, True)]
)
@pytest.mark.parametrize("kind", ["json", "npy"])
def test_one_channel_tasks_take_arrays_without_the_channel(
    shape: tuple[int, ...], examples: int, batched: bool, kind: str
) -> None:
    x = rng().standard_normal(shape).astype(np.float32)
    body, ctype = (as_json(x), JSON) if kind == "json" else (npy(x), NPY)
    got = run(body, ctype)
    assert (got.examples, got.batched) == (examples, batched)
    np.testing.assert_array_equal(got.array, x.reshape(examples, 1, 8, 8))


@pytest.mark.parametrize("dtype", [np.float16, np.float64, ">f4"])
def test_npy_float_dtypes_become_float32(dtype: Any) -> None:
    x = rng().standard_normal((2, 1, 8, 8)).astype(dtype)
    got = run(npy(x), NPY)
    assert got.array.dtype == np.float32
    np.testing.assert_array_equal(got.array, x.astype(np.float32))


def test_fortran_order_npy() -> None:
    x = np.asfortranarray(rng().standard_normal((2, 1, 8, 8)).astype(np.float32))
    np.testing.assert_array_equal(run(npy(x), NPY).array, x)


@pytest.mark.parametrize(
    "ctype", ["application/json; charset=utf-8", "APPLICATION/JSON", " application/json "]
)
def test_content_type_parameters_and_case(ctype: str) -> None:
    assert run(as_json(np.zeros((1, 8, 8))), ctype).examples == 1


def test_json_integers_are_numbers() -> None:
    got = run(as_json(np.ones((1, 8, 8), dtype=int)), JSON)
    np.testing.assert_array_equal(got.array, np.ones((1, 1, 8, 8), np.float32))


@pytest.mark.parametrize("task", ["digits", "shapes"])
def test_png_at_the_task_size(task: str) -> None:
    spec = SPECS[task]
    h, w = spec.preprocessing.size
    shape = (h, w) if spec.preprocessing.color_mode == "L" else (h, w, 3)
    pixels = rng().integers(0, 256, shape, dtype=np.uint8)
    got = run(image_bytes(pixels, "PNG"), "image/png", spec)
    assert (got.examples, got.batched) == (1, False)
    np.testing.assert_allclose(got.array, normalised(pixels, spec), rtol=0, atol=1e-6)


def test_png_colour_converted_and_resized_bilinear() -> None:
    pixels = rng().integers(0, 256, (20, 12, 3), dtype=np.uint8)  # (H, W, RGB)
    got = run(image_bytes(pixels, "PNG"), "image/png", DIGITS)
    reference = np.asarray(
        Image.fromarray(pixels).convert("L").resize((8, 8), Image.Resampling.BILINEAR)
    )
    np.testing.assert_allclose(got.array, normalised(reference, DIGITS), rtol=0, atol=1e-6)
    gray = rng().integers(0, 256, (16, 16), dtype=np.uint8)  # grey upload to an RGB task
    got = run(image_bytes(gray, "PNG"), "image/png", SHAPES)
    expected = normalised(np.repeat(gray[:, :, None], 3, axis=2), SHAPES)
    np.testing.assert_allclose(got.array, expected, rtol=0, atol=1e-6)


def test_png_with_alpha_drops_it() -> None:
    rgba = rng().integers(0, 256, (16, 16, 4), dtype=np.uint8)
    got = run(image_bytes(rgba, "PNG"), "image/png", SHAPES)
    np.testing.assert_allclose(got.array, normalised(rgba[:, :, :3], SHAPES), atol=1e-6)


@pytest.mark.parametrize("ctype", ["image/jpeg", "image/jpg"])
def test_jpeg(ctype: str) -> None:
    pixels = rng().integers(0, 256, (16, 16, 3), dtype=np.uint8)
    body = image_bytes(pixels, "JPEG", quality=90)
    decoded = np.asarray(Image.open(io.BytesIO(body)).convert("RGB"))  # lossy: what it holds
    got = run(body, ctype, SHAPES)
    np.testing.assert_allclose(got.array, normalised(decoded, SHAPES), rtol=0, atol=1e-6)
