"""``dvn serve --ray``: the Ray Serve application on a Ray cluster (``--address``) or on a
local Ray started for it, until SIGTERM/SIGINT, when the application is deleted: Ray stops
the replicas gracefully, and each drains (every accepted request answered)."""

from __future__ import annotations

import math
import os
import signal
import threading
from typing import TYPE_CHECKING, Literal

from server.engine.runtime import pick_device
from server.logs import SERVER
from server.settings import Settings

if TYPE_CHECKING:
    from server.ray.app import RayOptions

APP_NAME = "dvn"


def default_replicas(settings: Settings) -> int:
    """One replica per local GPU when serving on CUDA, else one."""
    import torch

    if pick_device(settings.device).type == "cuda":
        return max(1, torch.cuda.device_count())
    return 1


def local_share(replicas: int, ingress_cpus: float = 0.25) -> float:
    """CPUs a replica reserves on a local Ray: the cores less the ingress's, shared, at
    most one (a replica's torch threads are DVN_TORCH_THREADS, not this)."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    share = ((cores or 1) - ingress_cpus) / replicas
    return min(1.0, max(0.05, math.floor(share * 100) / 100))  # floor: the sum must fit


def layout(
    settings: Settings,
    replicas: int | None,
    address: str | None,
    router: Literal["budget", "pow2"] = "budget",
) -> RayOptions:
    """The application's layout: on CUDA a replica per GPU (``replicas`` or every local
    one), each holding one (``num_gpus: 1``) and a core; on CPUs, on a cluster a core a
    replica, on the local Ray a share of the cores (:func:`local_share`)."""
    from server.ray.app import RayOptions

    gpu = pick_device(settings.device).type == "cuda"
    count = replicas or default_replicas(settings)
    return RayOptions(
        replicas=count,
        num_gpus=1.0 if gpu else 0.0,
        num_cpus=1.0 if gpu or address is not None else local_share(count),
        router=router,
    )


def run(
    settings: Settings,
    replicas: int | None,
    address: str | None,
    router: Literal["budget", "pow2"] = "budget",
) -> int:
    """Deploy and serve until a signal; 0 when stopped by one. ``router``: see
    :class:`~server.ray.app.RayOptions`."""
    import ray
    from ray import serve

    from server.ray.app import build_application

    options = layout(settings, replicas, address, router)
    ray.init(address=address, include_dashboard=False)  # None: start a local Ray

    def stop(signum: int, frame: object) -> None:
        raise Stopped(signum)

    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, stop)
    try:
        serve.start(http_options={"host": settings.host, "port": settings.port})
        serve.run(
            build_application(settings, options),
            name=APP_NAME,
            route_prefix="/",
            blocking=False,
        )
        SERVER.info(
            "serving on Ray",
            extra={
                "fields": {
                    "url": f"http://{settings.host}:{settings.port}",
                    "replicas": options.replicas,
                    "address": address or "local",
                    "router": router,
                }
            },
        )
        threading.Event().wait()
    except Stopped:
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, signal.SIG_DFL)  # a second signal kills at once
        SERVER.info("draining the Ray application")
        serve.delete(APP_NAME)  # graceful: every replica drains
        if address is None:
            serve.shutdown()  # type: ignore[no-untyped-call]
    finally:
        ray.shutdown()
    return 0


class Stopped(Exception):
    """SIGTERM or SIGINT: drain and exit (raised from the handler, so that it also ends a
    deployment still waiting for its replicas)."""
