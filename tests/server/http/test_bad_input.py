"""Every kind of bad input in one table: each row is a request a careless or hostile client
might send to ``/infer``, the exact error it gets (status, type, message, the one error
shape), how ``/metrics`` counts it, and proof that the same app then still answers a good
request with 200. One app serves the whole table, so it also survives all of them in a row.

Limits of the app under test: ``max_body_bytes`` 4096, ``max_request_batch`` 4,
``max_image_pixels`` at its default (16,000,000). The decoders' own unit tests are in
tests/server/decode/; this is the end-to-end view through HTTP.
"""

from __future__ import annotations

import io
import json
import math
import os
import struct
import zlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import pytest_asyncio
from PIL import Image

from server.http.app import create_app
from tests.conftest import READY_TIMEOUT_S, AppClient, server_settings, wait_until
from tests.server.helpers import error_of, parse_metrics, series

pytestmark = pytest.mark.asyncio(loop_scope="module")

MAX_BODY = 4096
MAX_BATCH = 4
CHUNK = 1024  # bytes per chunk of a streamed body
STREAM_CHUNKS = 1024  # a streamed body is 1 MiB, 256 times the limit
NPY = "application/x-npy"
DIGIT = np.linspace(-1, 1, 64, dtype=np.float32).reshape(1, 8, 8)
GOOD = json.dumps({"inputs": DIGIT.tolist()}).encode()

# -- bodies ----------------------------------------------------------------------------------

UNPICKLED: list[str] = []


def tripwire() -> str:
    """Called only if the server unpickles the body (it must not)."""
    UNPICKLED.append("unpickled")
    return "tripwire"


class Tripwire:
    def __reduce__(self) -> tuple[Any, tuple[()]]:
        return tripwire, ()


def npy(array: np.ndarray, allow_pickle: bool = False) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=allow_pickle)
    return buffer.getvalue()


def npy_declaring(shape: tuple[int, ...], data: bytes) -> bytes:
    """A .npy header declaring float32 ``shape``, followed by only ``data``."""
    buffer = io.BytesIO()
    header = {"descr": "<f4", "fortran_order": False, "shape": shape}
    np.lib.format.write_array_header_1_0(buffer, header)  # type: ignore[no-untyped-call]
    return buffer.getvalue() + data


def as_json(inputs: Any) -> bytes:
    return json.dumps({"inputs": inputs}).encode()


def with_value(value: float, at: tuple[int, ...]) -> np.ndarray:
    x = np.zeros((2, 1, 8, 8))
    x[at] = value
    return x


def image(fmt: str, size: tuple[int, int] = (8, 8)) -> bytes:
    pixels = np.random.default_rng(0).integers(0, 256, (size[1], size[0]), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format=fmt)
    return buffer.getvalue()


