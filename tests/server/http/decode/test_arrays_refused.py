"""JSON and .npy bodies the decoder refuses, each with its message: bad dtypes, pickles,
corrupt or lying headers, ragged or non-numeric JSON, NaN and Inf."""

from __future__ import annotations

import io
import json
import pickle
from typing import Any

import numpy as np
import pytest

from server.errors import InvalidInput
from tests.server.http.decode.helpers import DIGITS, JSON, NPY, as_json, fails, npy, shape_message


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
