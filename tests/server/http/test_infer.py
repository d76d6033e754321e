"""``POST /infer`` in process: every body type and budget against the model run directly,
pinned levels, top-k, error shapes (/plan, /v1/models, export, readiness and OpenAPI are in
test_models.py)."""

from __future__ import annotations

import io
import json
import re
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

from model_store.checkpoint import Checkpoint
from tests.conftest import AppClient, ServeFactory
from tests.server.helpers import check_answer, error_of, example, npy_bytes, predicted

NPY = {"content-type": "application/x-npy"}
LEVELS = (1, 2, 3, 4)


def image_body(pixels: np.ndarray, fmt: str) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format=fmt)
    return buffer.getvalue()


def preprocessed(body: bytes, reference: Checkpoint, task: str) -> np.ndarray:
    """What the manifest's preprocessing makes of an image, computed here with PIL."""
    prep = reference.manifest.task(task).preprocessing
    image = Image.open(io.BytesIO(body)).convert(prep["color_mode"])
    image = image.resize((prep["size"][1], prep["size"][0]), Image.Resampling.BILINEAR)
    x = np.asarray(image, dtype=np.float32) / 255.0
    x = x[None] if x.ndim == 2 else x.transpose(2, 0, 1)
    mean = np.asarray(prep["mean"], np.float32)[:, None, None]
    std = np.asarray(prep["std"], np.float32)[:, None, None]
    return ((x - mean) / std)[None]


def bodies(task: str, reference: Checkpoint) -> list[tuple[str, dict[str, Any], np.ndarray]]:
    """(id, request kwargs, expected model input (B, C, H, W)) for every body type."""
    one, batch = example(task, 1), example(task, 2, batch=3)
    shape = one.shape
    cases: list[tuple[str, dict[str, Any], np.ndarray]] = [
        ("json-one", {"json": {"inputs": one.tolist()}}, one[None]),
        ("json-batch", {"json": {"inputs": batch.tolist()}}, batch),
        ("npy-one", {"content": npy_bytes(one), "headers": NPY}, one[None]),
        ("npy-batch", {"content": npy_bytes(batch), "headers": NPY}, batch),
    ]
    if shape[0] == 1:
        cases += [
            ("npy-hw", {"content": npy_bytes(one[0]), "headers": NPY}, one[None]),
            ("npy-bhw", {"content": npy_bytes(batch[:, 0]), "headers": NPY}, batch),
        ]
    pixels = np.random.default_rng(3).integers(0, 256, (24, 20, 3), dtype=np.uint8)
    for fmt, ctype in (("PNG", "image/png"), ("JPEG", "image/jpeg")):
        body = image_body(pixels, fmt)
        x = preprocessed(body, reference, task)
        cases.append((fmt.lower(), {"content": body, "headers": {"content-type": ctype}}, x))
    return cases


@pytest.mark.parametrize("task", ["digits", "shapes"])
@pytest.mark.parametrize("query", ["", "?level=1", "?level=3"])
async def test_every_body_type_answers_like_the_model(
    client: AppClient, reference: Checkpoint, task: str, query: str
) -> None:
    for name, kwargs, x in bodies(task, reference):
        r = await client.post(f"/infer/{task}{query}", **kwargs)
        assert r.status_code == 200, (name, r.text)
        doc = r.json()
        assert doc["level"] == (int(query[-1]) if query else 4), name
        assert len(doc["predictions"]) == x.shape[0], name
        check_answer(reference, doc, x)


async def test_response_body_and_headers(client: AppClient, reference: Checkpoint) -> None:
    x = example("shapes", 5)
    r = await client.post("/infer/shapes", json={"inputs": x.tolist()})
    assert r.status_code == 200
    doc = r.json()
    entry = reference.manifest.task("shapes").levels[3]
    assert set(doc) == {
        "request_id", "task", "level", "units", "selection", "predictions", "budget", "cost",
        "model",
    }  # fmt: skip
    assert (doc["task"], doc["level"], doc["selection"], doc["budget"]) == (
        "shapes", 4, "default", None,
    )  # fmt: skip
    assert doc["units"] == entry.units == [3, 2, 1, 0]
    assert set(doc["predictions"][0]) == {
        "class_index", "class_name", "probability", "probabilities",
    }  # fmt: skip
    assert len(doc["predictions"][0]["probabilities"]) == 8
    assert sum(doc["predictions"][0]["probabilities"]) == pytest.approx(1.0, abs=1e-5)
    cost = doc["cost"]
    assert (cost["params"], cost["param_bytes"], cost["flops"]) == (
        entry.params, entry.param_bytes, entry.flops,
    )  # fmt: skip
    assert cost["predicted_latency_ms"] > 0
    assert cost["measured_latency_ms"] > 0
    m = reference.manifest
    assert doc["model"] == {"name": "tiny", "version": "0.0.1", "sha256": m.weights_sha256}
    assert r.headers["x-dvn-level"] == "4"
    assert r.headers["x-dvn-units"] == "3,2,1,0"
    assert "x-dvn-budget-met" not in r.headers
    assert re.fullmatch(r"[0-9a-f]{32}", r.headers["x-request-id"])
    assert doc["request_id"] == r.headers["x-request-id"]
    check_answer(reference, doc, x[None])


