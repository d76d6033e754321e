"""The KServe Open Inference Protocol v2 in process: health, metadata, version routes, an
inference round trip against the model run directly, UINT8 preprocessing, budget/level/
on_miss in ``parameters``, bad tensors in the protocol's error shape, shared batching and
shared metrics with ``/infer``, and the OpenAPI document."""

from __future__ import annotations

import asyncio
import importlib.metadata
import json
import threading
import warnings
from collections.abc import Callable
from typing import Any

import httpx
import numpy as np
import pytest
import torch
from fastapi import Depends, Request
from prometheus_client.parser import text_string_to_metric_families
from starlette.routing import NoMatchFound

from model_store.checkpoint import Checkpoint
from server import oip
from server.auth import check_key
from server.executor import ForwardFn
from tests.conftest import AppClient, ServeFactory, wait_until
from tests.server.helpers import predicted

INFER = "/v2/models/{task}/infer"
SHAPES = {"digits": (1, 8, 8), "shapes": (3, 16, 16)}
GATE = 321.0  # a value no warm-up input holds: a batch holding it waits at the gate
NOT_READY = "the server is warming up (profiling every level); retry shortly"


def with_oip(client: AppClient) -> AppClient:
    """The app with the protocol's routes: as ``create_app`` registers them once it does,
    else registered here with the same lines (before the first request, since Starlette
    reads the exception handlers when it builds the middleware stack)."""
    app = client.app
    try:
        app.url_path_for("oip_server_metadata")
    except NoMatchFound:
        assert app.middleware_stack is None
        settings = app.state.runtime.settings

        def require_key(request: Request) -> None:
            check_key(request, settings.api_keys)

        guarded = [Depends(require_key)] if settings.api_keys else []
        oip.protocol_error_shape(app)
        app.include_router(oip.router, dependencies=guarded)
        app.include_router(
            oip.health_router, dependencies=guarded if settings.protect_health else []
        )
    app.url_path_for("oip_server_metadata")
    return client


@pytest.fixture
async def client(serve: ServeFactory) -> AppClient:
    return with_oip(await serve())


def example(task: str, seed: int, batch: int | None = None) -> np.ndarray:
    shape = SHAPES[task] if batch is None else (batch, *SHAPES[task])
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


def tensor(x: np.ndarray, datatype: str = "FP32", name: str = "input") -> dict[str, Any]:
    return {"name": name, "shape": list(x.shape), "datatype": datatype, "data": x.ravel().tolist()}


def expected(reference: Checkpoint, task: str, level: int, x: np.ndarray) -> np.ndarray:
    """Softmax of the model run directly on ``x`` (B, C, H, W)."""
    model = reference.model
    with torch.inference_mode():
        logits = model(torch.from_numpy(x), model.config.task_index(task), level)
        probs: np.ndarray = torch.softmax(logits.float(), dim=1).numpy()
    return probs


def oip_error(r: httpx.Response) -> tuple[int, str, str]:
    """(status, X-DVN-Error-Type, message) of a protocol error, checking its shape."""
    doc = r.json()
    assert set(doc) == {"error"} and isinstance(doc["error"], str), doc
    assert r.headers["content-type"] == "application/json"
    return r.status_code, r.headers["x-dvn-error-type"], doc["error"]


async def requests_total(client: AppClient) -> dict[tuple[str, str, str], float]:
    r = await client.get("/metrics")
    found = {}
    for family in text_string_to_metric_families(r.text):
        for s in family.samples:
            if s.name == "dvn_requests_total" and s.value:
                found[(s.labels["task"], s.labels["level"], s.labels["outcome"])] = s.value
    return found


# -- health and metadata --------------------------------------------------------------------


async def test_server_metadata_and_health(client: AppClient) -> None:
    r = await client.get("/v2")
    assert (r.status_code, r.json()) == (
        200,
        {
            "name": "dvn-serve",
            "version": importlib.metadata.version("dvn-serve"),
            "extensions": ["dvn_budget"],
        },
    )
    r = await client.get("/v2/health/live")
    assert (r.status_code, r.json()) == (200, {"live": True})
    r = await client.get("/v2/health/ready")
    assert (r.status_code, r.json()) == (200, {"ready": True})


