"""OIP v2 inference in process: a round trip against the model run directly in every
layout, UINT8 preprocessing, budget/level/on_miss in ``parameters``, and batching and
metrics shared with ``/infer``."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import numpy as np
import pytest

from model_store.checkpoint import Checkpoint
from tests.conftest import AppClient, ServeFactory, wait_until
from tests.server.helpers import predicted
from tests.server.http.oip.helpers import (
    GATE,
    GOOD,
    INFER,
    SHAPES,
    Gate,
    example,
    expected,
    oip_error,
    requests_total,
    tensor,
    with_input,
    with_oip,
)
from tests.server.messages import MEASURED, NO_LEVEL_IN_TIME, RAN_OUT, matching

LAYOUTS = ("batch-flat", "batch-nested", "one-flat", "one-nested", "versioned")


@pytest.mark.parametrize("task", ["digits", "shapes"])
@pytest.mark.parametrize("level", [None, 1, 3])
async def test_round_trip_answers_like_the_model(
    client: AppClient, reference: Checkpoint, task: str, level: int | None
) -> None:
    """Every data layout (flat or nested, batch or one example, with or without the
    version in the path) answers the model's softmax at the level it reports."""
    want_level = 4 if level is None else level
    entry = reference.manifest.task(task).levels[want_level - 1]
    units = ",".join(map(str, entry.units))
    for i, layout in enumerate(LAYOUTS):
        x = example(task, 7 + i, batch=None if layout.startswith("one") else 3)
        sent = tensor(x)
        if layout.endswith("nested"):
            sent["data"] = x.tolist()
        body: dict[str, Any] = {"id": f"req-{i}", "inputs": [sent]}
        if level is not None:
            body["parameters"] = {"level": level}
        url = "/v2/models/{task}/versions/0.0.1/infer" if layout == "versioned" else INFER
        r = await client.post(url.format(task=task), json=body)
        assert r.status_code == 200, (layout, r.text)
        doc = r.json()
        batch = x[None] if x.ndim == 3 else x
        probs = expected(reference, task, want_level, batch)
        assert set(doc) == {"model_name", "model_version", "id", "parameters", "outputs"}
        assert (doc["model_name"], doc["model_version"], doc["id"]) == (task, "0.0.1", f"req-{i}")
        assert doc["parameters"] == {
            "level": want_level,
            "units": units,
            "selection": "default" if level is None else "pinned",
            "param_bytes": entry.param_bytes,
            "measured_latency_ms": doc["parameters"]["measured_latency_ms"],
        }
        assert doc["parameters"]["measured_latency_ms"] > 0
        p, c = doc["outputs"]
        assert (p["name"], p["datatype"], p["shape"]) == (
            "probabilities",
            "FP32",
            list(probs.shape),
        )
        assert (c["name"], c["datatype"], c["shape"]) == ("class_index", "INT64", [len(batch)])
        assert c["data"] == probs.argmax(1).tolist()
        got = np.asarray(p["data"], dtype=np.float64).reshape(p["shape"])
        np.testing.assert_allclose(got, probs, rtol=0, atol=1e-5, err_msg=layout)
        assert (r.headers["x-dvn-level"], r.headers["x-dvn-units"]) == (str(want_level), units)


async def test_request_as_tritonclient_sends_it(client: AppClient, reference: Checkpoint) -> None:
    """No content type, ``binary_data_output`` asked for (answered as JSON, which the client
    reads too), an output with ``binary_data``, no id: none echoed."""
    x = example("digits", 3, batch=2)
    body = {
        "inputs": [tensor(x)],
        "outputs": [{"name": "probabilities", "parameters": {"binary_data": False}}],
        "parameters": {"binary_data_output": True},
    }
    r = await client.post(INFER.format(task="digits"), content=json.dumps(body).encode())
    assert r.status_code == 200, r.text
    doc = r.json()
    assert "id" not in doc
    assert [o["name"] for o in doc["outputs"]] == ["probabilities"]
    got = np.asarray(doc["outputs"][0]["data"]).reshape(2, 10)
    np.testing.assert_allclose(got, expected(reference, "digits", 4, x), rtol=0, atol=1e-5)


@pytest.mark.parametrize("task", ["digits", "shapes"])
async def test_uint8_pixels_are_preprocessed_as_the_manifest_says(
    client: AppClient, reference: Checkpoint, task: str
) -> None:
    pixels = np.random.default_rng(5).integers(0, 256, (2, *SHAPES[task]), dtype=np.uint8)
    pixels.reshape(-1)[:2] = (0, 255)
    prep = reference.manifest.task(task).preprocessing
    mean = np.asarray(prep["mean"], np.float32)[:, None, None]
    std = np.asarray(prep["std"], np.float32)[:, None, None]
    model_space = (pixels.astype(np.float32) / 255.0 - mean) / std
    body = {"inputs": [tensor(pixels, "UINT8")], "parameters": {"level": 2}}
    r = await client.post(INFER.format(task=task), json=body)
    assert r.status_code == 200, r.text
    out = r.json()["outputs"][0]
    got = np.asarray(out["data"]).reshape(out["shape"])
    np.testing.assert_allclose(got, expected(reference, task, 2, model_space), rtol=0, atol=1e-5)
    # The same pixels sent as model-space FP32 would be a different input altogether.
    raw = np.asarray(expected(reference, task, 2, pixels.astype(np.float32)))
    assert np.abs(raw - got).max() > 1e-3


