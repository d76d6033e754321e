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
    NOT_READY,
    Gate,
    example,
    oip_error,
    tensor,
    with_input,
    with_oip,
)

TOO_BIG = json.loads("1e40")


# Their messages are pinned in tests/server/test_errors_messages.py (OIP_MESSAGES).
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
