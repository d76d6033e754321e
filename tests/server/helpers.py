"""Helpers of the server tests: expected answers, bodies, fault-injecting forwards and
the Prometheus text parser."""

from __future__ import annotations

import contextlib
import io
import threading
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import httpx
import numpy as np
import torch
from PIL import Image
from prometheus_client.parser import text_string_to_metric_families

from model_store.checkpoint import Checkpoint
from server.engine.executor import ForwardFn

# Marker values no warm-up input holds (they are standard normal): a fault-injecting
# forward recognises a request by them.
MARK = 123.0
BLOCK = 321.0


def expected_probs(reference: Checkpoint, task: str, level: int, x: np.ndarray) -> np.ndarray:
    """Softmax of ``reference``'s ``(task, level)`` on ``x`` (B, C, H, W)."""
    model = reference.model
    t = model.config.task_index(task)
    with torch.inference_mode():
        logits = model(torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)), t, level)
        out: np.ndarray = torch.softmax(logits.float(), dim=1).numpy()
    return out


def response_probs(doc: dict[str, Any]) -> np.ndarray:
    return np.asarray([p["probabilities"] for p in doc["predictions"]])


def check_answer(reference: Checkpoint, doc: dict[str, Any], x: np.ndarray) -> None:
    """The response ``doc`` for inputs ``x`` (B, C, H, W) is the model's answer at the level
    it reports, within 1e-5."""
    want = expected_probs(reference, doc["task"], doc["level"], x)
    got = response_probs(doc)
    assert got.shape == want.shape
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-5)
    classes = reference.manifest.task(doc["task"]).classes
    for row, pred in zip(want, doc["predictions"], strict=True):
        assert pred["class_index"] == int(row.argmax())
        assert pred["class_name"] == classes[int(row.argmax())]
        assert abs(pred["probability"] - float(row.max())) <= 1e-5


def image_body(pixels: np.ndarray, fmt: str) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format=fmt)
    return buffer.getvalue()


def npy_bytes(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array)
    return buffer.getvalue()


def example(
    task: str, seed: int, batch: int | None = None, mark: float | None = None
) -> np.ndarray:
    """A float32 example (or batch) of ``task``; ``mark`` goes in its first element, so a
    fault-injecting forward can recognise it."""
    shape = {"digits": (1, 8, 8), "shapes": (3, 16, 16)}[task]
    full = shape if batch is None else (batch, *shape)
    x = np.random.default_rng(seed).standard_normal(full).astype(np.float32)
    if mark is not None:
        x.reshape(-1)[0] = mark
    return x


def holds(value: float) -> Callable[[np.ndarray], bool]:
    return lambda inputs: bool((inputs == value).any())


class Recorder:
    """A forward wrapper that records every batch it sees and acts on batches holding a
    marker value: ``block`` (until :attr:`release` is set), ``raise``, ``nan_input`` (the
    real model run on NaN), ``nan_output`` (the real output with one NaN)."""

    def __init__(self, actions: dict[float, str] | None = None) -> None:
        self.actions = actions or {}
        assert set(self.actions.values()) <= {"block", "raise", "nan_input", "nan_output"}
        self.entered = threading.Event()  # a blocking batch reached the forward
        self.release = threading.Event()
        self.batches: list[tuple[int, int, np.ndarray]] = []
        self._lock = threading.Lock()

    def __call__(self, forward: ForwardFn) -> ForwardFn:
        def wrapped(task: int, level: int, inputs: np.ndarray) -> np.ndarray:
            with self._lock:
                self.batches.append((task, level, inputs.copy()))
            for value, action in self.actions.items():
                if not (inputs == value).any():
                    continue
                if action == "block":
                    self.entered.set()
                    if not self.release.wait(timeout=30):
                        raise TimeoutError("the test never released the forward")
                elif action == "raise":
                    raise RuntimeError("injected fault")
                elif action == "nan_input":
                    return forward(task, level, np.full_like(inputs, np.nan))
                else:
                    out = forward(task, level, inputs)
                    out[0, 0] = np.nan
                    return out
            return forward(task, level, inputs)

        return wrapped

    def clear(self) -> None:
        with self._lock:
            self.batches.clear()

    def seen(self, predicate: Callable[[np.ndarray], bool]) -> list[tuple[int, int]]:
        """(task index, level) of every batch whose inputs satisfy ``predicate``."""
        with self._lock:
            return [(t, lv) for t, lv, x in self.batches if predicate(x)]


def error_of(response: httpx.Response) -> tuple[int, str, str]:
    """(status, error.type, error.message) of an error response, checking its shape."""
    doc = response.json()
    assert set(doc) == {"error"}, doc
    assert set(doc["error"]) == {"type", "message"}, doc
    return response.status_code, doc["error"]["type"], doc["error"]["message"]


Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def parse_metrics(text: str) -> Samples:
    """Every sample of a Prometheus text page: (name, sorted labels) -> value."""
    found: Samples = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            found[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return found


def sample(samples: Samples, name: str, **labels: str) -> float | None:
    return samples.get((name, tuple(sorted(labels.items()))))


def series(samples: Samples, name: str) -> dict[tuple[tuple[str, str], ...], float]:
    """Every sample called ``name`` (labels -> value)."""
    return {labels: v for (n, labels), v in samples.items() if n == name}


@contextlib.contextmanager
def predicted(client: Any, task: str, levels: Iterable[int], seconds: float) -> Iterator[None]:
    """While inside, the server's latency profile predicts ``seconds`` per forward at
    ``levels`` of ``task`` (whatever the batch size); restored on leaving."""
    table = client.app.state.runtime.service.profile.table
    saved = {k: dict(v) for k, v in table.items()}
    for level in levels:
        table[(task, level)] = dict.fromkeys(table[(task, level)], seconds)
    try:
        yield
    finally:
        table.clear()
        table.update(saved)
