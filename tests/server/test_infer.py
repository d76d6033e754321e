"""The v1 API in process: /infer against the model run directly, /plan, /v1/models,
export, readiness, error shapes and the OpenAPI document."""

from __future__ import annotations

import hashlib
import io
import json
import re
import tarfile
import threading
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from fastapi.routing import APIRoute
from PIL import Image

from model_store.checkpoint import Checkpoint, load
from model_store.costs import unit_param_bytes
from server.executor import ForwardFn
from tests.conftest import AppClient, ServeFactory, wait_until
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


@pytest.mark.parametrize(
    ("url", "body", "status", "kind", "message"),
    [
        ("/infer/nope", None, 404, "unknown_task", "unknown task 'nope'; this server serves: digits, shapes"),
        ("/infer/Digits", None, 404, "unknown_task", "unknown task 'Digits'; this server serves: digits, shapes"),
        ("/infer/digits?level=0", None, 422, "invalid_parameter", "level 0 is out of range for task 'digits': use 1..4"),
        ("/infer/digits?level=5", None, 422, "invalid_parameter", "level 5 is out of range for task 'digits': use 1..4"),
        ("/infer/digits?level=two", None, 422, "invalid_parameter", "level must be a whole number (1-based), got 'two'"),
        ("/infer/digits?on_miss=maybe", None, 422, "invalid_parameter", "on_miss must be degrade or reject, got 'maybe'"),
        ("/infer/digits?top_k=0", None, 422, "invalid_parameter", "top_k must be at least 1, got 0"),
        ("/infer/digits?top_k=-2", None, 422, "invalid_parameter", "top_k must be at least 1, got -2"),
        ("/infer/digits?budget=" + "1" * 199 + "ms", None, 422, "invalid_parameter", "budget is 201 characters long, over the 200 allowed; a budget is at most one latency and one memory constraint, e.g. budget=15ms,2MiB"),
        ("/infer/digits?budget=5xs", None, 422, "invalid_budget", "budget '5xs': unknown unit 'xs'; use one of us, ms, s, B, kB, MB, GB, KiB, MiB, GiB (units are case-sensitive), e.g. budget=15ms,2MiB"),
        ("/infer/digits?budget=5ms,5ms", None, 422, "invalid_budget", "budget '5ms,5ms': more than one latency constraint; give one"),
        ("/infer/digits?budget=1kB", None, 422, "budget_unsatisfiable", "memory budget 1000 B (1000 B) is below the smallest level of task 'digits': level 1 needs 1744 B (1.7 KiB); raise the budget to at least that"),
        ("/infer/digits", {"inputs": [[1.0, 2.0]]}, 400, "invalid_input", "task 'digits' takes one example of shape (1, 8, 8) or a batch (B, 1, 8, 8); got shape (1, 2)"),
        ("/infer/digits", {"inputs": []}, 400, "invalid_input", "the batch is empty; send at least one example"),
        ("/infer/digits", {"x": 1}, 400, "invalid_input", 'JSON body must be an object with an "inputs" field: {"inputs": [...]}'),
    ],
)  # fmt: skip
async def test_client_errors(
    client: AppClient, url: str, body: Any, status: int, kind: str, message: str
) -> None:
    payload = {"inputs": example("digits", 0).tolist()} if body is None else body
    r = await client.post(url, json=payload)
    assert error_of(r) == (status, kind, message)
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


@pytest.mark.parametrize(
    ("method", "url", "status", "kind", "message"),
    [
        ("GET", "/nope", 404, "not_found", "no route /nope; see /docs for the API"),
        ("POST", "/infer", 404, "not_found", "no route /infer; see /docs for the API"),
        ("POST", "/infer/", 404, "not_found", "no route /infer/; see /docs for the API"),
        ("POST", "/infer/digits/extra", 404, "not_found", "no route /infer/digits/extra; see /docs for the API"),
        ("PUT", "/infer/digits", 405, "method_not_allowed", "PUT is not allowed on /infer/digits"),
        ("GET", "/v1/models/digits/levels/x/y", 404, "not_found", "no route /v1/models/digits/levels/x/y; see /docs for the API"),
        ("GET", "/infer/digits", 405, "method_not_allowed", "GET is not allowed on /infer/digits"),
        ("POST", "/v1/models", 405, "method_not_allowed", "POST is not allowed on /v1/models"),
        ("DELETE", "/plan/digits", 405, "method_not_allowed", "DELETE is not allowed on /plan/digits"),
        ("POST", "/healthz", 405, "method_not_allowed", "POST is not allowed on /healthz"),
    ],
)  # fmt: skip
async def test_routing_errors_share_the_error_shape(
    client: AppClient, method: str, url: str, status: int, kind: str, message: str
) -> None:
    r = await client.request(method, url)
    assert error_of(r) == (status, kind, message)
    assert r.headers["content-type"] == "application/json"