def png_declaring(width: int, height: int) -> bytes:
    """A valid-looking PNG of a few dozen bytes whose header declares ``width x height``
    8-bit grey pixels (one compressed row of data): what a decompression bomb looks like to
    a server that reads the header first."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = zlib.crc32(kind + data)
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    row = zlib.compress(bytes(width + 1), 9)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", row) + chunk(b"IEND", b"")


PNG = image("PNG")
BAD_CRC = PNG[:29] + bytes([PNG[29] ^ 0xFF]) + PNG[30:]  # a byte of the IHDR chunk's CRC


def npz() -> bytes:
    buffer = io.BytesIO()
    np.savez(buffer, x=DIGIT)
    return buffer.getvalue()


# -- the table ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Bad:
    """One bad request and exactly what it gets.

    ``query`` goes after ``/infer/{task}``; ``body`` (default: one good example) is sent as
    ``content_type``; with ``stream`` it is sent as a stream of ``STREAM_CHUNKS`` chunks of
    ``CHUNK`` bytes without a length (``headers`` may declare one). ``counted``: the request
    reaches the handler and counts as ``outcome="invalid"`` (FastAPI's own query validation
    and routing errors happen before it)."""

    id: str
    status: int
    type: str
    query: str = ""
    body: bytes = GOOD
    content_type: str | None = "application/json"
    task: str = "digits"
    method: str = "POST"
    stream: bool = False
    headers: dict[str, str] = field(default_factory=dict)
    counted: bool = True
    expect_headers: dict[str, str] = field(default_factory=dict)


# One row per line: a table reads best unwrapped.
# fmt: off
TABLE = [
    # routing and task
    Bad("unknown-task", 404, "unknown_task", task="nope"),
    Bad("task-case", 404, "unknown_task", task="DIGITS"),
    Bad("no-task", 404, "not_found", task="", counted=False),
    Bad("wrong-method", 405, "method_not_allowed", method="GET", counted=False, expect_headers={"allow": "POST"}),
    # budget grammar
    Bad("budget-unknown-unit", 422, "invalid_budget", "?budget=5xs"),
    Bad("budget-unit-case", 422, "invalid_budget", "?budget=2mib"),
    Bad("budget-no-unit", 422, "invalid_budget", "?budget=15"),
    Bad("budget-negative", 422, "invalid_budget", "?budget=-5ms"),
    Bad("budget-zero", 422, "invalid_budget", "?budget=0ms"),
    Bad("budget-nan", 422, "invalid_budget", "?budget=NaNms"),
    Bad("budget-overflows-to-inf", 422, "invalid_budget", "?budget=1e999ms"),
    Bad("budget-latency-absurd", 422, "invalid_budget", "?budget=1e9s"),
    Bad("budget-memory-absurd", 422, "invalid_budget", "?budget=1e18B"),
    Bad("budget-under-a-byte", 422, "invalid_budget", "?budget=0.5B"),
    Bad("budget-two-latencies", 422, "invalid_budget", "?budget=5ms,10ms"),
    Bad("budget-two-memories", 422, "invalid_budget", "?budget=1MiB,15ms,2MiB"),
    Bad("budget-empty-part", 422, "invalid_budget", "?budget=5ms,"),
    Bad("budget-too-long", 422, "invalid_parameter", "?budget=" + "1" * 199 + "ms"),
    Bad("budget-below-smallest-level", 422, "budget_unsatisfiable", "?budget=1kB"),
    # other parameters
    Bad("level-zero", 422, "invalid_parameter", "?level=0"),
    Bad("level-over", 422, "invalid_parameter", "?level=5"),
    Bad("level-negative", 422, "invalid_parameter", "?level=-1"),
    Bad("level-not-a-number", 422, "invalid_parameter", "?level=two"),
    Bad("level-fraction", 422, "invalid_parameter", "?level=2.5"),
    Bad("level-empty", 422, "invalid_parameter", "?level="),
    Bad("on-miss-unknown", 422, "invalid_parameter", "?on_miss=maybe"),
    Bad("top-k-not-a-number", 422, "invalid_parameter", "?top_k=three"),
    Bad("top-k-zero", 422, "invalid_parameter", "?top_k=0"),
    # JSON bodies
    Bad("json-malformed", 400, "invalid_input", body=b'{"inputs": [1, 2'),
    Bad("json-not-utf8", 400, "invalid_input", body=b"\xff\xfe"),
    Bad("json-empty-body", 400, "invalid_input", body=b""),
    Bad("json-not-an-object", 400, "invalid_input", body=b"[[1, 2]]"),
    Bad("json-no-inputs", 400, "invalid_input", body=b'{"input": []}'),
    Bad("json-nested-too-deeply", 400, "invalid_input", body=b'{"inputs": ' + b"[" * 2000 + b"]" * 2000 + b"}"),
    Bad("json-wrong-shape", 400, "invalid_input", body=as_json([[1.0, 2.0]])),
    Bad("json-scalar", 400, "invalid_input", body=as_json(3.0)),
    Bad("json-ragged", 400, "invalid_input", body=as_json([[[0.0] * 8] * 7 + [[0.0] * 7]])),
    Bad("json-strings", 400, "invalid_input", body=as_json([[["0.5"] * 8] * 8])),
    Bad("json-booleans", 400, "invalid_input", body=as_json([[[True] * 8] * 8])),
    Bad("json-booleans-among-numbers", 400, "invalid_input", body=as_json([[[False] + [0.5] * 7] * 8])),
    Bad("json-nulls", 400, "invalid_input", body=as_json([[[None] * 8] * 8])),
    Bad("json-nan", 400, "invalid_input", body=as_json(with_value(math.nan, (1, 0, 2, 5)).tolist())),
    Bad("json-inf", 400, "invalid_input", body=as_json(with_value(math.inf, (0, 0, 7, 7)).tolist())),
    Bad("json-overflows-float32", 400, "invalid_input", body=as_json(with_value(1e39, (0, 0, 0, 1)).tolist())),
    Bad("json-empty-batch", 400, "invalid_input", body=as_json([])),
    Bad("json-batch-over-limit", 400, "invalid_input", body=as_json([[[[0] * 8] * 8]] * 5)),
    # .npy bodies
    Bad("npy-wrong-shape", 400, "invalid_input", body=npy(np.zeros((3, 16, 16), np.float32)), content_type=NPY),
    Bad("npy-int-dtype", 400, "invalid_input", body=npy(np.zeros((1, 8, 8), np.int32)), content_type=NPY),
    Bad("npy-complex-dtype", 400, "invalid_input", body=npy(np.zeros((1, 8, 8), np.complex64)), content_type=NPY),
    Bad("npy-nan", 400, "invalid_input", body=npy(with_value(math.nan, (1, 0, 2, 5)).astype(np.float32)), content_type=NPY),
    Bad("npy-minus-inf", 400, "invalid_input", body=npy(with_value(-math.inf, (0, 0, 3, 3))), content_type=NPY),
    Bad("npy-empty-batch", 400, "invalid_input", body=npy(np.zeros((0, 1, 8, 8), np.float32)), content_type=NPY),
    Bad("npy-batch-over-limit", 400, "invalid_input", body=npy(np.zeros((5, 1, 8, 8), np.float32)), content_type=NPY),
    Bad("npy-not-npy", 400, "invalid_input", body=b"garbage", content_type=NPY),
    Bad("npy-empty-body", 400, "invalid_input", body=b"", content_type=NPY),
    Bad("npy-truncated-data", 400, "invalid_input", body=npy(DIGIT)[:-10], content_type=NPY),
    Bad("npy-truncated-header", 400, "invalid_input", body=npy(DIGIT)[:20], content_type=NPY),
    Bad("npy-corrupt-header", 400, "invalid_input", body=npy(DIGIT).replace(b"(1, 8, 8)", b"(1, 8, 8 "), content_type=NPY),
    Bad("npy-declares-terabytes", 400, "invalid_input", body=npy_declaring((10**12, 1, 8, 8), DIGIT.tobytes()), content_type=NPY),
    Bad("npy-object-dtype-pickle", 400, "invalid_input", body=npy(np.array([Tripwire()] * 2, dtype=object), allow_pickle=True), content_type=NPY),
    Bad("npy-npz", 400, "invalid_input", body=npz(), content_type=NPY),
    # images
    Bad("png-not-an-image", 400, "invalid_input", body=b"not an image", content_type="image/png"),
    Bad("png-bad-crc", 400, "invalid_input", body=BAD_CRC, content_type="image/png"),
    Bad("png-truncated", 400, "invalid_input", body=PNG[: len(PNG) // 2], content_type="image/png"),
    Bad("jpeg-truncated", 400, "invalid_input", body=image("JPEG")[:300], content_type="image/jpeg"),
    Bad("png-sent-as-jpeg", 400, "invalid_input", body=PNG, content_type="image/jpeg"),
    Bad("png-over-pixel-limit", 413, "payload_too_large", body=png_declaring(5000, 4000), content_type="image/png"),
    Bad("png-decompression-bomb", 413, "payload_too_large", body=png_declaring(20000, 20000), content_type="image/png"),
    # content type
    Bad("media-csv", 415, "unsupported_media_type", body=b"1,2,3", content_type="text/csv"),
    Bad("media-none", 415, "unsupported_media_type", content_type=None),
    Bad("media-multipart", 415, "unsupported_media_type", content_type="multipart/form-data; boundary=x"),
    Bad("media-gif", 415, "unsupported_media_type", body=image("GIF"), content_type="image/gif"),
    # size
    Bad("body-declared-over-limit", 413, "payload_too_large", body=bytes(5000)),
    Bad("body-streamed-over-limit", 413, "payload_too_large", stream=True),
    Bad("body-streamed-declared-over-limit", 413, "payload_too_large", stream=True, headers={"content-length": str(CHUNK * STREAM_CHUNKS)}),
]
# fmt: on


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def client(tiny_checkpoint: Path) -> AsyncIterator[AppClient]:
    """One warmed-up app for the whole table (``DVN_*`` variables of the outer environment
    ignored)."""
    with pytest.MonkeyPatch.context() as env:
        for name in [n for n in os.environ if n.startswith("DVN_")]:
            env.delenv(name)
        settings = server_settings(
            tiny_checkpoint, max_body_bytes=MAX_BODY, max_request_batch=MAX_BATCH
        )
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        runtime = app.state.runtime
        await wait_until(lambda: runtime.ready, READY_TIMEOUT_S, "warm-up")
        async with AppClient(transport=httpx.ASGITransport(app=app), base_url="http://test") as c:
            c.app = app
            yield c


async def outcomes(client: AppClient) -> dict[str, float]:
    """``dvn_requests_total`` summed per outcome."""
    found: dict[str, float] = {}
    samples = parse_metrics((await client.get("/metrics")).text)
    for labels, value in series(samples, "dvn_requests_total").items():
        outcome = dict(labels)["outcome"]
        found[outcome] = found.get(outcome, 0.0) + value
    return found


class Stream:
    """A request body of ``STREAM_CHUNKS`` chunks that counts how many the server pulled."""

    def __init__(self) -> None:
        self.pulled = 0

    async def __aiter__(self) -> AsyncIterator[bytes]:
        for _ in range(STREAM_CHUNKS):
            self.pulled += 1
            yield bytes(CHUNK)


async def send(client: AppClient, case: Bad, stream: Stream | None = None) -> httpx.Response:
    """The request of ``case`` (its streamed body: ``stream``, else a new one)."""
    headers = dict(case.headers)
    if case.content_type is not None:
        headers["content-type"] = case.content_type
    if case.stream and stream is None:
        stream = Stream()
    return await client.request(
        case.method,
        f"/infer/{case.task}{case.query}",
        content=stream if stream is not None else case.body,
        headers=headers,
    )


@pytest.mark.parametrize("case", TABLE, ids=[c.id for c in TABLE])
# json-overflows-float32: numpy warns as 1e39 becomes Inf, which the server then refuses.
@pytest.mark.filterwarnings("ignore:overflow encountered in cast:RuntimeWarning")
async def test_bad_input_is_a_4xx_in_the_one_error_shape(client: AppClient, case: Bad) -> None:
    before = await outcomes(client)
    stream = Stream() if case.stream else None
    r = await send(client, case, stream)
    # The messages are pinned once, in tests/server/messages.py (MESSAGES).
    assert error_of(r)[:2] == (case.status, case.type)
    assert r.headers["content-type"] == "application/json"
    assert "retry-after" not in r.headers  # nothing to retry: the request must change
    for name, value in case.expect_headers.items():
        assert r.headers[name] == value
    if stream is not None:
        # Refused as soon as the limit was passed, not after reading the whole body: a
        # declared length over the limit before reading any of it.
        read_at_most = 0 if "content-length" in case.headers else MAX_BODY // CHUNK + 1
        assert stream.pulled <= read_at_most < STREAM_CHUNKS
    assert UNPICKLED == []
    after = await outcomes(client)
    assert after.get("invalid", 0) - before.get("invalid", 0) == (1 if case.counted else 0)
    assert after.get("error", 0) == 0  # a client's mistake is never counted as the server's
    # The same app still answers a good request.
    good = await client.post("/infer/digits", content=GOOD, headers={"content-type": "application/json"})  # fmt: skip
    assert good.status_code == 200, good.text
    assert good.json()["task"] == "digits"