@pytest.mark.parametrize("task", ["digits", "shapes"])
async def test_model_metadata(client: AppClient, reference: Checkpoint, task: str) -> None:
    m = reference.manifest
    entry = m.task(task)
    want: dict[str, Any] = {
        "name": task,
        "versions": ["0.0.1"],
        "platform": "pytorch_dvn",
        "inputs": [{"name": "input", "datatype": "FP32", "shape": [-1, *SHAPES[task]]}],
        "outputs": [
            {"name": "probabilities", "datatype": "FP32", "shape": [-1, len(entry.classes)]},
            {"name": "class_index", "datatype": "INT64", "shape": [-1]},
        ],
        "parameters": {
            "checkpoint": "tiny",
            "sha256": m.weights_sha256,
            "classes": json.dumps(entry.classes),
            "color_mode": {"digits": "L", "shapes": "RGB"}[task],
            "mean": {"digits": "0.5", "shapes": "0.5,0.5,0.5"}[task],
            "std": {"digits": "0.25", "shapes": "0.25,0.25,0.25"}[task],
            "levels": 4,
            **{
                f"level_{lv.level}_{key}": value
                for lv in entry.levels
                for key, value in (
                    ("units", ",".join(map(str, lv.units))),
                    ("param_bytes", lv.param_bytes),
                    ("accuracy", {1: 0.6, 2: 0.7, 3: 0.8, 4: 0.9}[lv.level]),
                )
            },
        },
    }
    for url in (f"/v2/models/{task}", f"/v2/models/{task}/versions/0.0.1"):
        r = await client.get(url)
        assert (r.status_code, r.json()) == (200, want), url
    assert len(want["parameters"]["level_4_units"].split(",")) == 4
    for url in (f"/v2/models/{task}/ready", f"/v2/models/{task}/versions/0.0.1/ready"):
        r = await client.get(url)
        assert (r.status_code, r.json()) == (200, {"name": task, "ready": True}), url


UNKNOWN_MODEL = "unknown task 'cifar'; this server serves: digits, shapes"
OTHER_VERSION = (
    "model 'digits' has no version '9'; this server serves version '0.0.1' (or leave the "
    "version out of the path)"
)


async def test_unknown_model_or_version_is_404(client: AppClient) -> None:
    body = {"inputs": [tensor(example("digits", 0))]}
    cases = [
        ("GET", "/v2/models/cifar", "unknown_task", UNKNOWN_MODEL),
        ("GET", "/v2/models/cifar/ready", "unknown_task", UNKNOWN_MODEL),
        ("GET", "/v2/models/cifar/versions/0.0.1", "unknown_task", UNKNOWN_MODEL),
        ("POST", "/v2/models/cifar/infer", "unknown_task", UNKNOWN_MODEL),
        ("POST", "/v2/models/cifar/versions/0.0.1/infer", "unknown_task", UNKNOWN_MODEL),
        ("GET", "/v2/models/digits/versions/9", "not_found", OTHER_VERSION),
        ("GET", "/v2/models/digits/versions/9/ready", "not_found", OTHER_VERSION),
        ("POST", "/v2/models/digits/versions/9/infer", "not_found", OTHER_VERSION),
    ]
    for method, url, kind, message in cases:
        r = await client.request(method, url, json=body if method == "POST" else None)
        assert oip_error(r) == (404, kind, message), url


# -- inference --------------------------------------------------------------------------------


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
    # ... and refused at once with on_miss=reject, since no level is predicted in time.
    body["parameters"]["on_miss"] = "reject"
    r = await client.post(INFER.format(task="digits"), json=body)
    status, kind, message = oip_error(r)
    assert (status, kind) == (503, "deadline_unmeetable")
    assert message.startswith("no level of task 'digits' can answer within 0.001 ms now")
    assert int(r.headers["retry-after"]) >= 1
    # A pinned level is served even when it misses the budget, and says so.
    body["parameters"] = {"budget": "1B", "level": 3, "on_miss": "degrade"}
    r = await client.post(INFER.format(task="digits"), json=body)
    params = r.json()["parameters"]
    assert (params["level"], params["selection"], params["budget_met"]) == (3, "pinned", False)


