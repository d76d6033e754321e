"""Turning what a caller passes as ``inputs`` into an HTTP body and its content type.

Arrays (numpy, torch, nested lists) travel as ``.npy`` (``application/x-npy``): exact
float32/float64 values, no JSON float round-trip. Image files and raw bytes travel as they
are, with the content type read from their first bytes.
"""

from __future__ import annotations

import io
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeAlias

import numpy as np

if TYPE_CHECKING:
    import torch

NPY = "application/x-npy"
PNG = "image/png"
JPEG = "image/jpeg"

# What ``infer`` accepts: an array-like in model space, an image or .npy file, raw bytes.
Inputs: TypeAlias = (
    "np.ndarray[Any, Any] | torch.Tensor | Sequence[Any] | str | os.PathLike[str] | bytes"
    " | bytearray | memoryview"
)

_MAGIC: tuple[tuple[bytes, str], ...] = (
    (b"\x89PNG\r\n\x1a\n", PNG),
    (b"\xff\xd8\xff", JPEG),
    (b"\x93NUMPY", NPY),
)
IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg"})


def sniff_content_type(data: bytes) -> str:
    """The content type of ``data`` from its magic bytes (PNG, JPEG or ``.npy``).

    Raises:
        ValueError: none of those.
    """
    for magic, content_type in _MAGIC:
        if data.startswith(magic):
            return content_type
    raise ValueError(
        f"cannot tell what these {len(data)} bytes are: they are not a PNG, a JPEG or a "
        ".npy array; pass a numpy array or torch tensor, or the bytes of one of those"
    )


def npy_bytes(array: np.ndarray[Any, Any]) -> bytes:
    """``array`` as the bytes of a ``.npy`` file (never pickled)."""
    buf = io.BytesIO()
    np.save(buf, array, allow_pickle=False)
    return buf.getvalue()


def as_float_array(value: Any) -> np.ndarray[Any, Any]:
    """``value`` (numpy array, torch tensor, nested lists) as a float32 or float64 array.

    float32 and float64 are kept as they are; other real dtypes (ints, bools, float16,
    bfloat16) become float32, which holds them exactly.

    Raises:
        TypeError: not numeric (strings, objects, complex numbers).
    """
    torch_module = sys.modules.get("torch")  # a tensor can only exist once torch is imported
    if torch_module is not None and isinstance(value, torch_module.Tensor):
        tensor = value.detach().cpu()
        if tensor.dtype not in (torch_module.float32, torch_module.float64):
            tensor = tensor.float()  # bfloat16 has no numpy dtype
        value = tensor.numpy()
    try:
        array = np.asarray(value)
    except ValueError as e:  # ragged nested lists
        raise TypeError(f"inputs are not a rectangular array of numbers: {e}") from e
    if array.dtype in (np.float32, np.float64):
        return array
    if array.dtype.kind in "biuf":
        return array.astype(np.float32)
    raise TypeError(
        f"inputs must be numbers in model space (float32), got an array of dtype {array.dtype}"
    )


def _read_file(path: Path) -> tuple[bytes, str]:
    suffix = path.suffix.lower()
    if suffix == ".npy":
        return npy_bytes(as_float_array(np.load(path, allow_pickle=False))), NPY
    if suffix not in IMAGE_SUFFIXES:
        raise ValueError(
            f"{path}: unsupported file type {suffix or '(no suffix)'!r}; pass a .png, .jpg, "
            ".jpeg or .npy file, or a numpy array or torch tensor"
        )
    data = path.read_bytes()  # FileNotFoundError says which path
    content_type = sniff_content_type(data)
    if content_type == NPY:
        raise ValueError(f"{path} holds a .npy array, not an image: rename it to .npy")
    return data, content_type


def encode_inputs(inputs: Inputs) -> tuple[bytes, str]:
    """The request body and content type for ``inputs``.

    ``inputs`` is a numpy array, torch tensor or nested list of shape ``(C, H, W)`` or
    ``(B, C, H, W)`` in model space; a path (``str``/``Path``) to a ``.png``, ``.jpg``,
    ``.jpeg`` or ``.npy`` file; or the raw bytes of a PNG, JPEG or ``.npy`` file.

    Raises:
        TypeError: inputs of a kind that cannot be sent. ValueError: a file or bytes of an
        unsupported type. FileNotFoundError: a path that does not exist.
    """
    if isinstance(inputs, bytes | bytearray | memoryview):
        data = bytes(inputs)
        return data, sniff_content_type(data)
    if isinstance(inputs, str | os.PathLike):
        return _read_file(Path(inputs))
    return npy_bytes(as_float_array(inputs)), NPY
