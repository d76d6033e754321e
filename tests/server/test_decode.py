"""Request bodies to model-space arrays: JSON, .npy, PNG and JPEG, and every refusal."""

from __future__ import annotations

import io
import json
import pickle
from typing import Any

import numpy as np
import pytest
from PIL import Image

from model_store.tasks import Preprocessing, TaskSpec
from server.decode import Inputs, decode
from server.errors import InvalidInput, PayloadTooLarge, ServeError, UnsupportedMediaType

DIGITS = TaskSpec(
    name="digits",
    classes=tuple(str(d) for d in range(10)),
    input_shape=(1, 8, 8),
    preprocessing=Preprocessing(color_mode="L", size=(8, 8), mean=(0.5,), std=(0.25,)),
)
SHAPES = TaskSpec(
    name="shapes",
    classes=tuple(f"c{i}" for i in range(8)),
    input_shape=(3, 16, 16),
    preprocessing=Preprocessing(
        color_mode="RGB", size=(16, 16), mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25)
    ),
)
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
) -> str:
    """Decode, expecting ``error`` exactly; returns its message."""
    with pytest.raises(ServeError) as info:
        run(body, content_type, spec, **limits)
    assert type(info.value) is error
    return info.value.message


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


# -- accepted bodies ----------------------------------------------------------------------


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


def normalised(pixels: np.ndarray, spec: TaskSpec) -> np.ndarray:
    """(pixel / 255 - mean) / std as (1, C, H, W), computed independently of the server."""
    x = pixels.astype(np.float32) / 255.0
    x = x[None] if x.ndim == 2 else x.transpose(2, 0, 1)
    mean = np.asarray(spec.preprocessing.mean, np.float32)[:, None, None]
    std = np.asarray(spec.preprocessing.std, np.float32)[:, None, None]
    return ((x - mean) / std)[None]


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


# -- refused bodies -----------------------------------------------------------------------


def shape_message(spec: TaskSpec, got: tuple[int, ...]) -> str:
    dims = ", ".join(map(str, spec.input_shape))
    return (
        f"task {spec.name!r} takes one example of shape ({dims}) or a batch (B, {dims}); "
        f"got shape {got}"
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
    assert fails(InvalidInput, body, ctype, spec) == shape_message(spec, shape)


@pytest.mark.parametrize(
    ("dtype", "name"),
    [(np.int64, "int64"), (np.uint8, "uint8"), (np.bool_, "bool"), (np.complex64, "complex64")],
)
def test_npy_non_float_dtype(dtype: Any, name: str) -> None:
    message = fails(InvalidInput, npy(np.zeros((1, 8, 8), dtype)), NPY)
    assert message == (
        f".npy dtype {name} is not accepted: send float32 (or float16/float64) model-space "
        "values; for raw pixels send a PNG or JPEG image"
    )


def test_npy_object_array_refused_without_unpickling() -> None:
    body = npy(np.array([{"x": 1}, None], dtype=object), allow_pickle=True)
    assert fails(InvalidInput, body, NPY) == (
        ".npy body holds Python objects, which would need unpickling: refused; send a "
        "numeric array (np.save of a float32 array)"
    )


NOT_NPY = (
    "body is not a valid .npy array (it does not start with the .npy magic '\\x93NUMPY'); "
    "send the bytes np.save writes"
)


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"garbage",
        pickle.dumps(np.zeros((1, 8, 8), np.float32)),
        json.dumps({"inputs": [[[0.0] * 8] * 8]}).encode(),
    ],
)
def test_not_npy_at_all(body: bytes) -> None:
    assert fails(InvalidInput, body, NPY) == NOT_NPY


def test_corrupt_npy() -> None:
    good = npy(np.zeros((1, 8, 8), np.float32))
    assert fails(InvalidInput, good[:-10], NPY) == (
        "body is not a valid .npy array (its header declares shape (1, 8, 8) of float32, "
        "256 bytes, but the body holds 246); send the whole np.save output"
    )
    assert fails(InvalidInput, good[:20], NPY) == (
        "body is not a valid .npy array (unreadable header: EOF: reading array header, "
        "expected 118 bytes got 10)"
    )
    # A header numpy's tokenizer chokes on.
    message = fails(InvalidInput, good.replace(b"(1, 8, 8)", b"(1, 8, 8 "), NPY)
    assert message == (
        "body is not a valid .npy array (unreadable header: ('EOF in multi-line statement', "
        "(2, 0)))"
    )
    message = fails(InvalidInput, good.replace(b"'shape'", b"'shape\n"), NPY)
    assert message.startswith("body is not a valid .npy array (unreadable header: Cannot parse")