# -- errors -----------------------------------------------------------------------------------

DIGIT = example("digits", 0)
GOOD = tensor(DIGIT)
TOO_BIG = json.loads("1e40")


def with_input(**changes: Any) -> dict[str, Any]:
    return {"inputs": [{**GOOD, **changes}]}


ACCEPTS = (
    "FP32 (or FP16, FP64) model-space values, or UINT8 raw pixels 0..255 that the server "
    "preprocesses"
)
BAD_REQUESTS: list[tuple[str, Any, str, str]] = [
    ("datatype string", with_input(datatype="FLOAT32"), "invalid_input",
     "unknown datatype 'FLOAT32'; the protocol's datatypes are BOOL, UINT8, UINT16, UINT32, "
     "UINT64, INT8, INT16, INT32, INT64, FP16, FP32, FP64, BYTES (case-sensitive), and model "
     f"'digits' takes {ACCEPTS}"),
    ("datatype case", with_input(datatype="fp32"), "invalid_input",
     "unknown datatype 'fp32'; the protocol's datatypes are BOOL, UINT8, UINT16, UINT32, "
     "UINT64, INT8, INT16, INT32, INT64, FP16, FP32, FP64, BYTES (case-sensitive), and model "
     f"'digits' takes {ACCEPTS}"),
    ("unsupported datatype", with_input(datatype="INT64"), "invalid_input",
     f"datatype INT64 is not accepted for input 'input' of model 'digits'; send {ACCEPTS}"),
    ("shape/data length", with_input(shape=[1, 1, 8, 9]), "invalid_input",
     "input 'input' has shape [1, 1, 8, 9] (72 elements) but its data holds 64; send every "
     "element, in row-major order"),
    ("negative dimension", with_input(shape=[-1, 1, 8, 8]), "invalid_input",
     "input 'input' has shape [-1, 1, 8, 8]; dimensions must be 0 or more"),
    ("shape the task does not take", with_input(shape=[2, 32]), "invalid_input",
     "task 'digits' takes one example of shape (1, 8, 8) or a batch (B, 1, 8, 8); got shape "
     "(2, 32)"),
    ("unknown input name", with_input(name="pixels"), "invalid_input",
     "unknown input 'pixels' for model 'digits'; its input is named 'input'"),
    ("two inputs", {"inputs": [GOOD, {**GOOD, "name": "mask"}]}, "invalid_input",
     "model 'digits' takes one input, 'input'; got 2 ('input', 'mask')"),
    ("no inputs field", {"id": "1"}, "invalid_input",
     "invalid inference request: inputs: Field required"),
    ("empty inputs", {"inputs": []}, "invalid_input",
     "the request has no inputs; model 'digits' takes one input named 'input'"),
    ("NaN", with_input(data=[float("nan"), *GOOD["data"][1:]]), "invalid_input",
     "inputs contain NaN or Inf (first at index (0, 0, 0, 0), after float32 conversion); send "
     "finite values"),
    ("over FP32 range", with_input(data=[*GOOD["data"][:-1], TOO_BIG]), "invalid_input",
     "inputs contain NaN or Inf (first at index (0, 0, 7, 7), after float32 conversion); send "
     "finite values"),
    ("strings", with_input(data=["0.5"] * 64), "invalid_input",
     "input 'input' data must be numbers; it holds strings, booleans, nulls or integers past 64 "
     "bits (numpy dtype <U3)"),
    ("no data", {"inputs": [{k: v for k, v in GOOD.items() if k != "data"}]}, "invalid_input",
     'input \'input\' has no "data"; send its elements as a JSON array (row-major, flat or '
     "nested)"),
    ("binary extension", {"inputs": [{**{k: v for k, v in GOOD.items() if k != "data"},
                                      "parameters": {"binary_data_size": 256}}]},
     "invalid_input",
     'the binary tensor data extension is not supported; send the tensor as JSON "data" '
     "(tritonclient: set_data_from_numpy(x, binary_data=False))"),
    ("shared memory extension", {"inputs": [{**{k: v for k, v in GOOD.items() if k != "data"},
                                             "parameters": {"shared_memory_region": "r"}}]},
     "invalid_input",
     'the shared memory extension is not supported; send the tensor as JSON "data"'),
    ("shape of strings", with_input(shape=["1", 1, 8, 8]), "invalid_input",
     "invalid inference request: inputs.0.shape.0: Input should be a valid integer"),
    ("UINT8 out of range", with_input(datatype="UINT8", data=[256] + [0] * 63), "invalid_input",
     "input 'input' is UINT8 (raw pixels) but its data holds 256; send integers 0..255"),
    ("UINT8 not integers", with_input(datatype="UINT8", data=[0.5] * 64), "invalid_input",
     "input 'input' is UINT8 (raw pixels) but its data holds non-integers; send integers "
     "0..255, or FP32 model-space values"),
    ("unknown output", {"inputs": [GOOD], "outputs": [{"name": "logits"}]}, "invalid_input",
     "unknown output 'logits' for model 'digits'; its outputs are 'probabilities' (FP32, "
     "[B, classes]) and 'class_index' (INT64, [B])"),
    ("classification extension",
     {"inputs": [GOOD], "outputs": [{"name": "class_index", "parameters": {"classification": 3}}]},
     "invalid_input",
     "output parameter 'classification' of output 'class_index' is not supported; leave it out "
     "(outputs are answered as JSON tensors)"),
    ("unknown parameter", {"inputs": [GOOD], "parameters": {"budjet": "2MiB"}},
     "invalid_parameter",
     "unknown parameter 'budjet'; this server takes budget (e.g. \"15ms,2MiB\"), level "
     '(1-based) and on_miss ("degrade" or "reject")'),
    ("nested parameter", {"inputs": [GOOD], "parameters": {"budget": {"ms": 5}}},
     "invalid_input",
     "invalid inference request: parameters.budget: Value error, a parameter value must be a "
     "string, a number or a boolean"),
    ("budget type", {"inputs": [GOOD], "parameters": {"budget": 15}}, "invalid_parameter",
     'parameter budget must be a string such as "15ms,2MiB"; got 15'),
    ("budget grammar", {"inputs": [GOOD], "parameters": {"budget": "5xs"}}, "invalid_budget",
     "budget '5xs': unknown unit 'xs'; use one of us, ms, s, B, kB, MB, GB, KiB, MiB, GiB "
     "(units are case-sensitive), e.g. budget=15ms,2MiB"),
    ("memory budget too small", {"inputs": [GOOD], "parameters": {"budget": "1kB"}},
     "budget_unsatisfiable",
     "memory budget 1000 B (1000 B) is below the smallest level of task 'digits': level 1 "
     "needs 1744 B (1.7 KiB); raise the budget to at least that"),
    ("budget length", {"inputs": [GOOD], "parameters": {"budget": "1" * 199 + "ms"}},
     "invalid_parameter",
     'parameter budget is 201 characters long, over the limit of 200; a budget is one or two '
     'constraints, e.g. "15ms,2MiB"'),
    ("level range", {"inputs": [GOOD], "parameters": {"level": 9}}, "invalid_parameter",
     "level 9 is out of range for task 'digits': use 1..4"),
    ("level type", {"inputs": [GOOD], "parameters": {"level": "2"}}, "invalid_parameter",
     'parameter level must be an integer (1-based); got "2"'),
    ("on_miss", {"inputs": [GOOD], "parameters": {"on_miss": "wait"}}, "invalid_parameter",
     'parameter on_miss must be "degrade" or "reject"; got "wait"'),
    ("not an object", [GOOD], "invalid_input",
     'body must be a JSON object (an inference request): {"inputs": [{"name": "input", '
     '"shape": [...], "datatype": "FP32", "data": [...]}]}'),
]  # fmt: skip


