"""JSON and .npy bodies the decoder refuses, by error type (the messages are pinned in
tests/server/messages.py): bad dtypes, pickles, corrupt or lying headers,
ragged or non-numeric JSON, NaN and Inf."""

from __future__ import annotations

import io
import json
import pickle
from typing import Any

import numpy as np
import pytest

from server.errors import InvalidInput
from tests.server.http.decode.helpers import JSON, NPY, as_json, fails, npy


@pytest.mark.parametrize(
    ("dtype", "name"),
    [(np.int64, "int64"), (np.uint8, "uint8"), (np.bool_, "bool"), (np.complex64, "complex64")],
)
def test_npy_non_float_dtype(dtype: Any, name: str) -> None:
    fails(InvalidInput, npy(np.zeros((1, 8, 8), dtype)), NPY)


def test_npy_object_array_refused_without_unpickling() -> None:
    body = npy(np.array([{"x": 1}, None], dtype=object), allow_pickle=True)
    fails(InvalidInput, body, NPY)


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
    fails(InvalidInput, body, NPY)


def test_corrupt_npy() -> None:
    good = npy(np.zeros((1, 8, 8), np.float32))
    fails(InvalidInput, good[:-10], NPY)
    fails(InvalidInput, good[:20], NPY)
    # A header numpy's tokenizer chokes on.
    fails(InvalidInput, good.replace(b"(1, 8, 8)", b"(1, 8, 8 "), NPY)
    fails(InvalidInput, good.replace(b"'shape'", b"'shape\n"), NPY)


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
    fails(InvalidInput, body, NPY)


def test_npz_refused() -> None:
    buffer = io.BytesIO()
    np.savez(buffer, x=np.zeros((1, 8, 8), np.float32))
    fails(InvalidInput, buffer.getvalue(), NPY)


@pytest.mark.parametrize(
    "inputs",
    [
        [[[0.0] * 8] * 7 + [[0.0] * 7]],  # one row short
        [[[0.0] * 8] * 8, [[0.0] * 8]],
        [[[[0.0] * 8] * 8], [[0.0] * 8] * 8],  # mixed depth
    ],
)
def test_ragged_json(inputs: Any) -> None:
    fails(InvalidInput, json.dumps({"inputs": inputs}).encode(), JSON)


@pytest.mark.parametrize("value", ["0.5", "abc", True, None, {"a": 1}, [True] + [0.5] * 7])
def test_non_numbers_in_json(value: Any) -> None:
    rows = [[value] * 8] * 8
    fails(InvalidInput, json.dumps({"inputs": [rows]}).encode(), JSON)


def test_a_single_string_among_numbers() -> None:
    rows = [[0.5] * 8 for _ in range(8)]
    rows[3][4] = "0.5"  # type: ignore[call-overload]
    fails(InvalidInput, json.dumps({"inputs": [rows]}).encode(), JSON)


@pytest.mark.parametrize("body", [b'{"inputs": [1, 2', b"\xff\xfe", b"[[1, 2]]", b'{"input": []}'])
def test_bad_json(body: bytes) -> None:
    fails(InvalidInput, body, JSON)


def test_json_nested_too_deeply() -> None:
    body = b'{"inputs": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"
    fails(InvalidInput, body, JSON)
    deep = b'{"inputs": ' + b"[" * 40 + b"1" + b"]" * 40 + b"}"  # parses; wrong shape
    fails(InvalidInput, deep, JSON)


@pytest.mark.parametrize("value", [float("nan"), float("inf"), float("-inf")])
@pytest.mark.parametrize("kind", ["json", "npy"])
def test_nan_and_inf(value: float, kind: str) -> None:
    x = np.zeros((2, 1, 8, 8), np.float32)
    x[1, 0, 2, 5] = value
    body, ctype = (as_json(x), JSON) if kind == "json" else (npy(x), NPY)  # json writes NaN
    fails(InvalidInput, body, ctype)


@pytest.mark.filterwarnings("ignore:overflow encountered in cast:RuntimeWarning")
def test_finite_float64_that_overflows_float32() -> None:
    x = np.zeros((1, 8, 8))
    x[0, 0, 1] = 1e39
    fails(InvalidInput, as_json(x), JSON)
    fails(InvalidInput, npy(x), NPY)
