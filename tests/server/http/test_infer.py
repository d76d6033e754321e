"""``POST /infer`` in process: every body type and budget against the model run directly,
pinned levels, top-k (its refusals are in test_infer_errors.py; /plan, /v1/models, export,
readiness and OpenAPI in test_models.py)."""

from __future__ import annotations

import io
import re
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

from model_store.checkpoint import Checkpoint
from tests.conftest import AppClient, ServeFactory
from tests.server.helpers import check_answer, error_of, example, image_body, npy_bytes, predicted
from tests.server.messages import MEASURED, NO_LEVEL_IN_TIME, RAN_OUT, matching

NPY = {"content-type": "application/x-npy"}
LEVELS = (1, 2, 3, 4)


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
    assert matching(RAN_OUT, task="digits", late_ms=MEASURED).fullmatch(message), message
    r = await client.post("/infer/digits?budget=1us&on_miss=reject", json=x)
    status, kind, message = error_of(r)
    assert (status, kind) == (503, "deadline_unmeetable")
    in_time = matching(NO_LEVEL_IN_TIME, task="digits", budget_ms="0.001", fastest_ms=MEASURED)
    assert in_time.fullmatch(message), message
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