@pytest.mark.parametrize(
    ("sent", "echoed"),
    [
        ("trace-42", True),
        ("a.b:c_d-E", True),
        ("x" * 128, True),
        ("x" * 129, False),
        ("has space", False),
        ("caf\u00e9", False),
    ],
)
async def test_request_id_echoed_when_sane(client: AppClient, sent: str, echoed: bool) -> None:
    r = await client.post(
        "/infer/digits",
        json={"inputs": example("digits", 0).tolist()},
        headers=[(b"x-request-id", sent.encode("latin-1"))],
    )
    assert r.status_code == 200
    rid = r.headers["x-request-id"]
    assert (rid == sent) is echoed
    if not echoed:
        assert re.fullmatch(r"[0-9a-f]{32}", rid)
    assert r.json()["request_id"] == rid
    # Errors carry it too.
    bad = await client.get("/v1/nope", headers={"x-request-id": "err-1"})
    assert bad.headers["x-request-id"] == "err-1"


@pytest.mark.parametrize("task", ["digits", "shapes"])
async def test_memory_budget_picks_the_most_accurate_level_that_fits(
    client: AppClient, reference: Checkpoint, task: str
) -> None:
    levels = reference.manifest.task(task).levels
    x = example(task, 9)
    for lv in levels:
        for limit, want in ((lv.param_bytes, lv.level), (lv.param_bytes - 1, lv.level - 1)):
            if want == 0:
                continue
            r = await client.post(f"/infer/{task}?budget={limit}B", json={"inputs": x.tolist()})
            assert r.status_code == 200, r.text
            doc = r.json()
            assert (doc["level"], doc["selection"]) == (want, "budget")
            assert doc["units"] == levels[want - 1].units
            assert doc["budget"] == {
                "spec": f"{limit}B", "latency_s": None, "memory_bytes": limit, "met": True,
                "latency_met": None, "memory_met": True,
            }  # fmt: skip
            assert r.headers["x-dvn-budget-met"] == "true"
            assert r.headers["x-dvn-level"] == str(want)
            check_answer(reference, doc, x[None])


async def test_latency_budgets(client: AppClient, reference: Checkpoint) -> None:
    x = {"inputs": example("digits", 4).tolist()}
    r = await client.post("/infer/digits?budget=10s,1MiB", json=x)
    doc = r.json()
    assert (r.status_code, doc["level"], doc["selection"]) == (200, 4, "budget")
    assert doc["budget"] == {
        "spec": "10s,1MiB", "latency_s": 10.0, "memory_bytes": 1048576, "met": True,
        "latency_met": True, "memory_met": True,
    }  # fmt: skip
    # No level is predicted to answer in 5 s (the profile says a minute each): degrade
    # serves the smallest, which turns out to make it.
    with predicted(client, "digits", range(1, 5), 60.0):
        r = await client.post("/infer/digits?budget=5s", json=x)
    doc = r.json()
    assert (r.status_code, doc["level"], doc["selection"]) == (200, 1, "degraded")
    assert (doc["budget"]["met"], doc["budget"]["latency_met"]) == (True, True)
    check_answer(reference, doc, np.asarray(x["inputs"], np.float32)[None])
    # A microsecond has passed before any batch can form: never computed, degrade or not.
    r = await client.post("/infer/digits?budget=1us", json=x)
    status, kind, message = error_of(r)
    assert (status, kind) == (504, "deadline_exceeded")
    assert message.startswith("the latency budget of this task 'digits' request ran out ")
    r = await client.post("/infer/digits?budget=1us&on_miss=reject", json=x)
    status, kind, message = error_of(r)
    assert (status, kind) == (503, "deadline_unmeetable")
    assert message.startswith("no level of task 'digits' can answer within 0.001 ms now (")
    assert r.headers["retry-after"] == "1"


@pytest.mark.parametrize("level", LEVELS)
async def test_pinned_level(client: AppClient, reference: Checkpoint, level: int) -> None:
    x = example("digits", level, batch=2)
    r = await client.post(f"/infer/digits?level={level}", json={"inputs": x.tolist()})
    doc = r.json()
    assert (doc["level"], doc["selection"]) == (level, "pinned")
    assert r.headers["x-dvn-units"] == ",".join(map(str, range(level)))
    check_answer(reference, doc, x)


