"""Responses exactly as docs/api.md writes them, and helpers to serve them through
``httpx.MockTransport``."""

from __future__ import annotations

import asyncio
import copy
import hashlib
import io
import tarfile
from collections import Counter
from typing import Any

import httpx
import numpy as np

from clients import errors

URL = "http://dvn.test"

ERROR_CASES = [
    (400, "invalid_input", errors.InvalidInputError),
    (401, "unauthorized", errors.UnauthorizedError),
    (403, "forbidden", errors.ForbiddenError),
    (404, "unknown_task", errors.UnknownTaskError),
    (404, "not_found", errors.NotFoundError),
    (405, "method_not_allowed", errors.MethodNotAllowedError),
    (413, "payload_too_large", errors.PayloadTooLargeError),
    (415, "unsupported_media_type", errors.UnsupportedMediaTypeError),
    (422, "invalid_budget", errors.InvalidBudgetError),
    (422, "budget_unsatisfiable", errors.BudgetUnsatisfiableError),
    (422, "invalid_parameter", errors.InvalidParameterError),
    (429, "queue_full", errors.QueueFullError),
    (500, "inference_failed", errors.InferenceFailedError),
    (503, "deadline_unmeetable", errors.DeadlineUnmeetableError),
    (503, "not_ready", errors.NotReadyError),
    (504, "deadline_exceeded", errors.DeadlineExceededError),
]

CHECKPOINT_FILES = {
    "manifest.json": b'{"format": "dvn-checkpoint"}',
    "weights.safetensors": b"w" * 64,
}

PROBABILITIES = [0.001, 0.002, 0.001, 0.981, 0.003, 0.002, 0.004, 0.001, 0.003, 0.002]

INFER_RESPONSE: dict[str, Any] = {
    "request_id": "6f1c0a",
    "task": "digits",
    "level": 2,
    "units": [0, 1],
    "selection": "budget",
    "predictions": [
        {
            "class_index": 3,
            "class_name": "3",
            "probability": 0.981,
            "probabilities": PROBABILITIES,
        }
    ],
    "budget": {
        "spec": "15ms,2MiB",
        "latency_s": 0.015,
        "memory_bytes": 2097152,
        "met": True,
        "latency_met": True,
        "memory_met": True,
    },
    "cost": {
        "params": 44518,
        "param_bytes": 178072,
        "flops": 862656,
        "predicted_latency_ms": 3.1,
        "measured_latency_ms": 2.7,
    },
    "model": {"name": "demo", "version": "1.0.0", "sha256": "ab12"},
}

INFER_TOP_K_RESPONSE: dict[str, Any] = {
    **copy.deepcopy(INFER_RESPONSE),
    "budget": None,
    "selection": "default",
    "predictions": [
        {
            "class_index": 3,
            "class_name": "3",
            "probability": 0.981,
            "top_k": [
                {"class_index": 3, "class_name": "3", "probability": 0.981},
                {"class_index": 6, "class_name": "6", "probability": 0.004},
            ],
        }
    ],
}

PLAN_LEVEL: dict[str, Any] = {
    "level": 1,
    "units": [0],
    "params": 11536,
    "param_bytes": 46144,
    "flops": 219360,
    "accuracy": 0.95,
    "predicted_latency_ms": 1.2,
    "queue_wait_ms": 0.0,
    "queue_depth": 0,
    "fits_memory": True,
    "fits_latency": True,
}

PLAN_RESPONSE: dict[str, Any] = {
    "task": "digits",
    "budget": {"spec": "15ms", "latency_s": 0.015, "memory_bytes": None},
    "level": 1,
    "selection": "budget",
    "budget_met": True,
    "error": None,
    "levels": [PLAN_LEVEL],
}


def task_entry(name: str, shape: list[int], classes: int, levels: int = 3) -> dict[str, Any]:
    return {
        "name": name,
        "classes": [str(i) for i in range(classes)],
        "input_shape": shape,
        "preprocessing": {
            "color_mode": "L" if shape[0] == 1 else "RGB",
            "size": shape[1:],
            "mean": [0.5] * shape[0],
            "std": [0.5] * shape[0],
        },
        "unit_order": [0, 1, 2, 3],
        "levels": [
            {
                "level": lv,
                "units": list(range(lv)),
                "params": 11536 * lv,
                "param_bytes": 46144 * lv,
                "flops": 219360 * lv,
                "accuracy": 0.9 + lv / 100,
                "latency_ms": {"1": 0.9 * lv, "8": 1.4 * lv, "32": 3.0 * lv},
            }
            for lv in range(1, levels + 1)
        ],
    }


MODELS_RESPONSE: dict[str, Any] = {
    "name": "demo",
    "version": "1.0.0",
    "sha256": "ab12",
    "device": "cpu",
    "num_units": 4,
    "param_bytes": 2800000,
    "unit_param_bytes": {"0": 700000, "1": 700000, "2": 700000, "3": 700000},
    "tasks": [task_entry("digits", [1, 8, 8], 10), task_entry("shapes", [3, 16, 16], 4)],
}


