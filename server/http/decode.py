"""Request bodies to model-space arrays: JSON, ``.npy`` and PNG/JPEG, each checked against
the task's input shape. Every failure is an :class:`InvalidInput` (or 413/415) that says
what was wrong and what the task takes."""

from __future__ import annotations

import io
import json
import math
import re
import struct
import warnings
from dataclasses import dataclass
from typing import Literal

import numpy as np
from PIL import Image, UnidentifiedImageError

from model_store.tasks import TaskSpec
from server.errors import InvalidInput, PayloadTooLarge, UnsupportedMediaType

JSON_TYPES = ("application/json",)
NPY_TYPES = ("application/x-npy", "application/npy")
IMAGE_TYPES = {"image/png": "PNG", "image/jpeg": "JPEG", "image/jpg": "JPEG"}
NPY_MAGIC, NPZ_MAGIC = b"\x93NUMPY", b"PK\x03\x04"
ACCEPTED = "application/json, application/x-npy, image/png or image/jpeg"
# The header np.save writes for a numeric array, e.g.
# {'descr': '<f4', 'fortran_order': False, 'shape': (1, 3, 16, 16), }
_NPY_HEADER = re.compile(
    r"\{'descr': '([<>=]f[248])', 'fortran_order': (False|True), "
    r"'shape': \((|\d+,|\d+(?:, \d+)+)\), \} *\n"
)


@dataclass(frozen=True)
class Inputs:
    """A decoded request: ``array`` is (B, C, H, W) float32; ``batched`` says whether the
    client sent a batch (a single example is answered as a batch of one either way)."""

    array: np.ndarray
    batched: bool

    @property
    def examples(self) -> int:
        return int(self.array.shape[0])


def media_type(content_type: str | None) -> str:
    return (content_type or "").split(";")[0].strip().lower()


def decode(
    body: bytes,
    content_type: str | None,
    spec: TaskSpec,
    *,
    max_examples: int,
    max_image_pixels: int,
) -> Inputs:
    """Decode and check a body for ``spec``.

    Raises:
        InvalidInput, UnsupportedMediaType, PayloadTooLarge.
    """
    kind = media_type(content_type)
    if kind in JSON_TYPES:
        array = _from_json(body)
    elif kind in NPY_TYPES:
        array = _from_npy(body)
    elif kind in IMAGE_TYPES:
        array = _from_image(body, IMAGE_TYPES[kind], spec, max_image_pixels)
    else:
        raise UnsupportedMediaType(
            f"content type {kind or '(none)'!r} is not accepted; send {ACCEPTED}"
        )
    return check_array(array, spec, max_examples=max_examples)


def _from_json(body: bytes) -> np.ndarray:
    try:
        doc = json.loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise InvalidInput(f'body is not valid JSON ({e}); send {{"inputs": [...]}}') from e
    except RecursionError as e:  # thousands of nested brackets
        raise InvalidInput(
            'body is not valid JSON (nested too deeply); send {"inputs": [...]} with the '
            "task's input shape"
        ) from e
    if not isinstance(doc, dict) or "inputs" not in doc:
        raise InvalidInput('JSON body must be an object with an "inputs" field: {"inputs": [...]}')
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            # No dtype here: with one, numpy would parse "0.5" and take true as 1.
            array = np.asarray(doc["inputs"])
    except (ValueError, TypeError) as e:
        raise InvalidInput(
            '"inputs" must be a number array (nested lists of equal length, numbers only); '
            f"it is ragged or holds non-numbers ({e})"
        ) from e
    if (array.dtype.kind not in "iuf" and array.size > 0) or (
        array.dtype.kind != "b" and may_hold_bool(body) and holds_bool(doc["inputs"])
    ):
        raise InvalidInput(
            '"inputs" must be a number array (nested lists of equal length, numbers only); '
            f"it holds non-numbers (strings, booleans or nulls: numpy dtype {array.dtype})"
        )
    return array.astype(np.float64)


