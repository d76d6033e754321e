"""Fuzzing every operation of the app's own OpenAPI document with schemathesis: no 5xx
(except load shedding the contract allows) and every response conforms to the document
(status code documented, content type, body schema, ``Allow`` on 405).

The document is the server's, narrowed to what this test server serves (the tiny
checkpoint's task names, levels and version) and given one valid example body per media
type, so that generated requests get past routing to the decoders, the budget parser and
the model. Values outside those narrowings are still sent: schemathesis's negative mode
generates them. Bounded: ``MAX_EXAMPLES`` per operation, derandomised (the same cases on
every run), no example database.
"""

from __future__ import annotations

import copy
import io
import json
import os
import time
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import schemathesis
from fastapi import FastAPI
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from PIL import Image
from schemathesis.checks import not_a_server_error
from schemathesis.python import asgi
from schemathesis.specs.openapi.checks import positive_data_acceptance

from server.http.app import create_app
from server.http.decode import NPY_TYPES
from server.settings import demo_checkpoint
from tests.conftest import READY_TIMEOUT_S, server_settings

MAX_EXAMPLES = 30
TASKS = ["digits", "shapes"]  # the tiny checkpoint's tasks (tests/conftest.py)
LEVELS = (1, 4)
VERSION = "0.0.1"
DIGIT = np.linspace(-1, 1, 64, dtype=np.float32).reshape(1, 8, 8)
# 5xx the contract allows for a well-formed request (docs/api.md): a latency budget no
# level can meet with on_miss=reject (503), a deadline that ran out in the queue (504).
LOAD_SHEDDING = {503: "deadline_unmeetable", 504: "deadline_exceeded"}
# Operations a valid request reaches with 200: the fuzzer must have got that far.
MUST_SUCCEED = (
    "POST /infer/{task}",
    "GET /plan/{task}",
    "GET /v1/models/{task}/levels/{level}/export",
    "GET /v1/models/{task}/export",
    "POST /v2/models/{task}/infer",
)


def npy_bytes(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array)
    return buffer.getvalue()


def narrowed(doc: dict[str, Any]) -> dict[str, Any]:
    """The server's OpenAPI document with path parameters narrowed to the tiny checkpoint's
    values and a valid example per request body."""
    doc = copy.deepcopy(doc)
    for path, operations in doc["paths"].items():
        for operation in operations.values():
            for param in operation.get("parameters", []):
                if param["name"] == "budget":
                    param["example"] = "2MiB"
                if param["in"] != "path":
                    continue
                if param["name"] == "task":
                    param["schema"] = {"type": "string", "enum": TASKS}
                elif param["name"] == "level":
                    param["schema"] = {
                        "type": "integer",
                        "minimum": LEVELS[0],
                        "maximum": LEVELS[1],
                    }
                elif param["name"] == "version":
                    param["schema"] = {"type": "string", "enum": [VERSION]}
            content = operation.get("requestBody", {}).get("content", {})
            if path.startswith("/v2/") and "application/json" in content:
                content["application/json"]["example"] = {
                    "inputs": [
                        {"name": "input", "shape": [1, 1, 8, 8], "datatype": "FP32",
                         "data": DIGIT.ravel().tolist()}
                    ]
                }  # fmt: skip
            elif "application/json" in content:
                content["application/json"]["example"] = {"inputs": DIGIT.tolist()}
    return doc


def npy_bodies() -> st.SearchStrategy[bytes]:
    """``.npy`` bodies: valid arrays of random shapes and dtypes, and random bytes."""
    shapes = st.lists(st.integers(0, 9), min_size=0, max_size=5).map(tuple)
    dtypes = st.sampled_from(["<f4", "<f8", "<f2", "<i4", "|u1", "|b1"])
    arrays = st.builds(lambda s, d: npy_bytes(np.zeros(s, dtype=d)), shapes, dtypes)
    return st.one_of(st.just(npy_bytes(DIGIT)), arrays, st.binary(max_size=300))


def jpeg_bodies() -> st.SearchStrategy[bytes]:
    """``image/jpg`` bodies (``image/jpeg`` has schemathesis's own sample): the digit as a
    JPEG, and random bytes."""
    buffer = io.BytesIO()
    Image.fromarray(((DIGIT[0] + 1) * 127).astype(np.uint8)).save(buffer, format="JPEG")
    return st.one_of(st.just(buffer.getvalue()), st.binary(max_size=300))


for npy_type in NPY_TYPES:
    schemathesis.openapi.media_type(npy_type, npy_bodies())
schemathesis.openapi.media_type("image/jpg", jpeg_bodies())
# The document does not depend on the checkpoint, which only loads in the lifespan.
SCHEMA = schemathesis.openapi.from_dict(
    narrowed(create_app(server_settings(demo_checkpoint())).openapi())
)
STATUSES: dict[str, set[int]] = defaultdict(set)


def no_server_error(ctx: Any, response: Any, case: Any) -> None:
    """No 5xx but the load shedding the contract allows, and never an ``internal_error``."""
    status = response.status_code
    if status < 500:
        return
    body = json.loads(response.content)
    kind = body["error"]["type"] if isinstance(body.get("error"), dict) else None
    kind = kind or response.headers.get("x-dvn-error-type", [None])[0]  # /v2 shape
    assert LOAD_SHEDDING.get(status) == kind, (
        f"{case.method} {case.formatted_path}: {status} {body}"
    )


@pytest.fixture(scope="module")
def fuzz_app(tiny_checkpoint: Path) -> Iterator[FastAPI]:
    """The app under test (``DVN_*`` variables of the outer environment ignored)."""
    with pytest.MonkeyPatch.context() as env:
        for name in [n for n in os.environ if n.startswith("DVN_")]:
            env.delenv(name)
        settings = server_settings(tiny_checkpoint)
    yield create_app(settings)
    # The operations that answer a valid request must have been fuzzed into a 200.
    ran = [op for op in MUST_SUCCEED if op in STATUSES]
    assert all(200 in STATUSES[op] for op in ran), dict(STATUSES)


def ensure_ready(app: FastAPI) -> None:
    """Start the app's lifespan on schemathesis's event loop (it ends the lifespan after
    each test) and wait for warm-up."""
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
def test_every_operation_conforms_and_never_fails(case: Any, fuzz_app: FastAPI) -> None:
    ensure_ready(fuzz_app)
    response = case.call_and_validate(
        app=fuzz_app,
        # positive_data_acceptance: a schema-valid body can still be the wrong shape for the
        # task (the document cannot say per-task shapes), which is a 400 by contract.
        excluded_checks=[not_a_server_error, positive_data_acceptance],
        additional_checks=[no_server_error],
    )
    STATUSES[case.operation.label].add(response.status_code)
