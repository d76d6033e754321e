"""The fast ``.npy`` reader (server/decode.py) gives exactly what ``np.load`` gives for every
header np.save writes for a float array, and declines (returns None, so the careful path
reads or refuses it) everything else."""

from __future__ import annotations

import io

import numpy as np
import pytest

from server.http.decode import _npy_fast


def npy(array: np.ndarray, version: tuple[int, int] | None = None) -> bytes:
    buf = io.BytesIO()
    if version is None:
        np.save(buf, array, allow_pickle=False)
    else:
        np.lib.format.write_array(buf, array, version=version, allow_pickle=False)
    return buf.getvalue()


RNG = np.random.default_rng(0)
FLOATS = [
    RNG.standard_normal((1, 3, 16, 16), dtype=np.float32),
    RNG.standard_normal((4, 1, 8, 8)),  # float64
    np.asfortranarray(RNG.standard_normal((3, 4)).astype(np.float16)),
    RNG.standard_normal(5).astype(">f4"),
    np.zeros((2, 0, 3), np.float32),
    np.float32(3.5).reshape(()),
]


@pytest.mark.parametrize("array", FLOATS, ids=lambda a: f"{a.dtype.str}{a.shape}")
@pytest.mark.parametrize("version", [None, (2, 0), (3, 0)])
def test_same_array_as_np_load(array: np.ndarray, version: tuple[int, int] | None) -> None:
    body = npy(array, version)
    got = _npy_fast(body)
    want = np.load(io.BytesIO(body), allow_pickle=False)
    assert got is not None
    assert got.shape == want.shape and got.dtype == want.dtype.newbyteorder("=")
    np.testing.assert_array_equal(got, want)
    assert got.flags.c_contiguous and got.flags.writeable  # owned, not a view of the body


@pytest.mark.parametrize(
    "body",
    [
        npy(np.arange(4, dtype=np.int32)),  # not a float: the careful path refuses it
        npy(np.ones((2, 2), np.float32))[:-1],  # truncated
        npy(np.ones((2, 2), np.float32)) + b"\0",  # trailing bytes
        npy(np.ones(2, np.float32)).replace(b"'descr'", b'"descr"'),  # not np.save's form
        npy(np.ones(2, np.float32)).replace(b"(2,)", b"(9,)"),  # declares more than it holds
        b"\x93NUMPY\x09\x00",  # unknown version, short
        b"\x93NUMPY",
    ],
)
def test_declines_what_it_does_not_read(body: bytes) -> None:
    assert _npy_fast(body) is None