@pytest.mark.parametrize("level_plans", [True, False])
async def test_every_level_answers_with_and_without_level_plans(
    serve: ServeFactory, reference: Checkpoint, level_plans: bool
) -> None:
    """``DVN_LEVEL_PLANS``: folded per-level copies (the default) or the one set of
    weights; either way every level's answer is the model's."""
    client = await serve(level_plans=level_plans)
    for level in LEVELS:
        x = example("shapes", 20 + level, batch=3)
        r = await client.post(f"/infer/shapes?level={level}", json={"inputs": x.tolist()})
        assert r.status_code == 200, r.text
        check_answer(reference, r.json(), x)


async def test_pinned_level_reports_the_budget_it_misses(client: AppClient) -> None:
    r = await client.post(
        "/infer/digits?level=4&budget=1B", json={"inputs": example("digits", 0).tolist()}
    )
    doc = r.json()
    assert (r.status_code, doc["level"], doc["selection"]) == (200, 4, "pinned")
    assert (doc["budget"]["met"], doc["budget"]["memory_met"]) == (False, False)
    assert r.headers["x-dvn-budget-met"] == "false"


@pytest.mark.parametrize(("k", "shown"), [(1, 1), (3, 3), (10, 10), (50, 10)])
async def test_top_k(client: AppClient, reference: Checkpoint, k: int, shown: int) -> None:
    x = example("digits", 11, batch=2)
    r = await client.post(f"/infer/digits?level=2&top_k={k}", json={"inputs": x.tolist()})
    assert r.status_code == 200
    probs = torch.softmax(reference.model(torch.from_numpy(x), 0, 2), 1).detach().numpy()
    for row, pred in zip(probs, r.json()["predictions"], strict=True):
        assert "probabilities" not in pred
        assert set(pred) == {"class_index", "class_name", "probability", "top_k"}
        order = np.argsort(-row, kind="stable")[:shown]
        assert [c["class_index"] for c in pred["top_k"]] == order.tolist()
        assert [c["class_name"] for c in pred["top_k"]] == [str(i) for i in order]
        np.testing.assert_allclose([c["probability"] for c in pred["top_k"]], row[order], atol=1e-5)
        assert pred["class_index"] == pred["top_k"][0]["class_index"]


# Their messages are pinned in tests/server/test_errors_messages.py (CLIENT_MESSAGES).
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
    status, kind, message = error_of(r)
    size = int(r.request.headers["content-length"])
    assert (status, kind, message) == (
        413, "payload_too_large",
        f"body of {size} bytes is over the 2048-byte limit; send fewer examples per request "
        "(or raise DVN_MAX_BODY_BYTES)",
    )  # fmt: skip
    r = await client.post(
        "/infer/digits", content=npy_bytes(example("digits", 0, batch=5)), headers=NPY
    )
    assert error_of(r) == (
        400, "invalid_input",
        "batch of 5 examples is over the limit of 4 per request; split it into smaller requests",
    )  # fmt: skip
    r = await client.post("/infer/digits", content=b"1,2,3", headers={"content-type": "text/csv"})
    assert error_of(r) == (
        415, "unsupported_media_type",
        "content type 'text/csv' is not accepted; send application/json, application/x-npy, "
        "image/png or image/jpeg",
    )  # fmt: skip
    png = image_body(np.zeros((11, 10), np.uint8), "PNG")
    r = await client.post("/infer/digits", content=png, headers={"content-type": "image/png"})
    assert error_of(r) == (
        413, "payload_too_large",
        "image is 10x11 = 110 pixels, over the limit of 100; the task takes 8x8: resize it first",
    )  # fmt: skip
    r = await client.post("/infer/digits", content=png, headers={"content-type": "image/jpeg"})
    assert error_of(r)[:2] == (413, "payload_too_large")  # the size is checked first
    small = image_body(np.zeros((8, 8), np.uint8), "PNG")
    r = await client.post("/infer/digits", content=small, headers={"content-type": "image/jpeg"})
    assert error_of(r) == (
        400, "invalid_input",
        "body is a PNG image but the content type says JPEG; send the matching Content-Type",
    )  # fmt: skip
    r = await client.post("/infer/digits", content=b"\x89PNG junk", headers={"content-type": "image/png"})  # fmt: skip
    status, kind, message = error_of(r)
    assert (status, kind) == (400, "invalid_input")
    assert message.startswith("body is not a readable PNG image (")


# Their messages are pinned in tests/server/test_errors_messages.py (ROUTING_MESSAGES).
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
    assert error_of(r) == (500, "internal_error", "internal error (request id req-42)")
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
