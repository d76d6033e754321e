"""The processes' CPU priority (server/priority.py)."""

from __future__ import annotations

import logging
import os
import subprocess
import sys

import pytest

from server import priority

THREADS_AFTER_RENICE = """
import os, threading
from server.priority import renice
started = threading.Event()
hold = threading.Event()
def body():
    started.set()
    hold.wait()
t = threading.Thread(target=body)
t.start()
started.wait()
now = renice(2, variable="DVN_FRONTEND_NICE")
nices = sorted({os.getpriority(os.PRIO_PROCESS, int(x)) for x in os.listdir("/proc/self/task")})
hold.set()
t.join()
print(now, nices)
"""


def test_renice_moves_every_thread_the_process_has() -> None:
    ours = os.getpriority(os.PRIO_PROCESS, 0)
    out = subprocess.run(
        [sys.executable, "-c", THREADS_AFTER_RENICE], capture_output=True, text=True, check=True
    ).stdout
    want = min(19, ours + 2)
    assert out.strip() == f"{want} [{want}]"


def test_a_raise_without_the_capability_is_logged_and_kept(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def refuse(which: int, who: int, value: int) -> None:
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(priority.os, "setpriority", refuse)
    ours = os.getpriority(os.PRIO_PROCESS, 0)
    with caplog.at_level(logging.WARNING, logger="dvn.server"):
        assert priority.renice(-5, variable="DVN_ENGINE_NICE") == ours
    want = max(-20, ours - 5)
    assert caplog.messages == [
        f"DVN_ENGINE_NICE=-5 asks for niceness {want}, which needs CAP_SYS_NICE; running at {ours}"
    ]


def test_no_increment_changes_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    def never(which: int, who: int, value: int) -> None:
        raise AssertionError("setpriority called")

    monkeypatch.setattr(priority.os, "setpriority", never)
    assert priority.renice(0, variable="DVN_ENGINE_NICE") == os.getpriority(os.PRIO_PROCESS, 0)