@pytest.mark.parametrize(
    ("shape", "declared"), [((10**13,), 4 * 10**13), ((10**9, 1, 8, 8), 256 * 10**9)]
)
def test_npy_header_declaring_more_than_the_body_holds(
    shape: tuple[int, ...], declared: int
) -> None:
    """numpy would allocate the declared size before reading: terabytes for 100 bytes."""
    buffer = io.BytesIO()
    header = {"descr": "<f4", "fortran_order": False, "shape": shape}
    np.lib.format.write_array_header_1_0(buffer, header)
    body = buffer.getvalue() + bytes(64)
    assert fails(InvalidInput, body, NPY) == (
        f"body is not a valid .npy array (its header declares shape {shape} of float32, "
        f"{declared} bytes, but the body holds 64); send the whole np.save output"
    )


def test_npz_refused() -> None:
    buffer = io.BytesIO()
    np.savez(buffer, x=np.zeros((1, 8, 8), np.float32))
    assert fails(InvalidInput, buffer.getvalue(), NPY) == (
        "body is an .npz archive, not one .npy array; send np.save output"
    )


RAGGED = '"inputs" must be a number array (nested lists of equal length, numbers only); '


@pytest.mark.parametrize(
    "inputs",
    [
        [[[0.0] * 8] * 7 + [[0.0] * 7]],  # one row short
        [[[0.0] * 8] * 8, [[0.0] * 8]],
        [[[[0.0] * 8] * 8], [[0.0] * 8] * 8],  # mixed depth
    ],
)
def test_ragged_json(inputs: Any) -> None:
    message = fails(InvalidInput, json.dumps({"inputs": inputs}).encode(), JSON)
    assert message.startswith(RAGGED + "it is ragged or holds non-numbers (")


@pytest.mark.parametrize(
    ("value", "dtype"),
    [("0.5", "<U3"), ("abc", "<U3"), (True, "bool"), (None, "object"), ({"a": 1}, "object")],
)
def test_non_numbers_in_json(value: Any, dtype: str) -> None:
    rows = [[value] * 8] * 8
    message = fails(InvalidInput, json.dumps({"inputs": [rows]}).encode(), JSON)
    assert message == (
        RAGGED + f"it holds non-numbers (strings, booleans or nulls: numpy dtype {dtype})"
    )


def test_a_single_string_among_numbers() -> None:
    rows = [[0.5] * 8 for _ in range(8)]
    rows[3][4] = "0.5"  # type: ignore[call-overload]
    message = fails(InvalidInput, json.dumps({"inputs": [rows]}).encode(), JSON)
    assert message.startswith(RAGGED + "it holds non-numbers (strings, booleans or nulls")


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (
            b'{"inputs": [1, 2',
            "body is not valid JSON (Expecting ',' delimiter: line 1 column 17 (char 16)); "
            'send {"inputs": [...]}',
        ),
        (b"\xff\xfe", None),
        (b"[[1, 2]]", 'JSON body must be an object with an "inputs" field: {"inputs": [...]}'),
        (b'{"input": []}', 'JSON body must be an object with an "inputs" field: {"inputs": [...]}'),
    ],
)
def test_bad_json(body: bytes, message: str | None) -> None:
    got = fails(InvalidInput, body, JSON)
    if message is None:
        assert got.startswith("body is not valid JSON (")
    else:
        assert got == message


def test_json_nested_too_deeply() -> None:
    body = b'{"inputs": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"
    assert fails(InvalidInput, body, JSON) == (
        'body is not valid JSON (nested too deeply); send {"inputs": [...]} with the task\'s '
        "input shape"
    )
    deep = b'{"inputs": ' + b"[" * 40 + b"1" + b"]" * 40 + b"}"  # parses; wrong shape
    assert fails(InvalidInput, deep, JSON) == shape_message(DIGITS, (1,) * 40)


