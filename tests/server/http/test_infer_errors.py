"""``POST /infer`` refusals in process: client errors, transport limits, routing errors and
a bug, all in the one error shape; and bodies mangled at random are never a 500. Their
messages are the table's (tests/server/messages.py)."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pytest

from tests.conftest import AppClient, ServeFactory
from tests.server.helpers import error_of, example, image_body, npy_bytes
from tests.server.messages import (
    BATCH_OVER_LIMIT,
    BODY_OVER_LIMIT,
    INTERNAL_ERROR,
    MEDIA,
    MESSAGES,
    PIXELS_OVER_LIMIT,
    PNG_SENT_AS_JPEG,
)

NPY = {"content-type": "application/x-npy"}


# Their messages are pinned in tests/server/messages.py (CLIENT_MESSAGES).
CLIENT_ERRORS = [  # (url, body: None for a good one, status, type)
    ("/infer/nope", None, 404, "unknown_task"),
    ("/infer/Digits", None, 404, "unknown_task"),
    ("/infer/digits?level=0", None, 422, "invalid_parameter"),
    ("/infer/digits?level=5", None, 422, "invalid_parameter"),
    ("/infer/digits?level=two", None, 422, "invalid_parameter"),
    ("/infer/digits?on_miss=maybe", None, 422, "invalid_parameter"),
    ("/infer/digits?top_k=0", None, 422, "invalid_parameter"),
    ("/infer/digits?top_k=-2", None, 422, "invalid_parameter"),
    ("/infer/digits?budget=" + "1" * 199 + "ms", None, 422, "invalid_parameter"),
    ("/infer/digits?budget=5xs", None, 422, "invalid_budget"),
    ("/infer/digits?budget=5ms,5ms", None, 422, "invalid_budget"),
    ("/infer/digits?budget=1kB", None, 422, "budget_unsatisfiable"),
    ("/infer/digits", {"inputs": [[1.0, 2.0]]}, 400, "invalid_input"),
    ("/infer/digits", {"inputs": []}, 400, "invalid_input"),
    ("/infer/digits", {"x": 1}, 400, "invalid_input"),
]  # fmt: skip


def client_error_body(body: Any) -> Any:
    return {"inputs": example("digits", 0).tolist()} if body is None else body


@pytest.mark.parametrize(("url", "body", "status", "kind"), CLIENT_ERRORS)
async def test_client_errors(
    client: AppClient, url: str, body: Any, status: int, kind: str
) -> None:
    r = await client.post(url, json=client_error_body(body))
    assert error_of(r)[:2] == (status, kind)
    assert "retry-after" not in r.headers


async def test_transport_level_errors(serve: ServeFactory) -> None:
    client = await serve(max_body_bytes=2048, max_request_batch=4, max_image_pixels=100)
    big = {"inputs": example("digits", 0, batch=4).tolist()}  # over 2 KiB of JSON
    r = await client.post("/infer/digits", json=big)
    size = int(r.request.headers["content-length"])
    assert error_of(r) == (
        413, "payload_too_large", BODY_OVER_LIMIT.format(size=size, limit=2048)
    )  # fmt: skip
    r = await client.post(
        "/infer/digits", content=npy_bytes(example("digits", 0, batch=5)), headers=NPY
    )
    assert error_of(r) == (400, "invalid_input", BATCH_OVER_LIMIT.format(size=5, limit=4))
    r = await client.post("/infer/digits", content=b"1,2,3", headers={"content-type": "text/csv"})
    assert error_of(r) == (415, "unsupported_media_type", MEDIA.format("'text/csv'"))
    png = image_body(np.zeros((11, 10), np.uint8), "PNG")
    r = await client.post("/infer/digits", content=png, headers={"content-type": "image/png"})
    too_many = PIXELS_OVER_LIMIT.format(
        width=10, height=11, pixels=110, limit=100, task_width=8, task_height=8
    )
    assert error_of(r) == (413, "payload_too_large", too_many)
    r = await client.post("/infer/digits", content=png, headers={"content-type": "image/jpeg"})
    assert error_of(r)[:2] == (413, "payload_too_large")  # the size is checked first
    small = image_body(np.zeros((8, 8), np.uint8), "PNG")
    r = await client.post("/infer/digits", content=small, headers={"content-type": "image/jpeg"})
    assert error_of(r) == (400, "invalid_input", PNG_SENT_AS_JPEG)
    r = await client.post("/infer/digits", content=b"\x89PNG junk", headers={"content-type": "image/png"})  # fmt: skip
    assert error_of(r) == (400, "invalid_input", MESSAGES["png-not-an-image"])


# Their messages are pinned in tests/server/messages.py (ROUTING_MESSAGES).
ROUTING_ERRORS = [  # (method, url, status, type)
    ("GET", "/nope", 404, "not_found"),
    ("POST", "/infer", 404, "not_found"),
    ("POST", "/infer/", 404, "not_found"),
    ("POST", "/infer/digits/extra", 404, "not_found"),
    ("PUT", "/infer/digits", 405, "method_not_allowed"),
    ("GET", "/v1/models/digits/levels/x/y", 404, "not_found"),
    ("GET", "/infer/digits", 405, "method_not_allowed"),
    ("POST", "/v1/models", 405, "method_not_allowed"),
    ("DELETE", "/plan/digits", 405, "method_not_allowed"),
    ("POST", "/healthz", 405, "method_not_allowed"),
]  # fmt: skip


@pytest.mark.parametrize(("method", "url", "status", "kind"), ROUTING_ERRORS)
async def test_routing_errors_share_the_error_shape(
    client: AppClient, method: str, url: str, status: int, kind: str
) -> None:
    r = await client.request(method, url)
    assert error_of(r)[:2] == (status, kind)
    assert r.headers["content-type"] == "application/json"


async def test_a_bug_in_the_infer_path_is_a_500_naming_the_request_id(
    client: AppClient, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """``POST /infer/{task}`` skips FastAPI's routing (server/app.py ``DirectInfer``); an
    exception that is not a ServeError still gets the one error shape, with the request id
    to find the logged traceback, and the server goes on."""

    async def broken(task: str, request: Any) -> Any:
        raise RuntimeError("a bug")

    monkeypatch.setattr("server.http.app.infer_endpoint", broken)
    r = await client.post(
        "/infer/digits", json={"inputs": example("digits", 0).tolist()},
        headers={"x-request-id": "req-42"},
    )  # fmt: skip
    assert error_of(r) == (500, "internal_error", INTERNAL_ERROR.format(request_id="req-42"))
    assert r.headers["x-request-id"] == "req-42"
    assert any(rec.message == "unhandled error" and rec.exc_info for rec in caplog.records)
    monkeypatch.undo()
    assert (await client.get("/healthz")).status_code == 200


def mutations(seed: int, count: int) -> list[tuple[bytes, str]]:
    """Bodies a careless or hostile client might send: valid ones with bytes flipped,
    truncated, or with the wrong content type."""
    rng = np.random.default_rng(seed)
    x = example("digits", 0, batch=2)
    pixels = rng.integers(0, 256, (8, 8), dtype=np.uint8)
    valid = [
        (json.dumps({"inputs": x.tolist()}).encode(), "application/json"),
        (npy_bytes(x), "application/x-npy"),
        (image_body(pixels, "PNG"), "image/png"),
        (image_body(pixels, "JPEG"), "image/jpeg"),
    ]
    found = []
    for i in range(count):
        body, ctype = valid[i % len(valid)]
        data = bytearray(body)
        for _ in range(int(rng.integers(1, 6))):
            data[int(rng.integers(0, min(len(data), 200)))] = int(rng.integers(0, 256))
        if rng.random() < 0.3:
            data = data[: int(rng.integers(0, len(data)))]
        if rng.random() < 0.2:
            ctype = valid[int(rng.integers(0, len(valid)))][1]
        found.append((bytes(data), ctype))
    return found


async def test_never_a_500_for_bad_input(client: AppClient) -> None:
    statuses = set()
    for body, ctype in mutations(seed=5, count=160):
        r = await client.post(
            "/infer/digits?level=1", content=body, headers={"content-type": ctype}
        )
        statuses.add(r.status_code)
        if r.status_code != 200:
            status, kind, _ = error_of(r)
            assert status in (400, 413), (status, kind, body[:40], ctype)
    assert 400 in statuses
