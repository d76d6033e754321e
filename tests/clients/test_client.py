"""DVNClient against httpx.MockTransport fakes that answer as docs/api.md says: the
encoding of each input kind, responses, typed errors and the probes."""

from __future__ import annotations

import io
from pathlib import Path

import httpx
import numpy as np
import pytest
import torch
from PIL import Image

from clients import errors
from clients.results import InferResult
from tests.clients.fakes import (
    ERROR_CASES,
    INFER_RESPONSE,
    INFER_TOP_K_RESPONSE,
    MODELS_RESPONSE,
    PLAN_RESPONSE,
    PROBABILITIES,
    Recorder,
    decode_npy,
    error_response,
    ok,
)
from tests.clients.mock_client import client_for


def image_bytes(fmt: str) -> bytes:
    buf = io.BytesIO()
    Image.new("L", (8, 8), color=128).save(buf, format=fmt)
    return buf.getvalue()


def test_numpy_array_is_sent_as_npy_with_query_and_auth() -> None:
    fake = Recorder(ok())
    x = np.random.default_rng(0).standard_normal((2, 1, 8, 8), dtype=np.float32)
    with client_for(fake, api_key="s3cret") as dvn:
        result = dvn.infer("digits", x, budget="15ms,2MiB", level=2, on_miss="reject", top_k=3)
    (request,) = fake.requests
    assert request.method == "POST"
    assert request.url.path == "/infer/digits"
    assert dict(request.url.params) == {
        "budget": "15ms,2MiB",
        "level": "2",
        "on_miss": "reject",
        "top_k": "3",
    }
    assert request.headers["Content-Type"] == "application/x-npy"
    assert request.headers["Authorization"] == "Bearer s3cret"
    sent = decode_npy(request)
    assert sent.dtype == np.float32
    np.testing.assert_array_equal(sent, x)
    assert isinstance(result, InferResult)


def test_no_optional_params_sends_no_query_and_no_auth() -> None:
    fake = Recorder(ok())
    with client_for(fake) as dvn:
        dvn.infer("digits", np.zeros((1, 8, 8), np.float64))
    (request,) = fake.requests
    assert request.url.query == b""
    assert "Authorization" not in request.headers
    assert decode_npy(request).dtype == np.float64


@pytest.mark.parametrize(
    ("tensor", "dtype"),
    [
        (torch.arange(64, dtype=torch.float32).reshape(1, 8, 8), np.float32),
        (torch.arange(64, dtype=torch.float64).reshape(1, 8, 8), np.float64),
        (torch.arange(64, dtype=torch.float16).reshape(1, 8, 8), np.float32),
        (torch.arange(64, dtype=torch.bfloat16).reshape(1, 8, 8), np.float32),
        (torch.arange(64).reshape(1, 8, 8), np.float32),
    ],
)
def test_torch_tensor_is_sent_as_npy(tensor: torch.Tensor, dtype: type) -> None:
    fake = Recorder(ok())
    with client_for(fake) as dvn:
        dvn.infer("digits", tensor.requires_grad_(tensor.is_floating_point()))
    sent = decode_npy(fake.requests[0])
    assert sent.dtype == dtype
    np.testing.assert_array_equal(sent, tensor.detach().float().numpy())


def test_nested_list_is_sent_as_float32_npy() -> None:
    fake = Recorder(ok())
    with client_for(fake) as dvn:
        dvn.infer("digits", [[[0, 1], [2, 3]]])
    sent = decode_npy(fake.requests[0])
    assert sent.dtype == np.float32
    np.testing.assert_array_equal(sent, [[[0, 1], [2, 3]]])


@pytest.mark.parametrize(
    ("suffix", "fmt", "content_type"),
    [(".png", "PNG", "image/png"), (".jpg", "JPEG", "image/jpeg"), (".JPEG", "JPEG", "image/jpeg")],
)
def test_image_path_is_sent_as_is(tmp_path: Path, suffix: str, fmt: str, content_type: str) -> None:
    data = image_bytes(fmt)
    path = tmp_path / f"digit{suffix}"
    path.write_bytes(data)
    fake = Recorder(ok())
    with client_for(fake) as dvn:
        dvn.infer("digits", path)
        dvn.infer("digits", str(path))
    for request in fake.requests:
        assert request.headers["Content-Type"] == content_type
        assert request.content == data


