"""A real ``dvn serve`` process: start-up, concurrency, graceful drain, bad checkpoints."""

from __future__ import annotations

import asyncio
import hashlib
import io
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import numpy as np
import pytest
import torch

from bench._process import ROOT, dvn_serve
from model_store.checkpoint import load
from server.settings import RETIRED, demo_checkpoint

DEMO = demo_checkpoint()


def npy(x: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, x.astype(np.float32))
    return buf.getvalue()


def expected_probs(task: str, level: int, x: np.ndarray) -> np.ndarray:
    ckpt = load(DEMO)
    with torch.no_grad():
        logits = ckpt.model(torch.from_numpy(x), task, level)
    return torch.softmax(logits, 1).numpy()


def niceness(pid: int) -> set[int]:
    """The niceness of every thread of process ``pid``."""
    return {os.getpriority(os.PRIO_PROCESS, int(t)) for t in os.listdir(f"/proc/{pid}/task")}


def holds_torch(pid: int) -> bool:
    """Whether process ``pid`` has torch's library mapped (it imported torch)."""
    return "libtorch" in Path(f"/proc/{pid}/maps").read_text()


def test_serves_concurrent_requests_exactly(tmp_path: Path) -> None:
    """Also: every retired setting still in the environment, and the retired flag, are
    ignored and named in a warning (docs/configuration.md); the front end runs
    ``DVN_FRONTEND_NICE`` nicer than ``dvn serve``, the engine
    ``DVN_ENGINE_NICE``, every thread of each (docs/decisions.md, CPU priority); only the
    engine imports torch (docs/architecture.md)."""
    rng = np.random.default_rng(0)
    xs = {i: rng.standard_normal((1, 1, 8, 8), dtype=np.float32) for i in range(48)}
    retired = {f"DVN_{name.upper()}": "0" for name in RETIRED}
    flag = ("--max-batch-delay-ms", "2")
    env = {**retired, "DVN_ENGINE_NICE": "3", "DVN_FRONTEND_NICE": "5"}
    ours = os.getpriority(os.PRIO_PROCESS, 0)
    with dvn_serve(DEMO, tmp_path / "serve.log", *flag, "--workers", "1", env=env) as server:
        assert httpx.get(server.url + "/healthz").json() == {"status": "alive"}
        pids = dict(re.findall(r"process started role=(\S+) pid=(\d+)", server.output()))
        assert sorted(pids) == ["engine", "frontend-0"]
        assert niceness(int(pids["engine"])) == {min(19, ours + 3)}
        assert niceness(int(pids["frontend-0"])) == {min(19, ours + 5)}
        tree = (server.process.pid, int(pids["frontend-0"]), int(pids["engine"]))
        assert [holds_torch(pid) for pid in tree] == [False, False, True]

        async def send_all() -> list[httpx.Response]:
            async with httpx.AsyncClient(base_url=server.url, timeout=60) as client:
                return await asyncio.gather(
                    *(
                        client.post(
                            f"/infer/digits?level={1 + i % 4}",
                            content=npy(x),
                            headers={"content-type": "application/x-npy"},
                        )
                        for i, x in xs.items()
                    )
                )

        responses = asyncio.run(send_all())
        metrics = httpx.get(server.url + "/metrics").text
    assert [r.status_code for r in responses] == [200] * len(xs)
    for i, r in enumerate(responses):
        body = r.json()
        assert body["level"] == 1 + i % 4
        want = expected_probs("digits", body["level"], xs[i])[0]
        np.testing.assert_allclose(body["predictions"][0]["probabilities"], want, atol=1e-5)
    # every request counted once, at its level
    for level in range(1, 5):
        line = f'dvn_requests_total{{level="{level}",outcome="ok",task="digits"}} 12.0'
        assert line in metrics
    for setting in (*retired, flag[0]):
        assert f"retired setting ignored: remove it setting={setting}" in server.output()


async def held(
    client: httpx.AsyncClient, body: bytes, n: int
) -> list[asyncio.Task[httpx.Response]]:
    """Send ``n`` level-4 requests of ``body`` to the heavy checkpoint's server and return
    once it holds them all (``dvn_inflight_requests``), before any is answered."""
    accepted = [
        asyncio.create_task(
            client.post(
                "/infer/heavy?level=4",
                content=body,
                headers={"content-type": "application/x-npy"},
            )
        )
        for _ in range(n)
    ]
    for _ in range(1000):
        m = (await client.get("/metrics")).text
        line = next(x for x in m.splitlines() if x.startswith("dvn_inflight_requests "))
        if float(line.split()[1]) >= n:
            return accepted
        await asyncio.sleep(0.01)
    raise AssertionError("the server never held every request at once")


