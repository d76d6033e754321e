"""The published OpenAPI document tells the truth, both ways, by property-based generation
from it (schemathesis): a request the document allows is never refused as invalid (no
400, 415 or 422), and a request it forbids is never accepted (never 2xx).

The document is the server's own, with only the facts it cannot state for every
checkpoint filled in from the test checkpoint, as a client would from ``GET /v1/models``:
the task (``digits``), its number of levels, its version, and its input shape (in the v1
JSON body and the Open Inference Protocol tensor). Those fillings describe exactly what the
server takes for that task (every shape form decode accepts, the float32/float16 finite
ranges), so that a request outside them is truly invalid. Binary bodies (.npy, images) are
left out: "a binary string" is all a schema can say of them, and the decoders' own tests
cover them. Bounded and deterministic: ``MAX_EXAMPLES`` per operation and mode,
derandomised, no example database.
"""

from __future__ import annotations

import copy
import json
import math
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from fastapi import FastAPI
from hypothesis import HealthCheck, settings
from schemathesis import GenerationMode
from schemathesis.python import asgi
from schemathesis.specs.openapi.checks import negative_data_rejection

from server.http.app import create_app
from server.settings import demo_checkpoint
from tests.conftest import DIGITS, READY_TIMEOUT_S, server_settings
from tests.server.test_budget_pattern import past_documented_limits

MAX_EXAMPLES = 25
MAX_BATCH = 3  # the test server's DVN_MAX_REQUEST_BATCH
LEVELS = 4
VERSION = "0.0.1"
# The v1 operations with a body or parameters to get wrong, and the protocol's inference.
OPERATIONS = (
    "POST /infer/{task}",
    "GET /plan/{task}",
    "GET /v1/models/{task}/export",
    "GET /v1/models/{task}/levels/{level}/export",
    "POST /v2/models/{task}/infer",
    "POST /v2/models/{task}/versions/{version}/infer",
)
# Refusals of a well-formed request that are not about its form: no level fits the memory
# budget (docs/api.md). Load shedding (429, 503, 504) is not a 4xx of form either.
NOT_ABOUT_FORM = {"budget_unsatisfiable"}
FLOAT32_BOUND = 3.4028235677973366e38  # halfway past float32's largest: rounds to inf
FLOAT16_BOUND = 65520.0


def numbers(bound: float) -> dict[str, Any]:
    return {"type": "number", "exclusiveMinimum": -bound, "exclusiveMaximum": bound}


def nested(shape: tuple[int, ...], leaf: dict[str, Any]) -> dict[str, Any]:
    """Nested arrays of exactly ``shape``, of ``leaf``."""
    for n in reversed(shape):
        leaf = {"type": "array", "items": leaf, "minItems": n, "maxItems": n}
    return leaf


def example_forms(shape: tuple[int, ...], leaf: dict[str, Any]) -> list[dict[str, Any]]:
    """Every array decode takes for a task of input ``shape``: one example, a batch of 1 to
    ``MAX_BATCH``, and both without the channel dimension when there is one channel."""
    shapes = [shape, *([shape[1:]] if shape[0] == 1 else [])]
    forms = [nested(s, leaf) for s in shapes]
    batches = [{"type": "array", "items": f, "minItems": 1, "maxItems": MAX_BATCH} for f in forms]
    return forms + batches


def oip_tensor_shapes(shape: tuple[int, ...]) -> list[list[int]]:
    singles = [list(shape), *([list(shape[1:])] if shape[0] == 1 else [])]
    return singles + [[b, *s] for s in singles for b in range(1, MAX_BATCH + 1)]


def filled_in(doc: dict[str, Any]) -> dict[str, Any]:
    """The document with the test checkpoint's facts: task, levels, version, input shape."""
    doc = copy.deepcopy(doc)
    shape = DIGITS.input_shape
    for path in list(doc["paths"]):
        operations = doc["paths"][path]
        for method in list(operations):
            if f"{method.upper()} {path}" not in OPERATIONS:
                del operations[method]
                continue
            operation = operations[method]
            for param in operation.get("parameters", []):
                schema = param["schema"]
                if param["in"] == "path" and param["name"] == "task":
                    param["schema"] = {"type": "string", "enum": [DIGITS.name]}
                elif param["name"] == "level":
                    schema["maximum"] = LEVELS
                elif param["name"] == "version":
                    param["schema"] = {"type": "string", "enum": [VERSION]}
            content = operation.get("requestBody", {}).get("content", {})
            for kind in [k for k in content if k != "application/json"]:
                del content[kind]
            if "application/json" not in content:
                continue
            schema = content["application/json"]["schema"]
            if path.startswith("/v2/"):
                fill_in_oip(schema, shape)
            else:
                schema["properties"]["inputs"] = {
                    "anyOf": example_forms(shape, numbers(FLOAT32_BOUND))
                }
        if not operations:
            del doc["paths"][path]
    return doc