def may_hold_bool(body: bytes) -> bool:
    """Whether a JSON body may hold a boolean: a fast test that spares most bodies the walk
    of :func:`holds_bool`."""
    return b"true" in body or b"false" in body


def holds_bool(value: object) -> bool:
    """Whether nested lists hold a boolean anywhere. numpy turns ``[true, 0.5]`` into
    floats (1.0, 0.5) without a word, so its dtype cannot tell."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, bool):
            return True
        if isinstance(item, list):
            stack.extend(item)
    return False


def _from_npy(body: bytes) -> np.ndarray:
    if not body.startswith((NPY_MAGIC, NPZ_MAGIC)):
        # Without this numpy would try the body as a pickle and say so: misleading.
        raise InvalidInput(
            "body is not a valid .npy array (it does not start with the .npy magic "
            "'\\x93NUMPY'); send the bytes np.save writes"
        )
    if body.startswith(NPY_MAGIC):
        fast = _npy_fast(body)
        if fast is not None:
            return fast
        _check_npy_header(body)
    try:
        array = np.load(io.BytesIO(body), allow_pickle=False)
    except ValueError as e:
        if "allow_pickle" in str(e) or "pickle" in str(e).lower():
            raise InvalidInput(
                ".npy body holds Python objects, which would need unpickling: refused; "
                "send a numeric array (np.save of a float32 array)"
            ) from e
        raise InvalidInput(f"body is not a valid .npy array ({e})") from e
    except (OSError, EOFError) as e:
        raise InvalidInput(f"body is not a valid .npy array ({e})") from e
    if not isinstance(array, np.ndarray):
        raise InvalidInput("body is an .npz archive, not one .npy array; send np.save output")
    if array.dtype.kind != "f":
        raise InvalidInput(
            f".npy dtype {array.dtype} is not accepted: send float32 (or float16/float64) "
            "model-space values; for raw pixels send a PNG or JPEG image"
        )
    return array


def _npy_fast(body: bytes) -> np.ndarray | None:
    """The array of a version 1 to 3 ``.npy`` body whose header is exactly what np.save
    writes for a float array and whose data is exactly the declared size; ``None`` for
    anything else, which the careful path (numpy's own parser) then reads or refuses.
    numpy's parser runs ``ast.literal_eval`` on the header: most of a small request's
    decoding time."""
    major = body[6] if len(body) > 10 else 0
    if major == 1:
        (size,), start = struct.unpack_from("<H", body, 8), 10
    elif major in (2, 3) and len(body) > 12:
        (size,), start = struct.unpack_from("<I", body, 8), 12
    else:
        return None
    try:
        header = body[start : start + size].decode("latin-1" if major < 3 else "utf-8")
    except UnicodeDecodeError:
        return None
    match = _NPY_HEADER.fullmatch(header)
    if match is None:
        return None
    dtype = np.dtype(match[1])
    shape = tuple(int(d) for d in match[3].split(",") if d.strip())
    offset = start + size
    if math.prod(shape) * dtype.itemsize != len(body) - offset:
        return None  # truncated or trailing bytes: let the careful path say which
    flat = np.frombuffer(body, dtype=dtype, offset=offset)
    order: Literal["C", "F"] = "F" if match[2] == "True" else "C"
    # A copy: the body's bytes are read-only, and the result is what later steps own.
    array: np.ndarray = flat.reshape(shape, order=order).astype(dtype.newbyteorder("="), order="C")
    return array


def _check_npy_header(body: bytes) -> None:
    """Refuse a .npy whose header cannot be read, holds objects, or declares more data than
    the body holds: numpy would allocate all of it before finding out (a 100-byte body
    could ask for terabytes)."""
    fp = io.BytesIO(body)
    try:
        major, _ = np.lib.format.read_magic(fp)
        read = (
            np.lib.format.read_array_header_1_0
            if major == 1
            else np.lib.format.read_array_header_2_0
        )
        shape, _, dtype = read(fp)
    except Exception as e:  # ValueError, SyntaxError, tokenize.TokenError, ...
        raise InvalidInput(f"body is not a valid .npy array (unreadable header: {e})") from e
    if dtype.hasobject:
        raise InvalidInput(
            ".npy body holds Python objects, which would need unpickling: refused; "
            "send a numeric array (np.save of a float32 array)"
        )
    declared, held = math.prod(shape) * dtype.itemsize, len(body) - fp.tell()
    if declared > held:
        raise InvalidInput(
            f"body is not a valid .npy array (its header declares shape {tuple(shape)} of "
            f"{dtype}, {declared} bytes, but the body holds {held}); send the whole np.save "
            "output"
        )


def _from_image(body: bytes, fmt: str, spec: TaskSpec, max_pixels: int) -> np.ndarray:
    prep = spec.preprocessing
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(body))
            width, height = image.size
            if width * height > max_pixels:
                raise PayloadTooLarge(
                    f"image is {width}x{height} = {width * height} pixels, over the limit of "
                    f"{max_pixels}; the task takes {prep.size[1]}x{prep.size[0]}: resize it first"
                )
            if image.format != fmt:
                raise InvalidInput(
                    f"body is a {image.format} image but the content type says {fmt}; "
                    "send the matching Content-Type"
                )
            image.load()
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        raise PayloadTooLarge(f"image refused as a decompression bomb ({e})") from e
    except UnidentifiedImageError as e:
        # Pillow's message ends with the repr of our buffer (a memory address): leave it out.
        raise InvalidInput(
            f"body is not a readable {fmt} image (cannot identify image file); send the bytes "
            f"of a {fmt} file"
        ) from e
    except (OSError, SyntaxError, ValueError) as e:
        raise InvalidInput(f"body is not a readable {fmt} image ({e})") from e
    converted = image.convert(prep.color_mode).resize(
        (prep.size[1], prep.size[0]), Image.Resampling.BILINEAR
    )
    pixels = np.asarray(converted, dtype=np.float32) / 255.0  # (H, W) or (H, W, 3)
    pixels = pixels[None] if pixels.ndim == 2 else pixels.transpose(2, 0, 1)
    mean = np.asarray(prep.mean, dtype=np.float32)[:, None, None]
    std = np.asarray(prep.std, dtype=np.float32)[:, None, None]
    return (pixels - mean) / std  # (C, H, W)


def check_array(array: np.ndarray, spec: TaskSpec, *, max_examples: int) -> Inputs:
    """Check shape, size and values of a model-space array; returns (B, C, H, W) float32.

    Raises:
        InvalidInput: naming the shape the task takes and what was sent.
    """
    shape = spec.input_shape
    got = tuple(int(d) for d in array.shape)
    batched: bool
    if got == (0,):  # JSON {"inputs": []}
        raise InvalidInput("the batch is empty; send at least one example")
    if got == shape:
        batched, array = False, array[None]
    elif len(got) == 4 and got[1:] == shape:
        batched = True
    elif shape[0] == 1 and got == shape[1:]:
        batched, array = False, array[None, None]
    elif shape[0] == 1 and len(got) == 3 and got[1:] == shape[1:]:
        batched, array = True, array[:, None]
    else:
        dims = ", ".join(map(str, shape))
        raise InvalidInput(
            f"task {spec.name!r} takes one example of shape ({dims}) or a batch (B, {dims}); "
            f"got shape {got}"
        )
    n = int(array.shape[0])
    if n == 0:
        raise InvalidInput("the batch is empty; send at least one example")
    if n > max_examples:
        raise InvalidInput(
            f"batch of {n} examples is over the limit of {max_examples} per request; "
            "split it into smaller requests"
        )
    with np.errstate(over="ignore"):  # past float32: Inf, refused below
        array = np.ascontiguousarray(array, dtype=np.float32)
    finite = np.isfinite(array)
    if not finite.all():
        where = tuple(int(i) for i in np.argwhere(~finite)[0])
        raise InvalidInput(
            f"inputs contain NaN or Inf (first at index {where}, after float32 conversion); "
            "send finite values"
        )
    return Inputs(array=array, batched=batched)