async def test_bad_requests_are_400_in_the_protocol_shape(client: AppClient) -> None:
    wrong = []
    for case, body, kind, message in BAD_REQUESTS:
        # json.dumps: NaN as the literal JSON parsers (Python's included) accept.
        r = await client.post(INFER.format(task="digits"), content=json.dumps(body).encode())
        got = oip_error(r)
        if got != (400, kind, message):
            wrong.append((case, got))
        assert "retry-after" not in r.headers
    assert wrong == []
    r = await client.post(INFER.format(task="digits"), content=b'{"inputs": [')
    status, kind, message = oip_error(r)
    assert (status, kind) == (400, "invalid_input")
    assert message.startswith("body is not valid JSON (")
    r = await client.post(INFER.format(task="digits"), content=b"[" * 100_000)
    assert oip_error(r) == (
        400, "invalid_input", "body is nested too deeply to be an inference request"
    )  # fmt: skip
    for data in ([[1.0, 2.0], [3.0]], json.loads("[" * 70 + "]" * 70)):  # ragged, 70 deep
        r = await client.post(INFER.format(task="digits"), json=with_input(data=data))
        status, kind, message = oip_error(r)
        assert (status, kind) == (400, "invalid_input")
        assert message.startswith(  # then numpy's own words
            "input 'input' data must be numbers, flat or as nested lists of equal length; it "
            "is ragged or holds non-numbers ("
        )


