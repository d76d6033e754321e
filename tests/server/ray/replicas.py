"""What the real-Ray tests' replicas run and the tests send them: forward wrappers
(pickled to the replicas by reference to this module) and a request helper.

Which replica ran a forward is read from a :class:`Ledger` forward wrapper: each forward
appends its process id to a file; the one replica that claims the ``slow`` file first
(every replica, with ``all_slow``) sleeps in every forward while the ``slow-on`` file
exists.
"""

from __future__ import annotations

import os
import socket
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import ray

from server.engine.executor import ForwardFn
from tests.server.helpers import example, npy_bytes

NPY = {"content-type": "application/x-npy"}
SLOW_S = 0.05


@dataclass(frozen=True)
class Ledger:
    """A forward wrapper (pickled to the replicas) that records who ran each forward."""

    directory: str
    all_slow: bool = False  # every replica sleeps while slow-on exists

    def __call__(self, forward: ForwardFn) -> ForwardFn:
        root = Path(self.directory)
        pid = str(os.getpid())
        slow = False
        try:  # the first replica to get here is the one that can be made slow
            fd = os.open(root / "slow", os.O_CREAT | os.O_EXCL | os.O_WRONLY)
            os.write(fd, pid.encode())
            os.close(fd)
            slow = True
        except FileExistsError:
            slow = self.all_slow

        def recorded(task: int, level: int, x: np.ndarray) -> np.ndarray:
            with open(root / "forwards", "a") as f:
                f.write(pid + "\n")
            if slow and (root / "slow-on").exists():
                time.sleep(SLOW_S)
            return forward(task, level, x)

        return recorded


@dataclass(frozen=True)
class Devices:
    """A forward wrapper that writes, once per replica at start-up, the GPUs Ray gave it."""

    directory: str

    def __call__(self, forward: ForwardFn) -> ForwardFn:
        gpus = ",".join(str(g) for g in ray.get_gpu_ids())
        (Path(self.directory) / str(os.getpid())).write_text(gpus)
        return forward


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


async def post(client: httpx.AsyncClient, task: str, seed: int, **params: Any) -> httpx.Response:
    return await client.post(
        f"/infer/{task}", params=params, content=npy_bytes(example(task, seed)), headers=NPY
    )
