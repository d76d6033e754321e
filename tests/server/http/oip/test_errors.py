"""OIP v2 errors in process: bad tensors, transport limits and errors raised before the
handler, all in the protocol's error shape; not ready until warm-up ends."""

from __future__ import annotations

import json
from typing import Any

import numpy as np

from tests.conftest import AppClient, ServeFactory, wait_until
from tests.server.http.oip.helpers import (
    GOOD,
    INFER,
    Gate,
    example,
    oip_error,
    tensor,
    with_input,
    with_oip,
)
from tests.server.messages import (
    BATCH_OVER_LIMIT,
    BODY_OVER_LIMIT,
    METHOD_NOT_ALLOWED,
    NO_API_KEY,
    NO_ROUTE,
    OIP_MESSAGES,
    OIP_NOT_JSON,
    OIP_RAGGED,
    OIP_TOO_DEEP,
    SHUTTING_DOWN,
    THEIR_WORDS,
    WARMING_UP,
    WRONG_API_KEY,
    matching,
)

TOO_BIG = json.loads("1e40")


# Their messages are pinned in tests/server/messages.py (OIP_MESSAGES).
BAD_REQUESTS: list[tuple[str, Any, str]] = [
    ("datatype string", with_input(datatype="FLOAT32"), "invalid_input"),
    ("datatype case", with_input(datatype="fp32"), "invalid_input"),
    ("unsupported datatype", with_input(datatype="INT64"), "invalid_input"),
    ("shape/data length", with_input(shape=[1, 1, 8, 9]), "invalid_input"),
    ("negative dimension", with_input(shape=[-1, 1, 8, 8]), "invalid_input"),
    ("shape the task does not take", with_input(shape=[2, 32]), "invalid_input"),
    ("unknown input name", with_input(name="pixels"), "invalid_input"),
    ("two inputs", {"inputs": [GOOD, {**GOOD, "name": "mask"}]}, "invalid_input"),
    ("no inputs field", {"id": "1"}, "invalid_input"),
    ("empty inputs", {"inputs": []}, "invalid_input"),
    ("NaN", with_input(data=[float("nan"), *GOOD["data"][1:]]), "invalid_input"),
    ("over FP32 range", with_input(data=[*GOOD["data"][:-1], TOO_BIG]), "invalid_input"),
    ("strings", with_input(data=["0.5"] * 64), "invalid_input"),
    ("no data", {"inputs": [{k: v for k, v in GOOD.items() if k != "data"}]}, "invalid_input"),
    ("binary extension", {"inputs": [{**{k: v for k, v in GOOD.items() if k != "data"},
                                      "parameters": {"binary_data_size": 256}}]},
     "invalid_input"),
    ("shared memory extension", {"inputs": [{**{k: v for k, v in GOOD.items() if k != "data"},
                                             "parameters": {"shared_memory_region": "r"}}]},
     "invalid_input"),
    ("shape of strings", with_input(shape=["1", 1, 8, 8]), "invalid_input"),
    ("UINT8 out of range", with_input(datatype="UINT8", data=[256] + [0] * 63), "invalid_input"),
    ("booleans among numbers", with_input(data=[True] + [0.5] * 63), "invalid_input"),
    ("UINT8 not integers", with_input(datatype="UINT8", data=[0.5] * 64), "invalid_input"),
    ("unknown output", {"inputs": [GOOD], "outputs": [{"name": "logits"}]}, "invalid_input"),
    ("classification extension",
     {"inputs": [GOOD], "outputs": [{"name": "class_index", "parameters": {"classification": 3}}]},
     "invalid_input"),
    ("unknown parameter", {"inputs": [GOOD], "parameters": {"budjet": "2MiB"}},
     "invalid_parameter"),
    ("nested parameter", {"inputs": [GOOD], "parameters": {"budget": {"ms": 5}}},
     "invalid_input"),
    ("budget type", {"inputs": [GOOD], "parameters": {"budget": 15}}, "invalid_parameter"),
    ("budget grammar", {"inputs": [GOOD], "parameters": {"budget": "5xs"}}, "invalid_budget"),
    ("memory budget too small", {"inputs": [GOOD], "parameters": {"budget": "1kB"}},
     "budget_unsatisfiable"),
    ("budget length", {"inputs": [GOOD], "parameters": {"budget": "1" * 199 + "ms"}},
     "invalid_parameter"),
    ("level range", {"inputs": [GOOD], "parameters": {"level": 9}}, "invalid_parameter"),
    ("level type", {"inputs": [GOOD], "parameters": {"level": "2"}}, "invalid_parameter"),
    ("on_miss", {"inputs": [GOOD], "parameters": {"on_miss": "wait"}}, "invalid_parameter"),
    ("not an object", [GOOD], "invalid_input"),
]  # fmt: skip