async def test_transport_limits(serve: ServeFactory) -> None:
    client = with_oip(await serve(max_body_bytes=2048, max_request_batch=4))
    x = example("digits", 0, batch=5)
    r = await client.post(INFER.format(task="digits"), json={"inputs": [tensor(x)]})
    size = int(r.request.headers["content-length"])
    assert oip_error(r) == (
        413, "payload_too_large",
        f"body of {size} bytes is over the 2048-byte limit; send fewer examples per request "
        "(or raise DVN_MAX_BODY_BYTES)",
    )  # fmt: skip
    x = np.zeros((5, 1, 8, 8), np.float32)  # short JSON: zeros
    r = await client.post(INFER.format(task="digits"), json={"inputs": [tensor(x)]})
    assert oip_error(r) == (
        400, "invalid_input",
        "batch of 5 examples is over the limit of 4 per request; split it into smaller requests",
    )  # fmt: skip
    r = await client.post(
        INFER.format(task="digits"),
        content=b"{}",
        headers={"Inference-Header-Content-Length": "2"},
    )
    assert oip_error(r) == (
        400, "invalid_input",
        'the binary tensor data extension is not supported; send the tensor as JSON "data" '
        "(tritonclient: set_data_from_numpy(x, binary_data=False))",
    )  # fmt: skip


async def test_errors_raised_before_the_handler_share_the_shape(serve: ServeFactory) -> None:
    client = with_oip(await serve(api_keys=["sesame"]))
    body = {"inputs": [GOOD]}
    r = await client.post(INFER.format(task="digits"), json=body)
    assert oip_error(r) == (
        401, "unauthorized",
        "this server needs an API key: send 'Authorization: Bearer <key>' or 'X-API-Key: <key>'",
    )  # fmt: skip
    r = await client.get("/v2/models/digits", headers={"x-api-key": "wrong"})
    assert oip_error(r) == (403, "forbidden", "the API key is not valid for this server")
    r = await client.post(INFER.format(task="digits"), json=body, headers={"x-api-key": "sesame"})
    assert r.status_code == 200
    # Health follows DVN_PROTECT_HEALTH (off): open, like /healthz.
    assert (await client.get("/v2/health/live")).status_code == 200
    assert (await client.get("/v2/health/ready")).status_code == 200
    r = await client.get("/v2/repository/index", headers={"x-api-key": "sesame"})
    assert oip_error(r) == (
        404,
        "not_found",
        "no route /v2/repository/index; see /docs for the API",
    )
    r = await client.get(INFER.format(task="digits"), headers={"x-api-key": "sesame"})
    assert oip_error(r) == (
        405, "method_not_allowed", "GET is not allowed on /v2/models/digits/infer",
    )  # fmt: skip
    # The v1 API keeps its own shape.
    r = await client.get("/v1/nope")
    assert r.json() == {
        "error": {"type": "not_found", "message": "no route /v1/nope; see /docs for the API"}
    }


# -- readiness, batching, metrics, OpenAPI ------------------------------------------------------


