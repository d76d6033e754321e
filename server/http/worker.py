"""One front-end process: uvicorn on the listening socket that ``dvn serve`` bound and
shares between its front ends, talking to the engine process through an
:class:`~server.engine.mp_client.MPClient`. On SIGTERM it drains (new requests 503, every
accepted one answered) and exits 0.

Run by ``dvn serve`` (``server.launcher``)::

    python -m server.http.worker --fd 3 --address ipc:///tmp/dvn-x/engine.sock --settings '{...}'
"""

from __future__ import annotations

import argparse
import math
import socket
import sys

import uvicorn

from model_store.manifest import config_from_manifest, read_manifest
from server.engine.mp_client import MPClient
from server.http.app import create_app, drain_frontend
from server.http.serving import DrainingServer
from server.logs import configure_logging
from server.priority import renice
from server.settings import Settings
from server.shutdown import FINAL_GRACE_S, FRONTEND_EXTRA_S


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m server.http.worker")
    parser.add_argument("--fd", type=int, required=True, help="the listening socket's fd")
    parser.add_argument("--address", required=True, help="the engine's ZMQ address")
    parser.add_argument("--settings", required=True, help="the server's Settings as JSON")
    args = parser.parse_args(argv)
    settings = Settings.model_validate_json(args.settings)
    configure_logging(settings.log_level, settings.log_json)
    renice(settings.frontend_nice, variable="DVN_FRONTEND_NICE")  # before any thread starts
    manifest = read_manifest(settings.checkpoint)  # checked by dvn serve before it bound
    specs = {s.name: s for s in config_from_manifest(manifest).tasks}
    client = MPClient(args.address, manifest, specs, max_inflight=settings.max_inflight)
    app = create_app(settings, engine=client)
    config = uvicorn.Config(
        app,
        log_level=settings.log_level,
        access_log=False,  # dvn.access logs one line per request instead
        lifespan="on",
        timeout_graceful_shutdown=math.ceil(FINAL_GRACE_S),
    )
    fe = app.state.frontend
    # The engine answers everything it holds within its drain timeout and grace (503 past
    # it); this front end waits that long for those answers, and a little more.
    wait_s = settings.drain_timeout_s + FINAL_GRACE_S + FRONTEND_EXTRA_S
    server = DrainingServer(config, lambda: drain_frontend(fe, wait_s))
    listener = socket.socket(fileno=args.fd)
    server.run(sockets=[listener])
    return 0 if server.started else 1


if __name__ == "__main__":
    sys.exit(main())
