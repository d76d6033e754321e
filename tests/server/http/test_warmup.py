"""The front end's warm-up covers every body type it decodes, and every router, so that a
fresh server's first request does the work of the next (server/http/warmup.py)."""

from __future__ import annotations

import cProfile
import pstats
from pathlib import Path

import pytest

from model_store.checkpoint import load
from server.http.decode import IMAGE_TYPES, JSON_TYPES, NPY_TYPES
from server.http.oip_protocol import FLOAT_DATATYPES, PIXEL_DATATYPE
from server.http.warmup import OIP_BODY, warm_codecs
from tests.conftest import AppClient, ServeFactory


def test_warm_up_decodes_every_accepted_body_type_of_every_task(tiny_checkpoint: Path) -> None:
    checkpoint = load(tiny_checkpoint)
    specs = {s.name: s for s in checkpoint.model.config.tasks}
    warmed = warm_codecs(checkpoint.manifest, specs)
    v1 = {*JSON_TYPES, *NPY_TYPES, *IMAGE_TYPES}
    oip = {OIP_BODY + datatype for datatype in (*FLOAT_DATATYPES, PIXEL_DATATYPE)}
    assert warmed == v1 | oip


OIP_BODY_FP32 = {
    "inputs": [{"name": "input", "shape": [1, 1, 8, 8], "datatype": "FP32", "data": [0.5] * 64}]
}
# One request into each of the app's routers; a fresh server for each, so that none is
# built by an earlier request.
FIRST_REQUESTS = {
    "oip infer": ("POST", "/v2/models/digits/infer", OIP_BODY_FP32),
    "oip metadata": ("GET", "/v2/models/digits", None),
    "oip health": ("GET", "/v2/health/ready", None),
    "v1 plan": ("GET", "/plan/digits", None),
    "v1 models": ("GET", "/v1/models", None),
    "ops health": ("GET", "/healthz", None),
}


async def python_calls(client: AppClient, method: str, path: str, body: object) -> int:
    """The Python function calls one request costs, in the test's process (which runs the
    in-process server): a count, not a time, so the shared box's noise does not move it."""
    profile = cProfile.Profile()
    profile.enable()
    response = await client.request(method, path, json=body)
    profile.disable()
    assert response.status_code == 200, response.text
    return int(pstats.Stats(profile).total_calls)  # type: ignore[attr-defined]


@pytest.mark.parametrize("kind", FIRST_REQUESTS)
async def test_a_fresh_servers_first_request_does_the_work_of_the_next(
    serve: ServeFactory, kind: str
) -> None:
    # Before warm_routes, FastAPI built a router's route state on the first request tried
    # against it: the first OIP request made about 73,000 calls against 3,600 for the next
    # (20 ms in a front end that had served none). What is left is small: FastAPI reads
    # each endpoint's source once, and the engine's first answer at a level creates its
    # metric series.
    client = await serve()
    method, path, body = FIRST_REQUESTS[kind]
    first = await python_calls(client, method, path, body)
    second = await python_calls(client, method, path, body)
    assert first <= 2 * second, (first, second)
