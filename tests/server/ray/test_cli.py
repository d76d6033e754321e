"""``dvn serve --ray``: its flags, refused before anything starts (no Ray needed), and the
layout it asks Ray for."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from dvn.cli import main
from server.ray.launch import layout, local_share
from tests.conftest import server_settings


@pytest.mark.parametrize(
    "argv",
    [
        ["serve", "--replicas", "2"],
        ["serve", "--address", "ray://head:10001"],
        ["serve", "--ray", "--replicas", "0"],
        ["serve", "--router", "pow2"],
    ],
)
def test_ray_flags_refused(argv: list[str], caplog: pytest.LogCaptureFixture) -> None:
    assert main(argv) == 2


@pytest.mark.parametrize(("replicas", "cores", "want"), [(2, 2, 0.87), (1, 2, 1.0), (8, 2, 0.21)])
def test_local_share_fits_the_cores(
    replicas: int, cores: int, want: float, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("os.sched_getaffinity", lambda _: set(range(cores)))
    share = local_share(replicas)
    assert share == want
    assert share * replicas + 0.25 <= cores


@pytest.mark.parametrize(
    ("device", "replicas", "address", "want"),
    [
        ("cuda", None, None, (4, 1.0, 1.0)),  # a replica per local GPU, each holding one
        ("cuda", 2, "ray://head:10001", (2, 1.0, 1.0)),
        ("cpu", None, None, (1, 0.0, 1.0)),  # the local share of 2 cores: at most one
        ("cpu", 3, "ray://head:10001", (3, 0.0, 1.0)),  # a core each on a cluster
    ],
)
def test_layout_is_a_gpu_a_replica_on_cuda(
    device: str,
    replicas: int | None,
    address: str | None,
    want: tuple[int, float, float],
    tiny_checkpoint: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    pytest.importorskip("ray.serve")
    monkeypatch.setattr("server.ray.launch.pick_device", lambda _: torch.device(device))
    monkeypatch.setattr("torch.cuda.device_count", lambda: 4)
    monkeypatch.setattr("os.sched_getaffinity", lambda _: {0, 1})
    options = layout(server_settings(tiny_checkpoint), replicas, address)
    assert (options.replicas, options.num_gpus, options.num_cpus) == want