@pytest.mark.parametrize("datatype", ["FP16", "FP64"])
async def test_other_float_datatypes(
    client: AppClient, reference: Checkpoint, datatype: str
) -> None:
    x = example("digits", 9, batch=2)
    sent = x.astype(np.float16) if datatype == "FP16" else x.astype(np.float64)
    r = await client.post(INFER.format(task="digits"), json={"inputs": [tensor(sent, datatype)]})
    assert r.status_code == 200, r.text
    out = r.json()["outputs"][0]
    want = expected(reference, "digits", 4, sent.astype(np.float32))
    np.testing.assert_allclose(np.reshape(out["data"], out["shape"]), want, rtol=0, atol=1e-5)


async def test_memory_budget_picks_the_level_v1_picks(
    client: AppClient, reference: Checkpoint
) -> None:
    x = example("shapes", 4, batch=2)
    for level in (1, 2, 3):
        budget = f"{reference.manifest.task('shapes').levels[level - 1].param_bytes + 10}B"
        v1 = await client.post(f"/infer/shapes?budget={budget}", json={"inputs": x.tolist()})
        body = {"inputs": [tensor(x)], "parameters": {"budget": budget}}
        r = await client.post(INFER.format(task="shapes"), json=body)
        assert r.status_code == v1.status_code == 200, r.text
        params = r.json()["parameters"]
        assert params["level"] == v1.json()["level"] == level
        assert (params["selection"], params["budget"], params["budget_met"]) == (
            "budget", budget, True,
        )  # fmt: skip
        assert r.headers["x-dvn-budget-met"] == "true"


async def test_latency_budget_and_on_miss(client: AppClient) -> None:
    x = example("digits", 2)
    # No level predicted in 5 s: degrade serves the smallest (which turns out in time).
    body: dict[str, Any] = {"inputs": [tensor(x)], "parameters": {"budget": "5s"}}
    with predicted(client, "digits", range(1, 5), 60.0):
        r = await client.post(INFER.format(task="digits"), json=body)
    assert r.status_code == 200, r.text
    params = r.json()["parameters"]
    assert (params["level"], params["selection"], params["budget_met"]) == (1, "degraded", True)
    # A microsecond: passed before any batch forms, so never computed (504)...
    body["parameters"] = {"budget": "1us"}
    r = await client.post(INFER.format(task="digits"), json=body)
    status, kind, message = oip_error(r)
    assert (status, kind) == (504, "deadline_exceeded")
    assert matching(RAN_OUT, task="digits", late_ms=MEASURED).fullmatch(message), message
    # ... and refused at once with on_miss=reject, since no level is predicted in time.
    body["parameters"]["on_miss"] = "reject"
    r = await client.post(INFER.format(task="digits"), json=body)
    status, kind, message = oip_error(r)
    assert (status, kind) == (503, "deadline_unmeetable")
    in_time = matching(NO_LEVEL_IN_TIME, task="digits", budget_ms="0.001", fastest_ms=MEASURED)
    assert in_time.fullmatch(message), message
    assert int(r.headers["retry-after"]) >= 1
    # A pinned level is served even when it misses the budget, and says so.
    body["parameters"] = {"budget": "1B", "level": 3, "on_miss": "degrade"}
    r = await client.post(INFER.format(task="digits"), json=body)
    params = r.json()["parameters"]
    assert (params["level"], params["selection"], params["budget_met"]) == (3, "pinned", False)


async def test_v1_and_v2_requests_share_one_batch(
    serve: ServeFactory, reference: Checkpoint
) -> None:
    gate = Gate(lambda inputs: bool((inputs == GATE).any()))
    client = with_oip(await serve(forward_wrapper=gate))
    batcher = client.app.state.runtime.service.batcher
    blocker = example("digits", 1)
    blocker.reshape(-1)[0] = GATE
    first = asyncio.create_task(
        client.post("/infer/digits?level=2", json={"inputs": blocker.tolist()})
    )
    await wait_until(
        lambda: batcher.depth(("digits", 2)) == 0 and gate.entered.is_set(), 10, "gate"
    )
    a, b = example("digits", 2), example("digits", 3, batch=2)
    v1 = asyncio.create_task(client.post("/infer/digits?level=2", json={"inputs": a.tolist()}))
    body = {"inputs": [tensor(b)], "parameters": {"level": 2}}
    v2 = asyncio.create_task(client.post(INFER.format(task="digits"), json=body))
    await wait_until(lambda: batcher.depth(("digits", 2)) == 2, 10, "both queued")
    count = len(gate.batches)
    gate.open.set()
    r1, r2 = await asyncio.gather(v1, v2)
    assert (await first).status_code == 200
    assert r1.status_code == r2.status_code == 200
    batched = [x for level, x in gate.batches[count:] if level == 2]
    assert len(batched) == 1 and len(batched[0]) == 3  # one forward for both requests
    assert {x.tobytes() for x in batched[0]} == {a.tobytes(), *(x.tobytes() for x in b)}
    got = np.reshape(r2.json()["outputs"][0]["data"], (2, 10))
    np.testing.assert_allclose(got, expected(reference, "digits", 2, b), rtol=0, atol=1e-5)


async def test_v2_requests_count_in_the_same_metrics(client: AppClient) -> None:
    x = example("digits", 4)
    assert (await client.post("/infer/digits?level=1", json={"inputs": x.tolist()})).is_success
    for level in (1, 1, 3):
        body = {"inputs": [tensor(x)], "parameters": {"level": level}}
        assert (await client.post(INFER.format(task="digits"), json=body)).is_success
    await client.post(INFER.format(task="digits"), json=with_input(datatype="INT64"))
    await client.post(INFER.format(task="cifar"), json={"inputs": [GOOD]})
    await client.get("/v2/models/digits")  # metadata and health are not requests
    await client.get("/v2/health/ready")
    assert await requests_total(client) == {
        ("digits", "1", "ok"): 3,
        ("digits", "3", "ok"): 1,
        ("digits", "none", "invalid"): 1,
        ("unknown", "none", "invalid"): 1,
    }
