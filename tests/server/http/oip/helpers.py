"""What the Open Inference Protocol v2 tests share: the app with the protocol's routes,
tensors in the protocol's JSON, the model's own answers, and the error shape."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import httpx
import numpy as np
import torch
from fastapi import Depends, Request
from prometheus_client.parser import text_string_to_metric_families
from starlette.routing import NoMatchFound

from model_store.checkpoint import Checkpoint
from server.engine.executor import ForwardFn
from server.http import oip
from server.http.auth import check_key
from tests.conftest import AppClient

INFER = "/v2/models/{task}/infer"


SHAPES = {"digits": (1, 8, 8), "shapes": (3, 16, 16)}


GATE = 321.0  # a value no warm-up input holds: a batch holding it waits at the gate


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


DIGIT = example("digits", 0)


GOOD = tensor(DIGIT)


def with_input(**changes: Any) -> dict[str, Any]:
    return {"inputs": [{**GOOD, **changes}]}


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
