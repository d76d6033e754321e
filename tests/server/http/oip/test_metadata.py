"""OIP v2 in process: health, server and model metadata, the version routes, unknown
models, and the OpenAPI document."""

from __future__ import annotations

import importlib.metadata
import json
import warnings
from typing import Any

import pytest

from model_store.checkpoint import Checkpoint
from tests.conftest import AppClient
from tests.server.http.oip.helpers import SHAPES, example, oip_error, tensor


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
