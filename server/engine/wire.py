"""The engine's IPC messages (msgspec, msgpack-encoded) and their frames.

A front end's DEALER socket talks to the engine's ROUTER socket. Every message is one
header frame (a tagged msgspec struct), followed, for an inference request and its answer,
by one frame holding the array's raw bytes: the array travels as a zero-copy frame, never
inside the msgpack header. See docs/architecture.md for the exchange.
"""

from __future__ import annotations

import functools
import time
from pathlib import Path
from typing import Any, Literal

import msgspec
import numpy as np

from model_store.manifest import TaskEntry
from server.budget import Budget
from server.engine.outcome import Answer
from server.errors import BY_TYPE, ServeError


class Infer(msgspec.Struct, tag="infer", frozen=True):
    """Answer the array in the next frame for ``task`` within ``budget``."""

    id: int
    task: str
    budget: str | None
    level: int | None
    on_miss: str
    elapsed_s: float  # time since the request reached the front end, when sent
    request_id: str
    shape: tuple[int, ...]
    dtype: str
    # When it was sent (time.monotonic) on the host whose boot is ``host``: an engine on the
    # same boot adds the time the message waited to be read (transit_s); 0/"": unknown.
    sent_at: float = 0.0
    host: str = ""


@functools.cache
def this_host() -> str:
    """This machine's boot id: two processes share ``time.monotonic`` exactly when their
    boot ids are equal (a host with no boot id shares it with nobody)."""
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return ""


def stamped(request: Infer) -> Infer:
    """``request`` as sent now: its send time and host, for :func:`transit_s`."""
    return msgspec.structs.replace(request, sent_at=time.monotonic(), host=this_host())


def transit_s(request: Infer) -> float:
    """How long ``request`` waited between its front end's send and now (the engine's
    read): 0 when the sender's clock is not this one's."""
    if not request.host or request.host != this_host():
        return 0.0
    return max(0.0, time.monotonic() - request.sent_at)


class Cancel(msgspec.Struct, tag="cancel", frozen=True):
    """The client of request ``id`` went away: drop it uncomputed if it is still queued."""

    id: int


Method = Literal["status", "plan", "models", "archive", "export_level", "metrics"]


class Call(msgspec.Struct, tag="call", frozen=True):
    """Anything else the front end asks the engine, answered by a :class:`Result`."""

    id: int
    method: Method
    args: dict[str, Any] = {}


class Refused(msgspec.Struct, tag="refused", frozen=True):
    """Requests the front end refused before they reached the engine, to be counted in the
    engine's metrics: (task, outcome, budget kind missed or None, shed for the backlog,
    count)."""

    counts: list[tuple[str, str, str | None, bool, int]]


Request = Infer | Cancel | Call | Refused


class Answered(msgspec.Struct, tag="answered", frozen=True):
    """The answer to :class:`Infer` ``id``; the probabilities follow in the next frame."""

    id: int
    level: int
    units: list[int]
    reason: str
    latency_met: bool | None
    memory_met: bool | None
    predicted_latency_s: float
    measured_latency_s: float
    queue_wait_s: float
    compute_s: float
    engine_s: float  # time the engine held the request, for dvn_ipc_seconds
    shape: tuple[int, ...]
    dtype: str


class Failed(msgspec.Struct, tag="failed", frozen=True):
    """Request ``id`` failed with a typed error (the error shape of docs/api.md)."""

    id: int
    error_type: str
    message: str
    retry_after_s: float | None = None

    def error(self) -> ServeError:
        kind = BY_TYPE.get(self.error_type, ServeError)
        return kind(self.message, retry_after_s=self.retry_after_s)


class Result(msgspec.Struct, tag="result", frozen=True):
    """The value of :class:`Call` ``id``."""

    id: int
    value: Any


Reply = Answered | Failed | Result

_encoder = msgspec.msgpack.Encoder()
_requests = msgspec.msgpack.Decoder(Request)
_replies = msgspec.msgpack.Decoder(Reply)


class MalformedFrame(ValueError):
    """A frame that is not a message of this protocol."""


def encode(message: Request | Reply) -> bytes:
    return _encoder.encode(message)


def decode_request(frame: bytes | memoryview) -> Request:
    """Raises MalformedFrame, naming what was wrong."""
    try:
        return _requests.decode(frame)
    except msgspec.DecodeError as e:  # ValidationError is a DecodeError
        raise MalformedFrame(str(e)) from None


def decode_reply(frame: bytes | memoryview) -> Reply:
    """Raises MalformedFrame, naming what was wrong."""
    try:
        return _replies.decode(frame)
    except msgspec.DecodeError as e:
        raise MalformedFrame(str(e)) from None


def failed(id: int, error: ServeError) -> Failed:
    return Failed(id, error.type, error.message, error.retry_after_s)


ALLOWED_DTYPES = frozenset({"float32"})


def array_from(frame: bytes | memoryview, shape: tuple[int, ...], dtype: str) -> np.ndarray:
    """The array in ``frame`` (no copy), checked against its header.

    Raises MalformedFrame: an unknown dtype, or a frame whose size does not match."""
    if dtype not in ALLOWED_DTYPES:
        raise MalformedFrame(f"array dtype {dtype!r} is not one of {sorted(ALLOWED_DTYPES)}")
    if any(d < 0 for d in shape):
        raise MalformedFrame(f"array shape {shape} has a negative dimension")
    want = int(np.prod(shape, dtype=np.int64)) * np.dtype(dtype).itemsize
    got = memoryview(frame).nbytes
    if got != want:
        raise MalformedFrame(f"array frame holds {got} bytes; shape {shape} {dtype} needs {want}")
    return np.frombuffer(frame, dtype=dtype).reshape(shape)


def answered(id: int, answer: Answer, engine_s: float) -> tuple[Answered, np.ndarray]:
    """The reply to :class:`Infer` ``id`` and its probabilities' frame; ``engine_s``: how
    long the engine held the request."""
    probs = np.ascontiguousarray(answer.probabilities, dtype=np.float32)
    header = Answered(
        id, answer.level, answer.units, answer.reason, answer.latency_met,
        answer.memory_met, answer.predicted_latency_s, answer.measured_latency_s,
        answer.queue_wait_s, answer.compute_s, engine_s, tuple(probs.shape), "float32",
    )  # fmt: skip
    return header, probs


def answer_of(
    reply: Answered, probs: np.ndarray, entry: TaskEntry, budget: Budget | None
) -> Answer:
    """The :class:`~server.engine.outcome.Answer` an :class:`Answered` reply carries."""
    return Answer(
        task=entry,
        level=reply.level,
        units=reply.units,
        reason=reply.reason,
        probabilities=probs,
        budget=budget,
        latency_met=reply.latency_met,
        memory_met=reply.memory_met,
        predicted_latency_s=reply.predicted_latency_s,
        measured_latency_s=reply.measured_latency_s,
        queue_wait_s=reply.queue_wait_s,
        compute_s=reply.compute_s,
    )
