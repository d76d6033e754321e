"""``dvn serve --ray`` flags, refused before anything starts (no Ray needed)."""

from __future__ import annotations

import pytest

from dvn.cli import main
from server.ray.launch import local_share


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
