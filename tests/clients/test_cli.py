"""``dvn infer`` and ``dvn loadtest`` through clients.cli with a MockTransport-backed client."""

from __future__ import annotations

import argparse
import io
import json
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from PIL import Image

import clients.cli
from tests.clients.fakes import (
    INFER_RESPONSE,
    MODELS_RESPONSE,
    FakeServer,
    Recorder,
    decode_npy,
    error_response,
    ok,
)


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="dvn")
    sub = parser.add_subparsers(dest="command", required=True)
    clients.cli.register(sub)
    return parser.parse_args(argv)


def run(argv: list[str]) -> int:
    args = parse(argv)
    code: int = args.handler(args)
    return code


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch) -> Recorder:
    recorder = Recorder(ok())
    monkeypatch.setattr(clients.cli, "_transport", lambda: recorder.transport)
    return recorder


def test_infer_json_prints_the_response(
    fake: Recorder, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    x = np.random.default_rng(0).standard_normal((1, 1, 8, 8), dtype=np.float32)
    np.save(tmp_path / "x.npy", x)
    argv = ["infer", "http://dvn.test", "digits", str(tmp_path / "x.npy"), "--budget", "15ms,2MiB"]
    argv += ["--level", "2", "--on-miss", "reject", "--top-k", "3", "--json", "--api-key", "k"]
    code = run(argv)
    assert code == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed == [{"file": str(tmp_path / "x.npy"), **INFER_RESPONSE}]
    (request,) = fake.requests
    assert dict(request.url.params) == {
        "budget": "15ms,2MiB",
        "level": "2",
        "on_miss": "reject",
        "top_k": "3",
    }
    assert request.headers["Authorization"] == "Bearer k"
    np.testing.assert_array_equal(decode_npy(request), x)


def test_infer_table_for_json_and_image_files(
    fake: Recorder, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: Any
) -> None:
    monkeypatch.setenv("DVN_API_KEY", "from-env")
    (tmp_path / "x.json").write_text(json.dumps({"inputs": [[[0.5] * 8] * 8]}))
    Image.new("L", (8, 8)).save(tmp_path / "d.png")
    assert (
        run(
            [
                "infer",
                "http://dvn.test",
                "digits",
                str(tmp_path / "x.json"),
                str(tmp_path / "d.png"),
            ]
        )
        == 0
    )
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == [
        "file", "#", "class", "prob", "level", "units", "budget", "met", "param_bytes", "ms",
    ]  # fmt: skip
    assert lines[1].split()[1:] == [
        "0",
        "3",
        "0.9810",
        "2",
        "0,1",
        "15ms,2MiB",
        "yes",
        "178,072",
        "2.70",
    ]
    assert len(lines) == 3
    sent_json, sent_png = fake.requests
    np.testing.assert_array_equal(decode_npy(sent_json), np.full((1, 8, 8), 0.5, np.float32))
    assert sent_png.headers["Content-Type"] == "image/png"
    assert sent_png.headers["Authorization"] == "Bearer from-env"


def test_infer_error_is_the_servers_message(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    message = "budget '5xs': unknown unit 'xs'; use us, ms, s, B, kB, MB, GB, KiB, MiB or GiB"
    recorder = Recorder(error_response(422, "invalid_budget", message))
    monkeypatch.setattr(clients.cli, "_transport", lambda: recorder.transport)
    np.save(tmp_path / "x.npy", np.zeros((1, 8, 8), np.float32))
    with pytest.raises(ValueError) as caught:
        run(["infer", "http://dvn.test", "digits", str(tmp_path / "x.npy"), "--budget", "5xs"])
    assert str(caught.value) == message


def test_infer_bad_json_file(fake: Recorder, tmp_path: Path) -> None:
    (tmp_path / "x.json").write_text(json.dumps({"data": [1]}))
    with pytest.raises(ValueError, match="must hold"):
        run(["infer", "http://dvn.test", "digits", str(tmp_path / "x.json")])
    assert fake.requests == []


def test_loadtest_writes_report_json_and_plot(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    server = FakeServer()
    monkeypatch.setattr(clients.cli, "_transport", lambda: httpx.MockTransport(server))
    argv = ["loadtest", "http://dvn.test", "--rate", "100", "--duration", "0.5", "--warmup", "0"]
    argv += ["--budget-mix", "5ms:1,20ms:1", "--json", str(tmp_path / "r.json")]
    argv += ["--plot", str(tmp_path / "r.png"), "--quiet", "--seed", "3"]
    assert run(argv) == 0
    out = capsys.readouterr().out
    assert "latency ms" in out and "budget" in out
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["totals"]["sent"] == server.count == report["totals"]["ok"]
    assert report["config"]["rate"] == 100.0 and report["config"]["seed"] == 3
    assert (tmp_path / "r.png").read_bytes().startswith(b"\x89PNG")


def test_loadtest_max_requests(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    server = FakeServer()
    monkeypatch.setattr(clients.cli, "_transport", lambda: httpx.MockTransport(server))
    argv = ["loadtest", "http://dvn.test", "--mode", "closed", "--max-requests", "25"]
    argv += ["--duration", "60", "--warmup", "0", "--quiet", "--json", str(tmp_path / "r.json")]
    assert run(argv) == 0
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["totals"]["sent"] == server.count == 25
    assert report["config"]["max_requests"] == 25
    assert report["duration_s"] < 60


def test_help_has_examples(capsys: pytest.CaptureFixture[str]) -> None:
    for command in ("infer", "loadtest"):
        with pytest.raises(SystemExit):
            parse([command, "--help"])
        assert f"dvn {command} http://127.0.0.1:8000" in capsys.readouterr().out


def test_progress_line_on_stderr(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    server = FakeServer()
    monkeypatch.setattr(clients.cli, "_transport", lambda: httpx.MockTransport(server))
    stderr = io.StringIO()
    stderr.isatty = lambda: True  # type: ignore[method-assign]
    monkeypatch.setattr("sys.stderr", stderr)
    assert (
        run(["loadtest", "http://dvn.test", "--rate", "50", "--duration", "1.5", "--warmup", "0"])
        == 0
    )
    progress = stderr.getvalue()
    assert progress.count("\r") >= 2
    assert "sent" in progress and "ok" in progress and "p50" in progress and "/s" in progress


def test_loadtest_respect_retry_after(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    busy = Recorder(
        httpx.Response(200, json=MODELS_RESPONSE),
        error_response(429, "server_busy", "busy", retry_after="30"),
    )
    monkeypatch.setattr(clients.cli, "_transport", lambda: busy.transport)
    argv = ["loadtest", "http://dvn.test", "--mode", "closed", "--concurrency", "3"]
    argv += ["--duration", "0.3", "--warmup", "0", "--quiet", "--respect-retry-after"]
    assert run([*argv, "--json", str(tmp_path / "r.json")]) == 0
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["totals"]["sent"] == report["totals"]["errors"] == 3  # then each waited
    assert report["retry_after"] == {"waits": 3, "asked_s": 90.0}
    assert "retry-after waited 3 times before a next request (90.0 s asked)" in (
        capsys.readouterr().out
    )
    with pytest.raises(ValueError, match="respect_retry_after needs the closed loop"):
        run(["loadtest", "http://dvn.test", "--respect-retry-after", "--quiet"])
