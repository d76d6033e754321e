"""/plan, /v1/models and level export, readiness and the OpenAPI document, in process
(split from test_infer.py, which holds /infer itself)."""

from __future__ import annotations

import hashlib
import io
import platform
import tarfile
import threading
from pathlib import Path

import numpy as np
import pytest
import torch
from fastapi.routing import APIRoute

from model_store.checkpoint import Checkpoint, load
from model_store.costs import unit_param_bytes
from server.engine import runtime
from server.engine.executor import ForwardFn
from tests.conftest import AppClient, ServeFactory, wait_until
from tests.server.helpers import error_of, example
from tests.server.messages import (
    DRAINING_PROBE,
    MESSAGES,
    SHUTTING_DOWN,
    WARM_UP_FAILED,
    WARMING_UP,
    WARMING_UP_PROBE,
)

LEVELS = (1, 2, 3, 4)


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
        ("budget=1kB", "budget_unsatisfiable", MESSAGES["budget-below-smallest-level"]),
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


# Their messages are pinned in tests/server/messages.py (EXPORT_MESSAGES).
EXPORT_ERRORS = [
    ("/v1/models/digits/export", 422, "invalid_parameter"),
    ("/v1/models/digits/export?budget=5ms", 422, "invalid_parameter"),
    ("/v1/models/digits/export?budget=5ms,1MiB", 422, "invalid_parameter"),
    ("/v1/models/digits/export?budget=1XB", 422, "invalid_budget"),
    ("/v1/models/nope/export?budget=1MiB", 404, "unknown_task"),
    ("/v1/models/nope/levels/1/export", 404, "unknown_task"),
    ("/v1/models/digits/levels/0/export", 422, "invalid_parameter"),
    ("/v1/models/digits/levels/5/export", 422, "invalid_parameter"),
    ("/v1/models/digits/levels/top/export", 422, "invalid_parameter"),
    ("/v1/models/digits/levels/1.0/export", 422, "invalid_parameter"),
]


@pytest.mark.parametrize(("url", "status", "kind"), EXPORT_ERRORS)
async def test_export_errors(client: AppClient, url: str, status: int, kind: str) -> None:
    assert error_of(await client.get(url))[:2] == (status, kind)


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
        assert error_of(r) == (503, "not_ready", WARMING_UP_PROBE)
        assert r.headers["retry-after"] == "1"
        r = await client.post("/infer/digits", json={"inputs": example("digits", 0).tolist()})
        assert error_of(r) == (503, "not_ready", WARMING_UP)
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
    message = WARM_UP_FAILED.format(error="RuntimeError: device lost")
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
    assert error_of(r) == (503, "not_ready", DRAINING_PROBE)
    r = await client.post("/infer/digits", json={"inputs": example("digits", 0).tolist()})
    assert error_of(r) == (503, "not_ready", SHUTTING_DOWN)
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
        "application/json", "application/x-npy", "application/npy",
        "image/png", "image/jpeg", "image/jpg",
    }  # fmt: skip
    assert {p["name"] for p in infer["parameters"]} == {
        "task", "budget", "level", "on_miss", "top_k",
    }  # fmt: skip
    assert infer["responses"]["422"]["description"] == (
        "invalid_budget; budget_unsatisfiable; invalid_parameter"
    )
    assert (
        infer["responses"]["503"]["description"]
        == "deadline_unmeetable; not_ready; engine_unavailable"
    )
    assert "HTTPValidationError" not in doc["components"]["schemas"]
    export = doc["paths"]["/v1/models/{task}/levels/{level}/export"]["get"]["responses"]
    assert set(export["200"]["content"]) == {"application/x-tar"}
    assert set(doc["paths"]["/readyz"]["get"]["responses"]) == {"200", "503"}
    assert set(doc["components"]["schemas"]["ErrorBody"]["properties"]) == {"error"}


async def test_warm_up_hands_the_freed_heap_back_once(
    serve: ServeFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Timing the convolution kernels frees about 20 MiB that glibc would keep resident:
    warm-up returns it with ``malloc_trim`` (glibc), once, before the server turns ready."""
    calls: list[bool] = []
    real = runtime.release_freed_heap
    monkeypatch.setattr(runtime, "release_freed_heap", lambda: calls.append(real()) or True)
    client = await serve()
    assert client.app.state.runtime.ready
    if platform.libc_ver()[0] == "glibc":
        assert calls == [True]
    else:
        assert calls == [False]