@pytest.mark.parametrize(
    ("data", "content_type"),
    [
        (image_bytes("PNG"), "image/png"),
        (image_bytes("JPEG"), "image/jpeg"),
        (b"\x93NUMPY" + b"\x01\x00rest", "application/x-npy"),
    ],
)
def test_raw_bytes_content_type_is_sniffed(data: bytes, content_type: str) -> None:
    fake = Recorder(ok())
    with client_for(fake) as dvn:
        dvn.infer("digits", data)
    assert fake.requests[0].headers["Content-Type"] == content_type
    assert fake.requests[0].content == data


def test_npy_path_round_trips(tmp_path: Path) -> None:
    x = np.arange(64, dtype=np.float32).reshape(1, 1, 8, 8)
    np.save(tmp_path / "x.npy", x)
    fake = Recorder(ok())
    with client_for(fake) as dvn:
        dvn.infer("digits", tmp_path / "x.npy")
    np.testing.assert_array_equal(decode_npy(fake.requests[0]), x)


def test_inputs_that_cannot_be_sent(tmp_path: Path) -> None:
    fake = Recorder(ok())
    (tmp_path / "x.txt").write_text("1 2 3")
    with client_for(fake) as dvn:
        with pytest.raises(ValueError, match=r"unsupported file type '\.txt'"):
            dvn.infer("digits", tmp_path / "x.txt")
        with pytest.raises(ValueError, match=r"not a PNG, a JPEG or a \.npy"):
            dvn.infer("digits", b"GIF89a....")
        with pytest.raises(TypeError, match="dtype"):
            dvn.infer("digits", np.array(["a", "b"]))
        with pytest.raises(FileNotFoundError):
            dvn.infer("digits", tmp_path / "missing.png")
    assert fake.requests == []


def test_infer_result_has_every_documented_field() -> None:
    with client_for(Recorder(ok())) as dvn:
        r = dvn.infer("digits", np.zeros((1, 8, 8), np.float32))
    assert (r.request_id, r.task, r.level, r.units, r.selection) == (
        "6f1c0a",
        "digits",
        2,
        [0, 1],
        "budget",
    )
    (p,) = r.predictions
    assert (p.class_index, p.class_name, p.probability) == (3, "3", 0.981)
    assert p.probabilities == PROBABILITIES and p.top_k is None
    assert r.budget is not None and r.budget.met and r.budget_met is True
    assert (r.budget.spec, r.budget.latency_s, r.budget.memory_bytes) == (
        "15ms,2MiB",
        0.015,
        2097152,
    )
    assert (r.cost.params, r.cost.param_bytes, r.cost.flops) == (44518, 178072, 862656)
    assert (r.cost.predicted_latency_ms, r.cost.measured_latency_ms) == (3.1, 2.7)
    assert (r.model.name, r.model.version, r.model.sha256) == ("demo", "1.0.0", "ab12")
    with pytest.raises(Exception, match="frozen"):
        r.level = 3


def test_top_k_response_and_no_budget() -> None:
    with client_for(Recorder(ok(INFER_TOP_K_RESPONSE))) as dvn:
        r = dvn.infer("digits", np.zeros((1, 8, 8), np.float32), top_k=2)
    assert r.budget is None and r.budget_met is None
    top = r.predictions[0].top_k
    assert top is not None and [(c.class_name, c.probability) for c in top] == [
        ("3", 0.981),
        ("6", 0.004),
    ]
    assert r.predictions[0].probabilities is None


def test_request_id_falls_back_to_header() -> None:
    payload = {k: v for k, v in INFER_RESPONSE.items() if k != "request_id"}
    with client_for(Recorder(ok(payload))) as dvn:
        assert dvn.infer("digits", np.zeros((1, 8, 8), np.float32)).request_id == "6f1c0a"