def test_sigterm_drains_then_exits_zero(tmp_path: Path, heavy_checkpoint: Path) -> None:
    """SIGTERM under load: readiness 503, new work 503, accepted work answered, exit 0.

    The heavy checkpoint's level 4 takes tens of milliseconds an example, so the accepted
    requests are still being computed when the signal arrives, however fast the machine."""
    rng = np.random.default_rng(1)
    # 4 examples a request, over max_batch_size: one forward of 4 each
    body = npy(rng.standard_normal((4, 3, 32, 32), dtype=np.float32))
    accepted_n = 12
    args = ("--max-batch-size", "1")
    with dvn_serve(heavy_checkpoint, tmp_path / "serve.log", *args) as server:

        async def scenario() -> tuple[list[int], int, int, list[int]]:
            async with httpx.AsyncClient(base_url=server.url, timeout=120) as client:
                accepted = await held(client, body, accepted_n)
                server.process.send_signal(signal.SIGTERM)
                await asyncio.sleep(0.05)
                ready = (await client.get("/readyz")).status_code
                late = await client.post(
                    "/infer/heavy", content=body, headers={"content-type": "application/x-npy"}
                )
                codes = [r.status_code for r in await asyncio.gather(*accepted)]
                late_body = late.json()
                assert late_body["error"]["type"] == "not_ready"
                return codes, ready, late.status_code, [int(late.headers["retry-after"])]

        codes, ready, late_status, retry = asyncio.run(scenario())
        rc = server.process.wait(60)
    assert codes == [200] * accepted_n
    assert ready == 503
    assert late_status == 503 and retry == [1]
    assert rc == 0
    assert "drained: exiting" in server.output()


DRAIN_CUT = (
    "the server shut down before this request was computed (drain timeout "
    "DVN_DRAIN_TIMEOUT_S=0.2 s); retry on another replica"
)


def test_a_drain_that_runs_out_of_time_answers_every_request_and_exits_zero(
    tmp_path: Path, heavy_checkpoint: Path
) -> None:
    """More accepted work than the drain timeout allows (40 level-4 forwards of four examples,
    each tens of milliseconds or more, against a 0.2 s drain): the process exits 0 within the
    timeout and a short grace, and every request gets an answer: 200 if it was computed,
    else 503 ``not_ready`` saying why. None is dropped."""
    rng = np.random.default_rng(2)
    # 4 examples a request, over max_batch_size: one forward of 4 each, hundreds of ms
    body = npy(rng.standard_normal((4, 3, 32, 32), dtype=np.float32))
    accepted_n = 40
    args = ("--max-batch-size", "1", "--drain-timeout-s", "0.2")
    env = {"DVN_TORCH_THREADS": "1"}
    with dvn_serve(heavy_checkpoint, tmp_path / "serve.log", *args, env=env) as server:

        async def scenario() -> tuple[list[httpx.Response], float]:
            async with httpx.AsyncClient(base_url=server.url, timeout=120) as client:
                accepted = await held(client, body, accepted_n)
                server.process.send_signal(signal.SIGTERM)
                signalled = time.monotonic()
                responses = await asyncio.gather(*accepted)
                await asyncio.to_thread(server.process.wait, 60)
                return responses, time.monotonic() - signalled

        responses, exit_s = asyncio.run(scenario())
        rc = server.process.returncode
    statuses = [r.status_code for r in responses]
    assert set(statuses) == {200, 503}, statuses
    for r in responses:
        if r.status_code == 503:
            assert r.json() == {"error": {"type": "not_ready", "message": DRAIN_CUT}}
            assert r.headers["retry-after"] == "1"
    assert rc == 0
    assert exit_s < 1 + 2 + 3, exit_s  # drain timeout + grace + process exit
    assert "drain timed out" in server.output()


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        ("tamper", "was modified or truncated"),
        ("truncated", "weights.safetensors is not a readable safetensors file ("),
        ("shapes", "weights.safetensors does not match the manifest's architecture: "),
        ("newer", "upgrade dvn-serve"),
        ("missing", "manifest.json is missing"),
    ],
)
def test_bad_checkpoint_refused_at_start(tmp_path: Path, damage: str, message: str) -> None:
    bad = tmp_path / "ckpt"
    shutil.copytree(DEMO, bad)
    if damage == "tamper":
        data = bytearray((bad / "weights.safetensors").read_bytes())
        data[-1] ^= 0xFF
        (bad / "weights.safetensors").write_bytes(bytes(data))
    elif damage == "truncated":  # cut in half, with a hash that matches what is left
        weights = bad / "weights.safetensors"
        weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
        manifest = json.loads((bad / "manifest.json").read_text())
        manifest["weights_sha256"] = hashlib.sha256(weights.read_bytes()).hexdigest()
        (bad / "manifest.json").write_text(json.dumps(manifest))
    elif damage == "shapes":  # the weights (and their hash) untouched, the widths edited
        manifest = json.loads((bad / "manifest.json").read_text())
        manifest["architecture"]["backbone"]["widths"] = [32, 64, 128]
        (bad / "manifest.json").write_text(json.dumps(manifest))
    elif damage == "newer":
        manifest = json.loads((bad / "manifest.json").read_text())
        manifest["format_version"] = 99
        (bad / "manifest.json").write_text(json.dumps(manifest))
    else:
        (bad / "manifest.json").unlink()
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-m", "dvn", "serve", "--checkpoint", str(bad), "--port", "0"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 1
    assert done.stderr.startswith("dvn serve: error: ")
    assert message in done.stderr
    assert time.monotonic() - started < 30
