"""The engine's IPC, both ends in this event loop over a real ZMQ ``ipc://`` socket: an
:class:`MPClient` against an :class:`EngineServer` holding the tiny checkpoint. Answers equal
the model's, errors keep their type, a cancelled request is dropped, a malformed frame is
refused, and a closed engine fails what it held with 503 ``engine_unavailable`` at once."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
import zmq
import zmq.asyncio

from model_store.checkpoint import Checkpoint
from server.budget import parse_budget
from server.engine import wire
from server.engine.mp_client import MPClient
from server.engine.outcome import ClientDisconnected
from server.engine.process import EngineServer
from server.engine.runtime import Runtime
from server.errors import EngineUnavailable, InvalidInput, ServeError, UnknownTask
from tests.conftest import server_settings, wait_until


@dataclass
class Pair:
    client: MPClient
    server: EngineServer
    runtime: Runtime
    serving: asyncio.Task[None]


@pytest.fixture
async def pair(tiny_checkpoint: Path, reference: Checkpoint, tmp_path: Path) -> AsyncIterator[Pair]:
    address = f"ipc://{tmp_path / 'engine.sock'}"
    runtime = Runtime(settings=server_settings(tiny_checkpoint), checkpoint=reference)
    server = EngineServer(runtime, address)
    server.bind()
    serving = asyncio.create_task(server.serve())
    await runtime.start()
    specs = {s.name: s for s in reference.model.config.tasks}
    client = MPClient(address, reference.manifest, specs, max_inflight=8, status_interval_s=0.02)
    await client.start()
    await wait_until(lambda: client.status().ready, 30, "the engine's status")
    yield Pair(client, server, runtime, serving)
    await client.close()
    serving.cancel()
    await runtime.stop()
    server.close()


def request(client: MPClient, task: str, x: np.ndarray, **kw: object) -> wire.Infer:
    fields: dict[str, object] = {"budget": None, "level": None, "on_miss": "degrade"}
    fields.update(kw)
    return wire.Infer(
        id=client.next_id(), task=task, elapsed_s=0.0, request_id="t", shape=tuple(x.shape),
        dtype="float32", **fields,  # type: ignore[arg-type]
    )  # fmt: skip


async def test_an_answer_over_ipc_equals_the_models(pair: Pair, reference: Checkpoint) -> None:
    entry = reference.manifest.tasks[0]
    x = np.random.default_rng(0).standard_normal(
        (3, *reference.model.config.tasks[0].input_shape), dtype=np.float32
    )
    answer = await pair.client.infer(request(pair.client, entry.name, x, level=2), x, entry, None)
    with torch.inference_mode():
        want = torch.softmax(reference.model(torch.from_numpy(x), 0, 2), 1).numpy()
    assert (answer.level, answer.reason, answer.units) == (2, "pinned", list(entry.levels[1].units))
    np.testing.assert_allclose(answer.probabilities, want, atol=1e-5)


async def test_errors_keep_their_type_over_ipc(pair: Pair, reference: Checkpoint) -> None:
    entry = reference.manifest.tasks[0]
    x = np.zeros((1, *reference.model.config.tasks[0].input_shape), np.float32)
    with pytest.raises(UnknownTask):
        await pair.client.infer(request(pair.client, "nope", x), x, entry, None)
    wrong = np.zeros((1, 1, 2, 2), np.float32)  # not the task's shape: refused by the engine
    with pytest.raises(InvalidInput):
        await pair.client.infer(request(pair.client, entry.name, wrong), wrong, entry, None)
    budget = parse_budget("1GiB")
    answer = await pair.client.infer(
        request(pair.client, entry.name, x, budget="1GiB"), x, entry, budget
    )
    assert answer.memory_met is True


async def test_plan_models_and_metrics_calls(pair: Pair, reference: Checkpoint) -> None:
    task = reference.manifest.tasks[0].name
    plan = await pair.client.call("plan", task=task, budget=None, on_miss="degrade", examples=1)
    assert plan["task"] == task and len(plan["levels"]) == len(reference.manifest.tasks[0].levels)
    assert (await pair.client.call("models"))["sha256"] == reference.manifest.weights_sha256
    assert b"dvn_requests_total" in await pair.client.call("metrics")


async def test_a_malformed_frame_is_refused_and_the_engine_carries_on(
    pair: Pair, reference: Checkpoint
) -> None:
    ctx = zmq.asyncio.Context()
    raw = ctx.socket(zmq.DEALER)
    raw.connect(pair.server.address)
    header = wire.encode(
        wire.Infer(1, "x", None, None, "degrade", 0.0, "r", (1, 1, 8, 8), "float32")
    )
    await raw.send_multipart([b"\xc1"])  # not msgpack
    await raw.send_multipart([header, b"short"])  # an array frame of the wrong size
    reply = wire.decode_reply(await asyncio.wait_for(raw.recv(), 10))
    raw.close(linger=0)
    ctx.term()
    assert isinstance(reply, wire.Failed) and reply.error_type == "invalid_input"
    assert pair.server.malformed == 2
    entry = reference.manifest.tasks[0]
    x = np.zeros((1, *reference.model.config.tasks[0].input_shape), np.float32)
    assert (await pair.client.infer(request(pair.client, entry.name, x), x, entry, None)).level >= 1


async def test_a_cancelled_request_raises_client_disconnected(
    pair: Pair, reference: Checkpoint
) -> None:
    entry = reference.manifest.tasks[0]
    x = np.zeros((1, *reference.model.config.tasks[0].input_shape), np.float32)
    message = request(pair.client, entry.name, x)
    pending = asyncio.ensure_future(pair.client.infer(message, x, entry, None))
    await asyncio.sleep(0)  # sent
    pair.client.cancel(message.id)
    with pytest.raises(ClientDisconnected):
        await pending
    assert pair.client.inflight == 0


async def test_a_closed_engine_fails_what_it_held_at_once(
    pair: Pair, reference: Checkpoint
) -> None:
    entry = reference.manifest.tasks[0]
    x = np.zeros((1, *reference.model.config.tasks[0].input_shape), np.float32)
    release = asyncio.Event()
    service = pair.runtime.service
    assert service is not None

    async def never(*args: object, **kw: object) -> object:
        await release.wait()
        raise AssertionError("not reached")

    service.infer = never  # type: ignore[method-assign]
    held = asyncio.ensure_future(
        pair.client.infer(request(pair.client, entry.name, x), x, entry, None)
    )
    await asyncio.sleep(0.05)
    pair.serving.cancel()
    pair.server.socket.close(linger=0)  # the engine's end goes away, as a dead process's does
    with pytest.raises(EngineUnavailable) as failed:
        await asyncio.wait_for(held, 5)
    assert failed.value.retry_after_s == 1
    assert isinstance(failed.value, ServeError) and failed.value.status == 503
    release.set()


async def test_close_ends_the_status_poll_when_its_reply_lands_with_the_close(
    pair: Pair,
) -> None:
    # A status reply and close()'s cancel in the same turn of the loop: Python 3.11's
    # asyncio.wait_for returned the reply and dropped the cancel, the poll ran on with
    # nothing receiving, and close() waited on it for ever (a CI teardown hung 300 s).
    status = await pair.client.call("status")
    pair.serving.cancel()  # nothing answers: the next status call stays outstanding
    await wait_until(lambda: bool(pair.client._waiting), 5, "an outstanding status call")
    id, waiting = next(iter(pair.client._waiting.items()))
    waiting.future.set_result((wire.Result(id, status), None))
    async with asyncio.timeout(5) as timer:
        await pair.client.close()  # cancels before the reply is handled: no task between
    # Expiry cancels close(), and that second cancel does end the poll: close() returns
    # either way, so what tells a hang is whether the timer had to fire.
    assert not timer.expired()