def test_malformed_success_is_an_invalid_response_error() -> None:
    fake = Recorder(httpx.Response(200, json={"task": "digits"}))
    with client_for(fake) as dvn, pytest.raises(errors.InvalidResponseError, match=r"docs/api\.md"):
        dvn.infer("digits", np.zeros((1, 8, 8), np.float32))


def test_plan_and_models() -> None:
    fake = Recorder(
        httpx.Response(200, json=PLAN_RESPONSE), httpx.Response(200, json=MODELS_RESPONSE)
    )
    with client_for(fake) as dvn:
        plan = dvn.plan("digits", budget="15ms")
        models = dvn.models()
    assert fake.requests[0].url.path == "/plan/digits"
    assert dict(fake.requests[0].url.params) == {"budget": "15ms"}
    assert fake.requests[1].url.path == "/v1/models"
    assert plan.level == 1 and plan.error is None and plan.levels[0].fits_latency
    assert plan.budget is not None and plan.budget.latency_s == 0.015
    assert [t.name for t in models.tasks] == ["digits", "shapes"]
    assert models.task("shapes").input_shape == [3, 16, 16]
    assert models.unit_param_bytes == {0: 700000, 1: 700000, 2: 700000, 3: 700000}
    assert models.tasks[0].levels[1].latency_ms == {1: 1.8, 8: 2.8, 32: 6.0}
    with pytest.raises(KeyError, match="digits, shapes"):
        models.task("cats")


def test_every_documented_error_type_has_a_class() -> None:
    assert set(errors.ERROR_TYPES) == {t for _, t, _ in ERROR_CASES}


@pytest.mark.parametrize(("status", "type_", "cls"), ERROR_CASES)
def test_error_type_maps_to_exception_with_server_message(
    status: int, type_: str, cls: type[errors.DVNError], sleeps: list[float]
) -> None:
    message = f"budget '5xs': unknown unit 'xs' ({type_})"
    fake = Recorder(error_response(status, type_, message))  # no Retry-After: never retried
    with client_for(fake) as dvn, pytest.raises(cls) as caught:
        dvn.infer("digits", np.zeros((1, 8, 8), np.float32), budget="5xs")
    e = caught.value
    assert type(e) is cls
    assert (e.message, str(e), e.status, e.type, e.request_id) == (
        message,
        message,
        status,
        type_,
        "req-err-1",
    )
    assert len(fake.requests) == 1 and sleeps == []


def test_unknown_error_type_maps_to_base_class() -> None:
    fake = Recorder(error_response(418, "teapot", "short and stout"))
    with client_for(fake) as dvn, pytest.raises(errors.DVNError) as caught:
        dvn.models()
    assert type(caught.value) is errors.DVNError
    assert (caught.value.message, caught.value.type, caught.value.status) == (
        "short and stout",
        "teapot",
        418,
    )


def test_error_without_error_body_keeps_status_and_text() -> None:
    fake = Recorder(httpx.Response(502, text="<html>bad gateway</html>"))
    with client_for(fake, max_retries=0) as dvn, pytest.raises(errors.DVNError) as caught:
        dvn.models()
    assert type(caught.value) is errors.DVNError
    assert caught.value.status == 502 and caught.value.type is None
    assert "bad gateway" in caught.value.message


def test_healthy_and_ready(sleeps: list[float]) -> None:
    alive = httpx.Response(200, json={"status": "alive"})
    ready = httpx.Response(200, json={"status": "ready"})
    with client_for(Recorder(alive)) as dvn:
        assert dvn.healthy() is True
    with client_for(Recorder(ready)) as dvn:
        assert dvn.ready() is True
    warming = Recorder(error_response(503, "not_ready", "warming up", retry_after="1"))
    with client_for(warming) as dvn:
        assert dvn.ready() is False
    assert len(warming.requests) == 1 and sleeps == []  # a probe reports now, never waits
    down = Recorder(httpx.ConnectError("refused"))
    with client_for(down) as dvn:
        assert dvn.healthy() is False and dvn.ready() is False
    wrong = Recorder(error_response(404, "not_found", "no route /healthz"))
    with client_for(wrong) as dvn, pytest.raises(errors.NotFoundError):
        dvn.healthy()
