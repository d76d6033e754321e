"""Settings from the environment and flags, API keys, and the logs."""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch

from server.engine.runtime import default_frontends, default_torch_threads
from server.settings import (
    RETIRED,
    Settings,
    SettingsError,
    load_settings,
    retired_in_use,
    standard_checkpoint,
)
from tests.conftest import AppClient, ServeFactory
from tests.server.helpers import error_of, example
from tests.server.messages import (
    INVALID_SETTINGS,
    NO_API_KEY,
    SETTINGS_MESSAGES,
    WRONG_API_KEY,
)

KEY, OTHER = "s3cret-key-4711", "second-key-0815"


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    """No DVN_ variable from the outer environment."""
    for name in list(os.environ):
        if name.startswith("DVN_"):
            monkeypatch.delenv(name)
    return monkeypatch


def test_defaults(env: pytest.MonkeyPatch) -> None:
    s = load_settings()
    assert s == Settings()
    assert (s.host, s.port, s.device, s.checkpoint) == (
        "127.0.0.1",
        8000,
        "auto",
        standard_checkpoint(),
    )
    assert (s.max_batch_size, s.max_queue_size, s.inline_forward_ms) == (32, 256, 1.0)
    assert (s.max_request_batch, s.max_body_bytes, s.max_image_pixels) == (64, 8 * 1024 * 1024, 16_000_000)  # fmt: skip
    assert (s.api_keys, s.protect_health, s.protect_metrics) == ([], False, False)
    assert (s.log_json, s.log_level, s.profile_iters, s.torch_threads) == (False, "info", 3, None)