def error_response(
    status: int, type_: str, message: str, *, retry_after: str | None = None
) -> httpx.Response:
    headers = {"X-Request-ID": "req-err-1"}
    if retry_after is not None:
        headers["Retry-After"] = retry_after
    return httpx.Response(
        status, json={"error": {"type": type_, "message": message}}, headers=headers
    )


def decode_npy(request: httpx.Request) -> np.ndarray[Any, Any]:
    array: np.ndarray[Any, Any] = np.load(io.BytesIO(request.content), allow_pickle=False)
    return array


def make_tar(files: dict[str, bytes], *, links: dict[str, str] | None = None) -> bytes:
    """A tar archive holding ``files`` (name -> bytes) and symlinks (name -> target)."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        for name, target in (links or {}).items():
            info = tarfile.TarInfo(name)
            info.type = tarfile.SYMTYPE
            info.linkname = target
            tar.addfile(info)
    return buf.getvalue()


def tar_response(data: bytes, sha256: str | None = "auto") -> httpx.Response:
    headers = {
        "Content-Type": "application/x-tar",
        "Content-Disposition": 'attachment; filename="demo-digits-level2.tar"',
    }
    if sha256 == "auto":
        headers["X-DVN-Archive-SHA256"] = hashlib.sha256(data).hexdigest()
    elif sha256 is not None:
        headers["X-DVN-Archive-SHA256"] = sha256
    return httpx.Response(200, content=data, headers=headers)


class Recorder:
    """A MockTransport handler that records requests and plays back responses in order
    (the last one repeats)."""

    def __init__(self, *responses: httpx.Response | Exception) -> None:
        self.responses = list(responses)
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        index = min(len(self.requests), len(self.responses)) - 1
        response = self.responses[index]
        if isinstance(response, Exception):
            raise response
        # A fresh copy each time: a response object belongs to one request.
        return httpx.Response(
            response.status_code, headers=response.headers, content=response.content
        )

    @property
    def transport(self) -> httpx.MockTransport:
        return httpx.MockTransport(self)


def ok(payload: dict[str, Any] | None = None) -> httpx.Response:
    return httpx.Response(200, json=payload or INFER_RESPONSE, headers={"X-Request-ID": "6f1c0a"})


SHAPES = {t["name"]: tuple(t["input_shape"]) for t in MODELS_RESPONSE["tasks"]}
LEVEL_FOR_BUDGET = {"5ms": 1, "20ms": 2, "1MiB": 1, None: 3}


class FakeServer:
    """Answers like docs/api.md. Request n (1-based) is slow (past any test's timeout)
    when ``n % slow_every == 0``, else fails with 429 when ``n % fail_every == 0``; the
    budget ``5ms`` is always missed, every other budget met."""

    def __init__(self, *, latency: float = 0.003, slow_every: int = 0, fail_every: int = 0) -> None:
        self.latency = latency
        self.slow_every = slow_every
        self.fail_every = fail_every
        self.count = 0
        self.inflight = 0
        self.max_inflight = 0
        self.intended: Counter[str] = Counter()
        self.levels: Counter[tuple[str, int]] = Counter()
        self.budgets: Counter[tuple[str | None, bool]] = Counter()

    async def __call__(self, request: httpx.Request) -> httpx.Response:
        path = request.url.path
        if path == "/v1/models":
            return httpx.Response(200, json=MODELS_RESPONSE)
        if path.startswith("/plan/"):
            if "xs" in request.url.params.get("budget", ""):
                return error_response(422, "invalid_budget", "budget '5xs': unknown unit 'xs'")
            return httpx.Response(200, json=PLAN_RESPONSE)
        task = path.removeprefix("/infer/")
        x = np.load(io.BytesIO(request.content), allow_pickle=False)
        assert request.headers["Content-Type"] == "application/x-npy"
        assert x.shape == (1, *SHAPES[task]) and x.dtype == np.float32
        self.count += 1
        n = self.count
        self.inflight += 1
        self.max_inflight = max(self.max_inflight, self.inflight)
        try:
            if self.slow_every and n % self.slow_every == 0:
                self.intended["timeout"] += 1
                await asyncio.sleep(30)
            await asyncio.sleep(self.latency)
        finally:
            self.inflight -= 1
        if self.fail_every and n % self.fail_every == 0:
            self.intended["queue_full"] += 1
            return error_response(429, "queue_full", "queue full", retry_after="1")
        budget = request.url.params.get("budget")
        level = LEVEL_FOR_BUDGET[budget]
        met = budget != "5ms"
        self.intended["ok"] += 1
        self.levels[(task, level)] += 1
        self.budgets[(budget, met)] += 1
        body = copy.deepcopy(INFER_RESPONSE)
        body.update(task=task, level=level, units=list(range(level)))
        body["budget"] = None if budget is None else {"spec": budget, "met": met}
        return httpx.Response(200, json=body)