def fill_in_oip(schema: dict[str, Any], shape: tuple[int, ...]) -> None:
    """The request's tensor for the task: one of its shapes, with exactly as many flat
    elements, each in its datatype's finite range."""
    for form in schema["properties"]["parameters"].get("anyOf", []):
        if "level" in form.get("properties", {}):  # the request's level: the task's range
            form["properties"]["level"]["maximum"] = LEVELS
    tensor = schema["properties"]["inputs"]["items"]
    parameters = {"parameters": tensor["properties"]["parameters"]}
    kinds = [
        (["FP32", "FP64"], numbers(FLOAT32_BOUND)),
        (["FP16"], numbers(FLOAT16_BOUND)),
        (["UINT8"], {"type": "integer", "minimum": 0, "maximum": 255}),
    ]
    tensors = []
    for datatypes, leaf in kinds:
        for dims in oip_tensor_shapes(shape):
            size = math.prod(dims)
            tensors.append(
                {
                    "type": "object",
                    "required": ["name", "shape", "datatype", "data"],
                    "properties": {
                        "name": {"type": "string", "enum": ["input"]},
                        "shape": {"type": "array", "enum": [dims]},
                        "datatype": {"type": "string", "enum": datatypes},
                        "data": {
                            "type": "array",
                            "items": leaf,
                            "minItems": size,
                            "maxItems": size,
                        },
                        **parameters,
                    },
                }
            )
    schema["properties"]["inputs"]["items"] = {"anyOf": tensors}


SCHEMA = schemathesis.openapi.from_dict(
    filled_in(create_app(server_settings(demo_checkpoint())).openapi())
)
SCHEMA.config.generation.update(
    modes=[GenerationMode.POSITIVE, GenerationMode.NEGATIVE],
    max_examples=MAX_EXAMPLES,
    deterministic=True,
)


def error_type(response: Any) -> str | None:
    try:
        body = json.loads(response.content)
    except ValueError:
        return None
    error = body.get("error") if isinstance(body, dict) else None
    if isinstance(error, dict):
        return str(error.get("type"))
    found = response.headers.get("x-dvn-error-type")  # the protocol's shape
    return found[0] if isinstance(found, list) else found


def budget_of(case: Any) -> str | None:
    if case.query and isinstance(case.query.get("budget"), str):
        return str(case.query["budget"])
    body = case.body if isinstance(case.body, dict) else {}
    params = body.get("parameters")
    budget = params.get("budget") if isinstance(params, dict) else None
    return budget if isinstance(budget, str) else None


def schema_valid_is_not_refused(ctx: Any, response: Any, case: Any) -> None:
    """A request the document allows is not refused for its form (400, 415, 422), but for
    a budget past the limits the document states in words."""
    if not case.meta.generation.mode.is_positive:
        return
    status, kind = response.status_code, error_type(response)
    if status not in (400, 415, 422) or kind in NOT_ABOUT_FORM:
        return
    budget = budget_of(case)
    if kind == "invalid_budget" and budget is not None and past_documented_limits(budget):
        return
    raise AssertionError(
        f"{case.method} {case.formatted_path} query={case.query} body={case.body!r}: "
        f"allowed by the document, refused {status} {response.content[:300]!r}"
    )


@pytest.fixture(scope="module")
def contract_app(tiny_checkpoint: Path) -> Iterator[FastAPI]:
    with pytest.MonkeyPatch.context() as env:
        for name in [n for n in os.environ if n.startswith("DVN_")]:
            env.delenv(name)
        yield create_app(server_settings(tiny_checkpoint, max_request_batch=MAX_BATCH))


def ensure_ready(app: FastAPI) -> None:
    with asgi.get_client(app):
        end = time.monotonic() + READY_TIMEOUT_S
        while not app.state.runtime.ready:
            assert time.monotonic() < end, "warm-up did not finish"
            time.sleep(0.01)


@SCHEMA.parametrize()
@settings(
    max_examples=MAX_EXAMPLES,
    derandomize=True,
    database=None,
    deadline=None,
    suppress_health_check=list(HealthCheck),
)
def test_the_document_is_the_server_s_contract(case: Any, contract_app: FastAPI) -> None:
    ensure_ready(contract_app)
    response = case.call(app=contract_app)
    case.validate_response(
        response,
        checks=[negative_data_rejection, schema_valid_is_not_refused],
    )