def test_environment(env: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name, value in {
        "DVN_CHECKPOINT": str(tmp_path),
        "DVN_HOST": "0.0.0.0",
        "DVN_PORT": "8080",
        "DVN_DEVICE": "cuda:1",
        "DVN_MAX_BATCH_SIZE": "16",
        "DVN_INLINE_FORWARD_MS": "0.5",
        "DVN_MAX_QUEUE_SIZE": "10",
        "DVN_API_KEYS": f" {KEY}, {OTHER},, ",
        "DVN_PROTECT_HEALTH": "true",
        "DVN_PROTECT_METRICS": "1",
        "DVN_LOG_JSON": "yes",
        "DVN_LOG_LEVEL": "debug",
        "DVN_TORCH_THREADS": "2",
    }.items():
        env.setenv(name, value)
    s = load_settings()
    assert (s.checkpoint, s.host, s.port, s.device) == (tmp_path, "0.0.0.0", 8080, "cuda:1")
    assert (s.max_batch_size, s.max_queue_size, s.inline_forward_ms) == (16, 10, 0.5)
    assert s.api_keys == [KEY, OTHER]
    assert (s.protect_health, s.protect_metrics, s.log_json, s.log_level) == (
        True,
        True,
        True,
        "debug",
    )
    assert s.torch_threads == 2


def test_flags_override_the_environment(env: pytest.MonkeyPatch) -> None:
    env.setenv("DVN_PORT", "8080")
    env.setenv("DVN_MAX_BATCH_SIZE", "16")
    s = load_settings(port=9000, max_batch_size=None, host=None)
    assert (s.port, s.max_batch_size, s.host) == (9000, 16, "127.0.0.1")
    assert load_settings(api_keys=[KEY]).api_keys == [KEY]
    assert load_settings(api_keys=f"{KEY},{OTHER}").api_keys == [KEY, OTHER]


@pytest.mark.parametrize("name", sorted(RETIRED))
def test_a_retired_setting_is_ignored_and_named(env: pytest.MonkeyPatch, name: str) -> None:
    """A deployment that still sets a retired variable starts (the value is not read) and
    is told which one to remove; code that passes it by name is refused."""
    variable, flag = f"DVN_{name.upper()}", f"--{name.replace('_', '-')}"
    env.setenv(variable, "3")
    assert load_settings() == Settings()
    assert retired_in_use() == [(variable, RETIRED[name])]
    assert retired_in_use({}, **{name: 3.0}) == [(flag, RETIRED[name])]
    assert retired_in_use({}, **{name: None}) == []
    with pytest.raises(SettingsError, match="Extra inputs are not permitted"):
        load_settings(**{name: 3.0})


def test_settings_are_frozen(env: pytest.MonkeyPatch) -> None:
    s = load_settings()
    with pytest.raises(ValueError, match="frozen"):
        s.port = 1


# Their messages are pinned in tests/server/messages.py (SETTINGS_MESSAGES), by row id.
BAD_SETTINGS = [  # (row, environment, flags)
    ("batch-size-zero", {"DVN_MAX_BATCH_SIZE": "0"}, {}),
    ("batch-size-over", {"DVN_MAX_BATCH_SIZE": "2000"}, {}),
    ("batch-size-words", {"DVN_MAX_BATCH_SIZE": "lots"}, {}),
    ("port-over", {}, {"port": 70000}),
    ("port-negative", {}, {"port": -1}),
    ("port-words", {"DVN_PORT": "http"}, {}),
    ("device-flag", {}, {"device": "tpu"}),
    ("device-env", {"DVN_DEVICE": "cuda:x"}, {}),
    ("log-level", {}, {"log_level": "verbose"}),
    ("protect-health", {"DVN_PROTECT_HEALTH": "maybe"}, {}),
    ("inline-forward", {"DVN_INLINE_FORWARD_MS": "-1"}, {}),
    ("body-bytes", {}, {"max_body_bytes": 10}),
    ("profile-iters", {}, {"profile_iters": 0}),
    ("unknown-flag", {}, {"colour": "red"}),
]


@pytest.mark.parametrize(
    ("row", "environ", "flags"), BAD_SETTINGS, ids=[r[0] for r in BAD_SETTINGS]
)
def test_invalid_settings_name_their_source(
    env: pytest.MonkeyPatch, row: str, environ: dict[str, str], flags: dict[str, Any]
) -> None:
    for name, value in environ.items():
        env.setenv(name, value)
    with pytest.raises(SettingsError) as info:
        load_settings(**flags)
    assert str(info.value) == INVALID_SETTINGS.format(SETTINGS_MESSAGES[row])
    assert isinstance(info.value, ValueError)


def test_every_bad_value_is_listed(env: pytest.MonkeyPatch) -> None:
    env.setenv("DVN_MAX_BATCH_SIZE", "0")
    with pytest.raises(SettingsError) as info:
        load_settings(port=70000)
    both = "; ".join(SETTINGS_MESSAGES[row] for row in ("port-over", "batch-size-zero"))
    assert str(info.value) == INVALID_SETTINGS.format(both)


# -- API keys -----------------------------------------------------------------------------

UNAUTHORIZED = (401, "unauthorized", NO_API_KEY)
FORBIDDEN = (403, "forbidden", WRONG_API_KEY)


async def call(client: AppClient, path: str, headers: dict[str, str]) -> Any:
    if path.startswith("/infer/"):
        body = {"inputs": example("digits", 0).tolist()}
        return await client.post(path, json=body, headers=headers)
    return await client.get(path, headers=headers)


V1 = [
    "/infer/digits",
    "/infer/nope",
    "/plan/digits",
    "/v1/models",
    "/v1/models/digits/levels/1/export",
    "/v1/models/digits/export?budget=1MiB",
]


async def test_api_keys_guard_the_v1_api(serve: ServeFactory) -> None:
    client = await serve(api_keys=[KEY, OTHER])
    for path in V1:
        assert error_of(await call(client, path, {})) == UNAUTHORIZED, path
        for headers in (
            {"authorization": "Bearer wrong"},
            {"x-api-key": "wrong"},
            {"x-api-key": KEY[:-1]},
            {"authorization": f"Bearer {KEY}x"},
        ):
            assert error_of(await call(client, path, headers)) == FORBIDDEN, (path, headers)
        for headers in (
            {"authorization": f"Bearer {KEY}"},
            {"authorization": f"bearer  {OTHER} "},
            {"x-api-key": KEY},
            {"x-api-key": OTHER},
            {"authorization": "Basic abc", "x-api-key": KEY},  # not a bearer: the other header
        ):
            r = await call(client, path, headers)
            want = 404 if path == "/infer/nope" else 200
            assert r.status_code == want, (path, headers, r.text)
    # Not a bearer token and no X-API-Key: no key at all.
    assert error_of(await call(client, "/v1/models", {"authorization": "Basic abc"})) == UNAUTHORIZED  # fmt: skip
    assert error_of(await call(client, "/v1/models", {"authorization": "Bearer "})) == UNAUTHORIZED  # fmt: skip


@pytest.mark.parametrize(
    ("protect", "guarded"),
    [
        ({}, set()),
        ({"protect_health": True}, {"/healthz", "/readyz"}),
        ({"protect_metrics": True}, {"/metrics"}),
        ({"protect_health": True, "protect_metrics": True}, {"/healthz", "/readyz", "/metrics"}),
    ],
)
async def test_health_and_metrics_open_unless_protected(
    serve: ServeFactory, protect: dict[str, Any], guarded: set[str]
) -> None:
    client = await serve(api_keys=[KEY], **protect)
    for path in ("/healthz", "/readyz", "/metrics"):
        r = await client.get(path)
        if path in guarded:
            assert error_of(r) == UNAUTHORIZED, path
            assert error_of(await client.get(path, headers={"x-api-key": "no"})) == FORBIDDEN
            assert (await client.get(path, headers={"x-api-key": KEY})).status_code == 200
        else:
            assert r.status_code == 200, path


async def test_protect_flags_without_keys_change_nothing(serve: ServeFactory) -> None:
    client = await serve(protect_health=True, protect_metrics=True)
    for path in ("/healthz", "/readyz", "/metrics", "/v1/models"):
        assert (await client.get(path)).status_code == 200


# -- logs ---------------------------------------------------------------------------------


class AccessLog:
    """caplog for the dvn.* loggers, which do not propagate to the root: :meth:`attach`
    caplog's handler once the server is up (create_app replaces dvn's handlers)."""

    def __init__(self, caplog: pytest.LogCaptureFixture) -> None:
        self.caplog = caplog
        self.logger = logging.getLogger("dvn")

    def attach(self) -> None:
        self.logger.addHandler(self.caplog.handler)

    def detach(self) -> None:
        self.logger.removeHandler(self.caplog.handler)

    def records(self) -> list[logging.LogRecord]:
        return [r for r in self.caplog.records if r.name == "dvn.access"]

    def fields(self) -> list[dict[str, Any]]:
        return [dict(getattr(r, "fields", {})) for r in self.records()]


@pytest.fixture
def access_log(caplog: pytest.LogCaptureFixture) -> Iterator[AccessLog]:
    log = AccessLog(caplog)
    yield log
    log.detach()


async def test_one_access_line_per_request(serve: ServeFactory, access_log: AccessLog) -> None:
    client = await serve()
    access_log.attach()
    x = {"inputs": example("digits", 0).tolist()}
    await client.post("/infer/digits?budget=2MiB", json=x, headers={"x-request-id": "r-1"})
    await client.post("/infer/digits?level=2", json=x)
    await client.post("/infer/digits?budget=1B", json=x)
    await client.post("/infer/nope", json=x)
    await client.get("/v1/models")
    for path in ("/healthz", "/readyz", "/metrics"):
        await client.get(path)
    got = access_log.fields()
    assert len(got) == 5
    for fields in got:
        assert fields["latency_ms"] > 0
        assert isinstance(fields["request_id"], str)
    first = {k: v for k, v in got[0].items() if k != "latency_ms"}
    assert first == {
        "request_id": "r-1", "method": "POST", "path": "/infer/digits", "status": 200,
        "task": "digits", "budget": "2MiB", "level": 4, "outcome": "ok", "selection": "budget",
        "budget_met": True,
    }  # fmt: skip
    assert {k: got[1][k] for k in ("task", "budget", "level", "outcome", "selection")} == {
        "task": "digits", "budget": None, "level": 2, "outcome": "ok", "selection": "pinned",
    }  # fmt: skip
    assert {k: got[2].get(k) for k in ("status", "task", "budget", "level", "outcome")} == {
        "status": 422, "task": "digits", "budget": "1B", "level": None,
        "outcome": "budget_unsatisfiable",
    }  # fmt: skip
    assert (got[3]["status"], got[3]["task"], got[3]["outcome"]) == (404, "nope", "unknown_task")
    assert (got[4]["path"], got[4]["status"]) == ("/v1/models", 200)
    assert "outcome" not in got[4]


async def test_keys_never_logged(
    serve: ServeFactory,
    access_log: AccessLog,
    capsys: pytest.CaptureFixture[str],
) -> None:
    client = await serve(api_keys=[KEY], log_level="debug", protect_metrics=True)
    access_log.attach()
    x = {"inputs": example("digits", 0).tolist()}
    for headers in (
        {"authorization": f"Bearer {KEY}"},
        {"x-api-key": KEY},
        {"x-api-key": OTHER},
        {},
    ):
        await client.post("/infer/digits", json=x, headers=headers)
        await client.post("/infer/digits?budget=5xs", json=x, headers=headers)
        await client.get("/metrics", headers=headers)
    records = access_log.records()
    assert len(records) == 8  # /metrics is not logged
    text = capsys.readouterr().err + "\n".join(
        f"{r.getMessage()} {getattr(r, 'fields', '')}" for r in records
    )
    assert "request_id=" in text  # the lines were captured
    assert KEY not in text
    assert OTHER not in text


async def test_json_logs(serve: ServeFactory, capsys: pytest.CaptureFixture[str]) -> None:
    client = await serve(log_json=True)
    x = {"inputs": example("shapes", 0).tolist()}
    await client.post("/infer/shapes?level=3", json=x, headers={"x-request-id": "json-1"})
    await client.post("/infer/shapes?budget=5xs", json=x)
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    docs = [json.loads(line) for line in lines]  # every line is one JSON object
    assert {"ready", "warming up"} <= {d["message"] for d in docs if d["logger"] == "dvn.server"}
    access = [d for d in docs if d["logger"] == "dvn.access"]
    assert len(access) == 2
    ok, bad = access
    assert {k: ok[k] for k in ("severity", "message", "request_id", "status", "task", "outcome", "level")} == {
        "severity": "info", "message": "request", "request_id": "json-1", "status": 200,
        "task": "shapes", "outcome": "ok", "level": 3,
    }  # fmt: skip
    assert isinstance(ok["latency_ms"], float)
    assert (bad["status"], bad["outcome"], bad["budget"]) == (422, "invalid_budget", "5xs")
    assert all(set(d) >= {"time", "severity", "logger", "message"} for d in docs)


@pytest.mark.parametrize(
    ("cores", "frontends", "expected"),
    [(1, 1, 1), (2, 1, 1), (16, 1, 15), (16, 8, 8), (2, 2, 1), (4, 0, 3)],
)
def test_torch_threads_default_leaves_the_front_ends_their_cores(
    monkeypatch: pytest.MonkeyPatch, cores: int, frontends: int, expected: int
) -> None:
    """One rule for ``dvn serve`` (its front ends) and an engine in process (one front end):
    the cores left, at least one."""
    monkeypatch.setattr("os.sched_getaffinity", lambda pid: set(range(cores)))
    assert default_torch_threads(torch.device("cpu"), frontends) == expected
    assert default_torch_threads(torch.device("cuda"), frontends) is None  # torch's own


@pytest.mark.parametrize(("cores", "cpu", "cuda"), [(1, 1, 1), (2, 1, 1), (3, 1, 2), (16, 8, 15)])
def test_front_ends_default_by_the_engines_device(
    monkeypatch: pytest.MonkeyPatch, cores: int, cpu: int, cuda: int
) -> None:
    """``dvn serve`` without ``--workers``: on a CPU half the cores (the engine computes on
    the rest), on a GPU every core but the engine's; at least one."""
    monkeypatch.setattr("os.sched_getaffinity", lambda pid: set(range(cores)))
    assert default_frontends(torch.device("cpu")) == cpu
    assert default_frontends(torch.device("cuda")) == cuda


async def test_unset_torch_threads_takes_the_default(serve: Any) -> None:
    before = torch.get_num_threads()
    expected = default_torch_threads(torch.device("cpu"))
    assert expected is not None
    torch.set_num_threads(expected + 1)  # so that the server's start must change it
    try:
        await serve(torch_threads=None)
        assert torch.get_num_threads() == expected
    finally:
        torch.set_num_threads(before)
