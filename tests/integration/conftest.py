"""Fixtures and helpers of the real-process tests: a checkpoint whose forward is slow, and
reading a server's ``/metrics``.

Why a slow checkpoint: on the shared 2-core test box the tiny checkpoint's forward (about a
millisecond) costs less than the HTTP handling around it, and a Python load generator
spends as much CPU per request as the server does. Queues then never fill however fast the
load generator tries to send: the client is the bottleneck. A server bound by its executor
is what load shedding, deadlines and disconnects are about, so these tests give it a
forward of tens to hundreds of milliseconds, while keeping the requests small.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import httpx
import pytest
import torch

from bench._process import ServerProcess
from model_store.arch import Backbone, DVNConfig
from model_store.checkpoint import save
from model_store.manifest import Accuracy
from model_store.model import DVN
from model_store.tasks import Preprocessing, TaskSpec
from tests.server.helpers import parse_metrics

HEAVY_TASK = TaskSpec(
    name="heavy",
    classes=tuple(f"class{i}" for i in range(8)),
    input_shape=(3, 32, 32),
    preprocessing=Preprocessing(
        color_mode="RGB", size=(32, 32), mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25)
    ),
)
# One wide block at full resolution: 2.4 GFLOP an example at level 4, 0.15 at level 1, with
# 1.2 M parameters (a 4.6 MiB checkpoint).
HEAVY_BACKBONE = Backbone(widths=(256,), blocks=(1,), num_units=4)


@pytest.fixture(scope="session")
def heavy_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A random-weights DVN of one task, ``heavy`` (3x32x32 inputs, 8 classes, 4 levels),
    built like ``tiny_checkpoint``, whose forward takes tens (level 1) to hundreds (level
    4, batch 4) of milliseconds on a CPU. Read-only."""
    torch.manual_seed(0)
    model = DVN(DVNConfig.create(HEAVY_BACKBONE, (HEAVY_TASK,), arch_name="heavy-test"))
    model.eval()
    accuracy = {
        ("heavy", level): Accuracy(value=0.5 + 0.1 * level, examples=100, data="test")
        for level in range(1, 5)
    }
    out = tmp_path_factory.mktemp("heavy-ckpt") / "heavy"
    save(model, out, name="heavy", version="0.0.1", accuracy=accuracy)
    return out


Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def scrape(server: ServerProcess) -> Samples:
    """Every sample of the server's ``/metrics``."""
    return parse_metrics(httpx.get(server.url + "/metrics", timeout=30).text)


def total(samples: Samples, name: str, **labels: str) -> float:
    """The sum of ``name`` over every series whose labels include ``labels``."""
    return sum(
        value
        for (n, series_labels), value in samples.items()
        if n == name and labels.items() <= dict(series_labels).items()
    )


def by_label(samples: Samples, name: str, label: str) -> Counter[str]:
    """``name`` summed per value of ``label``."""
    found: Counter[str] = Counter()
    for (n, series_labels), value in samples.items():
        if n == name:
            found[dict(series_labels)[label]] += int(value)
    return found