async def test_bad_requests_are_400_in_the_protocol_shape(client: AppClient) -> None:
    wrong = []
    for case, body, kind in BAD_REQUESTS:
        # json.dumps: NaN as the literal JSON parsers (Python's included) accept.
        r = await client.post(INFER.format(task="digits"), content=json.dumps(body).encode())
        got = oip_error(r)
        if got[:2] != (400, kind):
            wrong.append((case, got))
        assert "retry-after" not in r.headers
    assert wrong == []
    r = await client.post(INFER.format(task="digits"), content=b'{"inputs": [')
    status, kind, message = oip_error(r)
    assert (status, kind) == (400, "invalid_input")
    assert matching(OIP_NOT_JSON, reason=THEIR_WORDS).fullmatch(message), message
    r = await client.post(INFER.format(task="digits"), content=b"[" * 100_000)
    assert oip_error(r) == (400, "invalid_input", OIP_TOO_DEEP)
    for data in ([[1.0, 2.0], [3.0]], json.loads("[" * 70 + "]" * 70)):  # ragged, 70 deep
        r = await client.post(INFER.format(task="digits"), json=with_input(data=data))
        status, kind, message = oip_error(r)
        assert (status, kind) == (400, "invalid_input")
        assert matching(OIP_RAGGED, reason=THEIR_WORDS).fullmatch(message), message


async def test_transport_limits(serve: ServeFactory) -> None:
    client = with_oip(await serve(max_body_bytes=2048, max_request_batch=4))
    x = example("digits", 0, batch=5)
    r = await client.post(INFER.format(task="digits"), json={"inputs": [tensor(x)]})
    size = int(r.request.headers["content-length"])
    assert oip_error(r) == (
        413, "payload_too_large", BODY_OVER_LIMIT.format(size=size, limit=2048)
    )  # fmt: skip
    x = np.zeros((5, 1, 8, 8), np.float32)  # short JSON: zeros
    r = await client.post(INFER.format(task="digits"), json={"inputs": [tensor(x)]})
    assert oip_error(r) == (400, "invalid_input", BATCH_OVER_LIMIT.format(size=5, limit=4))
    r = await client.post(
        INFER.format(task="digits"),
        content=b"{}",
        headers={"Inference-Header-Content-Length": "2"},
    )
    assert oip_error(r) == (400, "invalid_input", OIP_MESSAGES["binary extension"])


async def test_errors_raised_before_the_handler_share_the_shape(serve: ServeFactory) -> None:
    client = with_oip(await serve(api_keys=["sesame"]))
    body = {"inputs": [GOOD]}
    r = await client.post(INFER.format(task="digits"), json=body)
    assert oip_error(r) == (401, "unauthorized", NO_API_KEY)
    r = await client.get("/v2/models/digits", headers={"x-api-key": "wrong"})
    assert oip_error(r) == (403, "forbidden", WRONG_API_KEY)
    r = await client.post(INFER.format(task="digits"), json=body, headers={"x-api-key": "sesame"})
    assert r.status_code == 200
    # Health follows DVN_PROTECT_HEALTH (off): open, like /healthz.
    assert (await client.get("/v2/health/live")).status_code == 200
    assert (await client.get("/v2/health/ready")).status_code == 200
    r = await client.get("/v2/repository/index", headers={"x-api-key": "sesame"})
    assert oip_error(r) == (404, "not_found", NO_ROUTE.format(path="/v2/repository/index"))
    r = await client.get(INFER.format(task="digits"), headers={"x-api-key": "sesame"})
    not_allowed = METHOD_NOT_ALLOWED.format(method="GET", path="/v2/models/digits/infer")
    assert oip_error(r) == (405, "method_not_allowed", not_allowed)
    # The v1 API keeps its own shape.
    r = await client.get("/v1/nope")
    assert r.json() == {"error": {"type": "not_found", "message": NO_ROUTE.format(path="/v1/nope")}}


async def test_not_ready_until_warm_up_ends(serve: ServeFactory) -> None:
    gate = Gate(lambda inputs: True)  # holds warm-up
    try:
        client = with_oip(await serve(forward_wrapper=gate, wait_ready=False))
        await wait_until(gate.entered.is_set, 30, "warm-up to start")
        for url in ("/v2/health/ready", "/v2/models/digits/ready"):
            r = await client.get(url)
            assert oip_error(r) == (503, "not_ready", WARMING_UP), url
            assert r.headers["retry-after"] == "1"
        r = await client.post(INFER.format(task="digits"), json={"inputs": [GOOD]})
        assert oip_error(r) == (503, "not_ready", WARMING_UP)
        assert (await client.get("/v2/health/live")).json() == {"live": True}
        assert (await client.get("/v2/models/digits")).status_code == 200  # loaded: metadata
    finally:
        gate.open.set()
    await wait_until(lambda: client.app.state.runtime.ready, 30, "warm-up")
    assert (await client.get("/v2/health/ready")).json() == {"ready": True}
    await client.app.state.runtime.stop()
    r = await client.get("/v2/health/ready")
    assert oip_error(r) == (503, "not_ready", SHUTTING_DOWN)
    assert (await client.get("/v2/health/live")).status_code == 200
