"""``dvn serve``: the process tree of server/launcher.py (its engine loads and verifies the
checkpoint before any front end starts), or with ``--workers 0`` one uvicorn process that
loads it itself; either way a bad checkpoint is refused before anything is served (exit 1,
the reason first on stderr). On SIGTERM/SIGINT a graceful drain: readiness goes 503, new
requests get 503, accepted ones are answered, then the process exits 0 (a second signal
exits at once)."""

from __future__ import annotations

import argparse
import math
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from server.settings import Settings

EXAMPLES = """examples:
  dvn serve                                   # the shipped standard checkpoint on 127.0.0.1:8000
  dvn serve --checkpoint runs/mine --host 0.0.0.0 --port 8080
  DVN_MAX_BATCH_SIZE=64 DVN_API_KEYS=secret1,secret2 dvn serve --device cuda
  dvn serve --ray --replicas 2                # Ray Serve: 2 engine replicas, a local Ray
  dvn serve --ray --address ray://head:10001  # on a Ray cluster (docs/deploy.md)

Every setting is also an environment variable with the DVN_ prefix (docs/configuration.md).
"""


def register(sub: Any) -> None:
    p = sub.add_parser(
        "serve",
        help="serve a DVN checkpoint over HTTP",
        description="Serve every task of a DVN checkpoint at the level each request's budget allows.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--checkpoint", help="checkpoint directory (default: the shipped standard checkpoint)"
    )
    p.add_argument("--host", help="address to bind (default 127.0.0.1)")
    p.add_argument("--port", type=int, help="port (default 8000; 0 picks a free one)")
    p.add_argument("--device", help="auto (default: CUDA when present), cpu, cuda, cuda:N")
    p.add_argument("--max-batch-size", type=int, help="examples per forward (default 32)")
    # retired: accepted, ignored with a warning (server/settings.py, RETIRED)
    p.add_argument("--max-batch-delay-ms", type=float, help=argparse.SUPPRESS)
    p.add_argument("--max-queue-size", type=int, help="requests per level queue (default 256)")
    p.add_argument(
        "--max-inflight", type=int, help="inference requests handled at once (default 512)"
    )
    p.add_argument("--drain-timeout-s", type=float, help="longest drain on SIGTERM (default 30)")
    p.add_argument(
        "--workers",
        type=int,
        help="HTTP front-end processes beside the one engine process (default: half the "
        "cores on a CPU, cores - 1 on a GPU); 0: one process does everything",
    )
    p.add_argument(
        "--ray",
        action="store_true",
        help="serve on Ray Serve: one engine replica per device, many machines (docs/deploy.md)",
    )
    p.add_argument(
        "--replicas",
        type=int,
        help="with --ray: engine replicas (default: one per local GPU, else 1)",
    )
    p.add_argument(
        "--address",
        help="with --ray: the Ray cluster to join (e.g. ray://head:10001, auto); "
        "default: start a local Ray",
    )
    p.add_argument(
        "--router",
        choices=["budget", "pow2"],
        help="with --ray: replica choice, budget (default: the budget-aware router) or pow2 "
        "(Ray's default power of two choices, a baseline)",
    )
    p.add_argument("--log-json", action="store_true", default=None, help="JSON log lines")
    p.add_argument("--log-level", choices=["debug", "info", "warning", "error"])
    p.set_defaults(handler=_serve)


def _serve(args: argparse.Namespace) -> int:
    from server.launcher import Supervisor
    from server.logs import SERVER, configure_logging
    from server.settings import load_settings, retired_in_use

    settings = load_settings(
        checkpoint=args.checkpoint,
        host=args.host,
        port=args.port,
        device=args.device,
        max_batch_size=args.max_batch_size,
        max_queue_size=args.max_queue_size,
        max_inflight=args.max_inflight,
        drain_timeout_s=args.drain_timeout_s,
        log_json=args.log_json,
        log_level=args.log_level,
    )
    configure_logging(settings.log_level, settings.log_json)
    for where, why in retired_in_use(max_batch_delay_ms=args.max_batch_delay_ms):
        SERVER.warning(
            "retired setting ignored: remove it", extra={"fields": {"setting": where, "why": why}}
        )
    if not args.ray and (args.replicas, args.address, args.router) != (None, None, None):
        SERVER.error("--replicas, --address and --router go with --ray")
        return 2
    if args.ray:
        if args.replicas is not None and args.replicas < 1:
            SERVER.error("--replicas must be 1 or more, got %d", args.replicas)
            return 2
        from server.ray.launch import run

        return run(settings, args.replicas, args.address, router=args.router or "budget")
    if args.workers is not None and args.workers < 0:
        SERVER.error("--workers must be 0 (one process) or more front ends, got %d", args.workers)
        return 2
    if args.workers != 0:  # the engine process loads the checkpoint, and refuses a bad one
        return Supervisor(settings, args.workers).run()
    return _serve_in_process(settings)


def _serve_in_process(settings: Settings) -> int:
    """``--workers 0``: the engine in the one front end's process."""
    import uvicorn

    from model_store.checkpoint import load
    from server.engine.runtime import pick_device
    from server.http.app import create_app
    from server.http.serving import DrainingServer
    from server.logs import SERVER
    from server.shutdown import FINAL_GRACE_S

    device = pick_device(settings.device)
    checkpoint = load(settings.checkpoint, device)  # CheckpointError: message, exit 1
    SERVER.info(
        "loaded checkpoint",
        extra={
            "fields": {
                "path": str(settings.checkpoint),
                "name": checkpoint.manifest.name,
                "sha256": checkpoint.manifest.weights_sha256[:12],
                "device": str(device),
            }
        },
    )
    app = create_app(settings, checkpoint=checkpoint)
    config = uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        log_level=settings.log_level,
        access_log=False,  # dvn.access logs one line per request instead
        lifespan="on",
        # The drain happens before uvicorn's shutdown (server/serving.py); this bounds
        # only the last answers after it.
        timeout_graceful_shutdown=math.ceil(FINAL_GRACE_S),
    )
    server = DrainingServer(config, app.state.runtime.drain)
    server.run()
    return 0 if server.started else 1