NON_FINITE = (
    "inputs contain NaN or Inf (first at index {}, after float32 conversion); send finite values"
)


@pytest.mark.parametrize("value", [float("nan"), float("inf"), float("-inf")])
@pytest.mark.parametrize("kind", ["json", "npy"])
def test_nan_and_inf(value: float, kind: str) -> None:
    x = np.zeros((2, 1, 8, 8), np.float32)
    x[1, 0, 2, 5] = value
    body, ctype = (as_json(x), JSON) if kind == "json" else (npy(x), NPY)  # json writes NaN
    assert fails(InvalidInput, body, ctype) == NON_FINITE.format("(1, 0, 2, 5)")


@pytest.mark.filterwarnings("ignore:overflow encountered in cast:RuntimeWarning")
def test_finite_float64_that_overflows_float32() -> None:
    x = np.zeros((1, 8, 8))
    x[0, 0, 1] = 1e39
    assert fails(InvalidInput, as_json(x), JSON) == NON_FINITE.format("(0, 0, 0, 1)")
    assert fails(InvalidInput, npy(x), NPY) == NON_FINITE.format("(0, 0, 0, 1)")


EMPTY = "the batch is empty; send at least one example"


def test_empty_batch() -> None:
    assert fails(InvalidInput, b'{"inputs": []}', JSON) == EMPTY
    assert fails(InvalidInput, npy(np.zeros((0, 1, 8, 8), np.float32)), NPY) == EMPTY
    assert fails(InvalidInput, npy(np.zeros((0, 8, 8), np.float32)), NPY) == EMPTY
    assert fails(InvalidInput, npy(np.zeros((0, 3, 16, 16), np.float32)), NPY, SHAPES) == EMPTY


@pytest.mark.parametrize("kind", ["json", "npy"])
def test_batch_over_the_limit(kind: str) -> None:
    x = np.zeros((5, 1, 8, 8), np.float32)
    body, ctype = (as_json(x), JSON) if kind == "json" else (npy(x), NPY)
    assert fails(InvalidInput, body, ctype, max_examples=4) == (
        "batch of 5 examples is over the limit of 4 per request; split it into smaller requests"
    )
    assert run(body, ctype, max_examples=5).examples == 5


@pytest.mark.parametrize(
    ("ctype", "shown"),
    [
        ("text/plain", "'text/plain'"),
        ("image/gif", "'image/gif'"),
        ("multipart/form-data; boundary=x", "'multipart/form-data'"),
        (None, "'(none)'"),
        ("", "'(none)'"),
    ],
)
def test_unsupported_media_type(ctype: str | None, shown: str) -> None:
    message = fails(UnsupportedMediaType, as_json(np.zeros((1, 8, 8))), ctype)
    assert message == (
        f"content type {shown} is not accepted; send application/json, application/x-npy, "
        "image/png or image/jpeg"
    )


def test_image_over_the_pixel_limit() -> None:
    body = image_bytes(np.zeros((40, 30), np.uint8), "PNG")
    assert fails(PayloadTooLarge, body, "image/png", max_image_pixels=1199) == (
        "image is 30x40 = 1200 pixels, over the limit of 1199; the task takes 8x8: resize it first"
    )
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
    message = fails(InvalidInput, body, ctype)
    assert message.startswith(f"body is not a readable {fmt} image (cannot identify image file")


def test_truncated_png() -> None:
    body = image_bytes(rng().integers(0, 256, (8, 8), dtype=np.uint8), "PNG")
    message = fails(InvalidInput, body[: len(body) // 2], "image/png")
    assert message.startswith("body is not a readable PNG image (")


@pytest.mark.parametrize(
    ("fmt", "ctype", "message"),
    [
        (
            "PNG",
            "image/jpeg",
            "body is a PNG image but the content type says JPEG; send the matching Content-Type",
        ),
        (
            "JPEG",
            "image/png",
            "body is a JPEG image but the content type says PNG; send the matching Content-Type",
        ),
        (
            "GIF",
            "image/png",
            "body is a GIF image but the content type says PNG; send the matching Content-Type",
        ),
    ],
)
def test_image_format_must_match_the_content_type(fmt: str, ctype: str, message: str) -> None:
    body = image_bytes(np.zeros((8, 8), np.uint8), fmt)
    assert fails(InvalidInput, body, ctype) == message