class Gate:
    """A forward wrapper that records every batch; a batch ``hold`` picks waits until
    :attr:`open` is set."""

    def __init__(self, hold: Callable[[np.ndarray], bool]) -> None:
        self.hold = hold
        self.entered = threading.Event()
        self.open = threading.Event()
        self.batches: list[tuple[int, np.ndarray]] = []

    def __call__(self, forward: ForwardFn) -> ForwardFn:
        def wrapped(task: int, level: int, inputs: np.ndarray) -> np.ndarray:
            self.batches.append((level, inputs.copy()))
            if self.hold(inputs):
                self.entered.set()
                if not self.open.wait(timeout=30):
                    raise TimeoutError("the test never opened the gate")
            return forward(task, level, inputs)

        return wrapped


async def test_not_ready_until_warm_up_ends(serve: ServeFactory) -> None:
    gate = Gate(lambda inputs: True)  # holds warm-up
    try:
        client = with_oip(await serve(forward_wrapper=gate, wait_ready=False))
        await wait_until(gate.entered.is_set, 30, "warm-up to start")
        for url in ("/v2/health/ready", "/v2/models/digits/ready"):
            r = await client.get(url)
            assert oip_error(r) == (503, "not_ready", NOT_READY), url
            assert r.headers["retry-after"] == "1"
        r = await client.post(INFER.format(task="digits"), json={"inputs": [GOOD]})
        assert oip_error(r) == (503, "not_ready", NOT_READY)
        assert (await client.get("/v2/health/live")).json() == {"live": True}
        assert (await client.get("/v2/models/digits")).status_code == 200  # loaded: metadata
    finally:
        gate.open.set()
    await wait_until(lambda: client.app.state.runtime.ready, 30, "warm-up")
    assert (await client.get("/v2/health/ready")).json() == {"ready": True}
    await client.app.state.runtime.stop()
    r = await client.get("/v2/health/ready")
    assert oip_error(r) == (
        503, "not_ready", "the server is shutting down; retry on another replica"
    )  # fmt: skip
    assert (await client.get("/v2/health/live")).status_code == 200


async def test_v1_and_v2_requests_share_one_batch(
    serve: ServeFactory, reference: Checkpoint
) -> None:
    gate = Gate(lambda inputs: bool((inputs == GATE).any()))
    client = with_oip(await serve(forward_wrapper=gate, max_batch_delay_ms=200))
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


async def test_openapi_documents_the_protocol(client: AppClient) -> None:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        doc = (await client.get("/openapi.json")).json()
    assert [str(w.message) for w in caught] == []  # e.g. "Duplicate Operation ID": registered twice
    paths = {p: set(ops) for p, ops in doc["paths"].items() if p.startswith("/v2")}
    assert paths == {
        "/v2": {"get"},
        "/v2/health/live": {"get"},
        "/v2/health/ready": {"get"},
        "/v2/models/{task}": {"get"},
        "/v2/models/{task}/versions/{version}": {"get"},
        "/v2/models/{task}/ready": {"get"},
        "/v2/models/{task}/versions/{version}/ready": {"get"},
        "/v2/models/{task}/infer": {"post"},
        "/v2/models/{task}/versions/{version}/infer": {"post"},
    }
    infer = doc["paths"]["/v2/models/{task}/infer"]["post"]
    assert set(infer["responses"]) == {
        "200", "400", "401", "403", "404", "413", "429", "500", "503", "504", "default",
    }  # fmt: skip
    error_ref = {"$ref": "#/components/schemas/OipError"}
    for status, response in infer["responses"].items():
        if status != "200":
            assert response["content"]["application/json"]["schema"] == error_ref, status
    assert infer["responses"]["400"]["description"] == (
        "invalid_input; invalid_budget; budget_unsatisfiable; invalid_parameter"
    )
    schema = infer["requestBody"]["content"]["application/json"]["schema"]
    assert schema["required"] == ["inputs"]
    assert set(schema["properties"]["inputs"]["items"]["properties"]) == {
        "name", "shape", "datatype", "parameters", "data",
    }  # fmt: skip
    assert "$ref" not in json.dumps(schema)
    assert "HTTPValidationError" not in doc["components"]["schemas"]