async def test_a_bug_in_the_infer_path_is_a_500_naming_the_request_id(
    client: AppClient, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """``POST /infer/{task}`` skips FastAPI's routing (server/app.py ``DirectInfer``); an
    exception that is not a ServeError still gets the one error shape, with the request id
    to find the logged traceback, and the server goes on."""

    async def broken(task: str, request: Any) -> Any:
        raise RuntimeError("a bug")

    monkeypatch.setattr("server.app.infer_endpoint", broken)
    r = await client.post(
        "/infer/digits", json={"inputs": example("digits", 0).tolist()},
        headers={"x-request-id": "req-42"},
    )  # fmt: skip
    assert error_of(r) == (500, "internal_error", "internal error (request id req-42)")
    assert r.headers["x-request-id"] == "req-42"
    assert any(rec.message == "unhandled error" and rec.exc_info for rec in caplog.records)
    monkeypatch.undo()
    assert (await client.get("/healthz")).status_code == 200


# -- /plan --------------------------------------------------------------------------------


async def test_plan_shows_every_level_and_the_choice_infer_makes(
    client: AppClient, reference: Checkpoint
) -> None:
    task = reference.manifest.task("shapes")
    limit = task.levels[2].param_bytes + 10
    r = await client.get(f"/plan/shapes?budget={limit}B")
    assert r.status_code == 200
    plan = r.json()
    assert set(plan) == {"task", "budget", "level", "selection", "budget_met", "error", "levels"}
    assert (plan["task"], plan["level"], plan["selection"], plan["budget_met"]) == (
        "shapes", 3, "budget", True,
    )  # fmt: skip
    assert plan["error"] is None
    assert plan["budget"] == {"spec": f"{limit}B", "latency_s": None, "memory_bytes": limit}
    assert [lv["level"] for lv in plan["levels"]] == list(LEVELS)
    for row, lv in zip(plan["levels"], task.levels, strict=True):
        assert set(row) == {
            "level", "units", "params", "param_bytes", "flops", "accuracy",
            "predicted_latency_ms", "queue_wait_ms", "queue_depth", "fits_memory",
            "fits_latency",
        }  # fmt: skip
        assert (row["units"], row["params"], row["param_bytes"], row["flops"]) == (
            lv.units, lv.params, lv.param_bytes, lv.flops,
        )  # fmt: skip
        assert lv.accuracy is not None
        assert row["accuracy"] == lv.accuracy.value
        assert row["predicted_latency_ms"] > 0
        assert (row["queue_wait_ms"], row["queue_depth"]) == (0.0, 0)
        assert row["fits_memory"] is (lv.level <= 3)
        assert row["fits_latency"] is True
    r = await client.post(f"/infer/shapes?budget={limit}B", json={"inputs": example("shapes", 0).tolist()})  # fmt: skip
    assert (r.json()["level"], r.json()["selection"]) == (plan["level"], plan["selection"])
    plain = (await client.get("/plan/digits")).json()
    assert (plain["level"], plain["selection"], plain["budget_met"], plain["budget"]) == (
        4, "default", None, None,
    )  # fmt: skip


@pytest.mark.parametrize(
    ("query", "kind", "message"),
    [
        ("budget=1kB", "budget_unsatisfiable", "memory budget 1000 B (1000 B) is below the smallest level of task 'digits': level 1 needs 1744 B (1.7 KiB); raise the budget to at least that"),
        ("budget=1us&on_miss=reject", "deadline_unmeetable", None),
    ],
)  # fmt: skip
async def test_plan_of_a_failing_request(
    client: AppClient, query: str, kind: str, message: str | None
) -> None:
    r = await client.get(f"/plan/digits?{query}")
    assert r.status_code == 200
    plan = r.json()
    assert (plan["level"], plan["selection"], plan["budget_met"]) == (None, None, None)
    assert plan["error"]["type"] == kind
    if message is not None:
        assert plan["error"]["message"] == message
    assert len(plan["levels"]) == 4
    degraded = (await client.get("/plan/digits?budget=1us")).json()
    assert (degraded["level"], degraded["selection"], degraded["budget_met"]) == (
        1, "degraded", False,
    )  # fmt: skip


async def test_plan_errors(client: AppClient) -> None:
    assert error_of(await client.get("/plan/nope")) == (
        404, "unknown_task", "unknown task 'nope'; this server serves: digits, shapes",
    )  # fmt: skip
    assert error_of(await client.get("/plan/digits?budget=5"))[:2] == (422, "invalid_budget")
    assert error_of(await client.get("/plan/digits?examples=0")) == (
        422, "invalid_parameter",
        "invalid request parameters: query.examples: Input should be greater than or equal to 1",
    )  # fmt: skip


# -- /v1/models and export ----------------------------------------------------------------


async def test_models_summary(client: AppClient, reference: Checkpoint) -> None:
    r = await client.get("/v1/models")
    assert r.status_code == 200
    doc = r.json()
    m = reference.manifest
    assert (doc["name"], doc["version"], doc["sha256"], doc["device"], doc["num_units"]) == (
        "tiny", "0.0.1", m.weights_sha256, "cpu", 4,
    )  # fmt: skip
    state = reference.model.state_dict().values()
    assert doc["param_bytes"] == sum(t.numel() * t.element_size() for t in state)
    assert doc["unit_param_bytes"] == {
        str(u): n for u, n in unit_param_bytes(reference.model).items()
    }
    assert [t["name"] for t in doc["tasks"]] == ["digits", "shapes"]
    for got, entry in zip(doc["tasks"], m.tasks, strict=True):
        assert got["classes"] == entry.classes
        assert got["input_shape"] == entry.input_shape
        assert got["preprocessing"] == entry.preprocessing
        assert got["unit_order"] == entry.unit_order
        assert [lv["level"] for lv in got["levels"]] == list(LEVELS)
        for row, lv in zip(got["levels"], entry.levels, strict=True):
            assert lv.accuracy is not None
            assert row == {
                "level": lv.level, "units": lv.units, "params": lv.params,
                "param_bytes": lv.param_bytes, "flops": lv.flops,
                "accuracy": lv.accuracy.value, "latency_ms": row["latency_ms"],
            }  # fmt: skip
            # Every batch size the batcher forms was profiled (max_batch_size=8).
            assert sorted(row["latency_ms"], key=int) == ["1", "2", "4", "8"]
            assert all(v > 0 for v in row["latency_ms"].values())
    assert doc["tasks"][0]["preprocessing"] == {
        "color_mode": "L", "size": [8, 8], "mean": [0.5], "std": [0.25],
    }  # fmt: skip
    assert [lv["accuracy"] for lv in doc["tasks"][1]["levels"]] == [0.6, 0.7, 0.8, 0.9]


async def test_models_profile_follows_max_batch_size(serve: ServeFactory) -> None:
    client = await serve(max_batch_size=6)
    doc = (await client.get("/v1/models")).json()
    for task in doc["tasks"]:
        for lv in task["levels"]:
            assert list(lv["latency_ms"]) == ["1", "2", "4", "6"]


def unpack(body: bytes, into: Path) -> list[str]:
    with tarfile.open(fileobj=io.BytesIO(body)) as tar:
        names = tar.getnames()
        tar.extractall(into, filter="data")
    return names


@pytest.mark.parametrize(("task", "level"), [("digits", 2), ("shapes", 1), ("shapes", 4)])
async def test_export_level(
    client: AppClient, reference: Checkpoint, tmp_path: Path, task: str, level: int
) -> None:
    r = await client.get(f"/v1/models/{task}/levels/{level}/export")
    assert r.status_code == 200
    assert r.headers["content-type"] == "application/x-tar"
    assert r.headers["content-disposition"] == (
        f'attachment; filename="tiny-{task}-level{level}.tar"'
    )
    assert r.headers["x-dvn-archive-sha256"] == hashlib.sha256(r.content).hexdigest()
    assert r.headers["x-dvn-level"] == str(level)
    entry = reference.manifest.task(task).levels[level - 1]
    assert r.headers["x-dvn-units"] == ",".join(map(str, entry.units))
    assert unpack(r.content, tmp_path) == ["manifest.json", "weights.safetensors"]
    sub = load(tmp_path, "cpu")
    assert [t.name for t in sub.manifest.tasks] == [task]
    (only,) = sub.manifest.tasks[0].levels
    assert (only.params, only.param_bytes, only.flops) == (
        entry.params, entry.param_bytes, entry.flops,
    )  # fmt: skip
    assert sub.manifest.exported_from is not None
    assert sub.manifest.exported_from.level == level
    x = torch.from_numpy(example(task, 21, batch=4))
    t = reference.model.config.task_index(task)
    with torch.inference_mode():
        want = torch.softmax(reference.model(x, t, level), 1)
        got = torch.softmax(sub.model(x, 0, 1), 1)
    torch.testing.assert_close(got, want, rtol=0, atol=1e-5)
    again = await client.get(f"/v1/models/{task}/levels/{level}/export")
    assert again.content == r.content  # cached, and byte-for-byte reproducible


async def test_export_by_memory_budget(client: AppClient, reference: Checkpoint) -> None:
    levels = reference.manifest.task("digits").levels
    for lv in levels:
        for limit, want in ((lv.param_bytes, lv.level), (lv.param_bytes - 1, lv.level - 1)):
            r = await client.get(f"/v1/models/digits/export?budget={limit}B")
            if want == 0:
                assert error_of(r) == (
                    422, "budget_unsatisfiable",
                    f"memory budget {limit} B (1.7 KiB) is below the smallest level of task "
                    "'digits': level 1 needs 1744 B (1.7 KiB); raise the budget to at least that",
                )  # fmt: skip
                continue
            assert r.status_code == 200
            assert r.headers["x-dvn-level"] == str(want)
            assert r.headers["content-disposition"].endswith(f'tiny-digits-level{want}.tar"')
    r = await client.get("/v1/models/digits/export?budget=1GiB")
    assert r.headers["x-dvn-level"] == "4"


@pytest.mark.parametrize(
    ("url", "status", "kind", "message"),
    [
        ("/v1/models/digits/export", 422, "invalid_parameter", "export takes a memory budget only, e.g. ?budget=2MiB (or use /v1/models/digits/levels/{level}/export)"),
        ("/v1/models/digits/export?budget=5ms", 422, "invalid_parameter", "export takes a memory budget only, e.g. ?budget=2MiB (or use /v1/models/digits/levels/{level}/export)"),
        ("/v1/models/digits/export?budget=5ms,1MiB", 422, "invalid_parameter", "export takes a memory budget only, e.g. ?budget=2MiB (or use /v1/models/digits/levels/{level}/export)"),
        ("/v1/models/digits/export?budget=1XB", 422, "invalid_budget", "budget '1XB': unknown unit 'XB'; use one of us, ms, s, B, kB, MB, GB, KiB, MiB, GiB (units are case-sensitive), e.g. budget=15ms,2MiB"),
        ("/v1/models/nope/export?budget=1MiB", 404, "unknown_task", "unknown task 'nope'; this server serves: digits, shapes"),
        ("/v1/models/nope/levels/1/export", 404, "unknown_task", "unknown task 'nope'; this server serves: digits, shapes"),
        ("/v1/models/digits/levels/0/export", 422, "invalid_parameter", "level 0 is out of range for task 'digits': use 1..4"),
        ("/v1/models/digits/levels/5/export", 422, "invalid_parameter", "level 5 is out of range for task 'digits': use 1..4"),
        ("/v1/models/digits/levels/top/export", 422, "invalid_parameter", "invalid request parameters: path.level: Input should be a valid integer, unable to parse string as an integer"),
    ],
)  # fmt: skip
async def test_export_errors(
    client: AppClient, url: str, status: int, kind: str, message: str
) -> None:
    assert error_of(await client.get(url)) == (status, kind, message)


# -- readiness ----------------------------------------------------------------------------


async def test_readyz_is_503_until_warm_up_ends(serve: ServeFactory) -> None:
    entered, release = threading.Event(), threading.Event()

    def blocked(forward: ForwardFn) -> ForwardFn:
        def wrapped(task: int, level: int, inputs: np.ndarray) -> np.ndarray:
            entered.set()
            release.wait(timeout=30)
            return forward(task, level, inputs)

        return wrapped

    try:
        client = await serve(forward_wrapper=blocked, wait_ready=False)
        await wait_until(entered.is_set, 30, "warm-up to start")
        r = await client.get("/readyz")
        assert error_of(r) == (503, "not_ready", "the server is warming up")
        assert r.headers["retry-after"] == "1"
        r = await client.post("/infer/digits", json={"inputs": example("digits", 0).tolist()})
        assert error_of(r) == (
            503, "not_ready", "the server is warming up (profiling every level); retry shortly",
        )  # fmt: skip
        assert r.headers["retry-after"] == "1"
        assert error_of(await client.get("/v1/models"))[:2] == (503, "not_ready")
        r = await client.get("/healthz")
        assert (r.status_code, r.json()) == (200, {"status": "alive"})
    finally:
        release.set()
    await wait_until(lambda: client.app.state.runtime.ready, 30, "warm-up")
    r = await client.get("/readyz")
    assert (r.status_code, r.json()) == (200, {"status": "ready"})
    r = await client.post("/infer/digits", json={"inputs": example("digits", 0).tolist()})
    assert r.status_code == 200


async def test_failed_warm_up_is_logged_and_never_ready(
    serve: ServeFactory, capsys: pytest.CaptureFixture[str]
) -> None:
    def broken(forward: ForwardFn) -> ForwardFn:
        def wrapped(task: int, level: int, inputs: np.ndarray) -> np.ndarray:
            raise RuntimeError("device lost")

        return wrapped

    client = await serve(forward_wrapper=broken, wait_ready=False)
    runtime = client.app.state.runtime
    await wait_until(lambda: runtime.warmup.done(), 30, "warm-up to end")
    message = "warm-up failed (RuntimeError: device lost); see the server log"
    r = await client.get("/readyz")
    assert error_of(r) == (503, "not_ready", message)
    r = await client.post("/infer/digits", json={"inputs": example("digits", 0).tolist()})
    assert error_of(r) == (503, "not_ready", message)
    assert (await client.get("/healthz")).status_code == 200
    assert runtime.ready is False
    err = capsys.readouterr().err
    assert "warm-up failed: the server will not turn ready" in err
    assert "RuntimeError: device lost" in err  # with the traceback


async def test_draining_refuses_new_work(client: AppClient) -> None:
    await client.app.state.runtime.stop()
    r = await client.get("/readyz")
    assert error_of(r) == (503, "not_ready", "the server is draining")
    r = await client.post("/infer/digits", json={"inputs": example("digits", 0).tolist()})
    assert error_of(r) == (
        503, "not_ready", "the server is shutting down; retry on another replica",
    )  # fmt: skip
    assert r.headers["retry-after"] == "1"
    assert (await client.get("/healthz")).status_code == 200


# -- OpenAPI ------------------------------------------------------------------------------

ROUTES = {
    "/infer/{task}": "post",
    "/plan/{task}": "get",
    "/v1/models": "get",
    "/v1/models/{task}/levels/{level}/export": "get",
    "/v1/models/{task}/export": "get",
    "/healthz": "get",
    "/readyz": "get",
    "/metrics": "get",
}
API_ERRORS = {"400", "401", "403", "404", "405", "413", "415", "422", "429", "500", "503", "504"}


async def test_openapi_documents_every_route_and_its_errors(client: AppClient) -> None:
    r = await client.get("/openapi.json")
    assert r.status_code == 200
    doc = r.json()
    for path, method in ROUTES.items():
        assert method in doc["paths"].get(path, {}), path
    # Every route the app serves is documented (whatever else is registered later).
    for route in client.app.routes:
        if isinstance(route, APIRoute) and route.include_in_schema:
            for method in route.methods or ():
                assert method.lower() in doc["paths"][route.path_format], route.path
    error_ref = {"$ref": "#/components/schemas/ErrorBody"}
    for path in ("/infer/{task}", "/plan/{task}", "/v1/models", "/v1/models/{task}/export"):
        responses = doc["paths"][path][ROUTES[path]]["responses"]
        assert set(responses) == {"200"} | API_ERRORS, path
        for status in API_ERRORS:
            assert responses[status]["content"]["application/json"]["schema"] == error_ref
    infer = doc["paths"]["/infer/{task}"]["post"]
    assert set(infer["requestBody"]["content"]) == {
        "application/json", "application/x-npy", "image/png", "image/jpeg",
    }  # fmt: skip
    assert {p["name"] for p in infer["parameters"]} == {
        "task", "budget", "level", "on_miss", "top_k",
    }  # fmt: skip
    assert infer["responses"]["422"]["description"] == (
        "invalid_budget; budget_unsatisfiable; invalid_parameter"
    )
    assert infer["responses"]["503"]["description"] == "deadline_unmeetable; not_ready"
    assert "HTTPValidationError" not in doc["components"]["schemas"]
    export = doc["paths"]["/v1/models/{task}/levels/{level}/export"]["get"]["responses"]
    assert set(export["200"]["content"]) == {"application/x-tar"}
    assert set(doc["paths"]["/readyz"]["get"]["responses"]) == {"200", "503"}
    assert set(doc["components"]["schemas"]["ErrorBody"]["properties"]) == {"error"}


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
