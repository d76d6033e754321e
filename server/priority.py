"""CPU priority of the server's processes (docs/decisions.md, CPU priority): the engine's
forwards before the front ends' HTTP work. Past capacity a front end parses and refuses
every arrival; on cores it shares with the engine, that work would otherwise take CPU from
the requests already admitted, and they would miss their budgets too.

Linux keeps a niceness per thread, and a thread starts with its creator's: :func:`renice`
moves every thread the process has now, so call it first thing in a process's ``main``."""

from __future__ import annotations

import os
from pathlib import Path

from server.logs import SERVER


def _threads() -> list[int]:
    """This process's thread ids (its own pid where /proc is not there)."""
    try:
        return [int(t) for t in os.listdir(Path("/proc/self/task"))]
    except OSError:
        return [os.getpid()]


def renice(increment: int, *, variable: str) -> int:
    """Add ``increment`` to the niceness of every thread of this process (positive: lower
    priority). A negative one needs CAP_SYS_NICE (or root): without it the niceness stays,
    and a warning names ``variable``, the setting that asked. Returns the niceness now."""
    current = os.getpriority(os.PRIO_PROCESS, 0)
    if increment == 0:
        return current
    target = max(-20, min(19, current + increment))
    try:
        for tid in _threads():
            os.setpriority(os.PRIO_PROCESS, tid, target)
    except PermissionError:
        SERVER.warning(
            "%s=%d asks for niceness %d, which needs CAP_SYS_NICE; running at %d",
            variable,
            increment,
            target,
            current,
        )
        return current
    return target
