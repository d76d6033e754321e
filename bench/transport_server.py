"""The transport benchmark's server (``bench.transport``): one uvicorn process that answers
every infer request with the same fixed body, so what is measured is the client, not a
model. It runs as ``python -m bench.transport --serve PORT`` in its own process.
"""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

import httpx

from bench._process import ROOT, free_port

SHAPE = (3, 32, 32)  # `shapes`' input: the load generator's bodies are 12 KiB .npy files
MODEL = {"name": "bench", "version": "1", "sha256": "0" * 64}
# A `dvn serve` answer of level 4 to one `shapes` example, about 0.5 KiB like the real one.
ANSWER = json.dumps(
    {
        "task": "shapes",
        "level": 4,
        "units": [0, 1, 2, 3],
        "selection": "default",
        "predictions": [{"class_index": 1, "class_name": "circle", "probability": 0.97}],
        "cost": {"params": 104_000, "param_bytes": 416_000, "flops": 21_000_000},
        "model": MODEL,
        "padding": "x" * 200,
    }
).encode()
MODELS = {
    **MODEL,
    "device": "cpu",
    "num_units": 4,
    "param_bytes": 416_000,
    "tasks": [
        {
            "name": "shapes",
            "classes": ["square", "circle"],
            "input_shape": list(SHAPE),
            "preprocessing": {
                "color_mode": "RGB",
                "size": [32, 32],
                "mean": [0.5] * 3,
                "std": [0.5] * 3,
            },
            "unit_order": [0, 1, 2, 3],
            "levels": [],
        }
    ],
}


def _app() -> Any:
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import JSONResponse, Response
    from starlette.routing import Route

    async def infer(request: Request) -> Response:
        await request.body()
        return Response(ANSWER, media_type="application/json")

    async def models(request: Request) -> Response:
        return JSONResponse(MODELS)

    return Starlette(
        routes=[
            Route("/infer/{task}", infer, methods=["POST"]),
            Route("/v1/models", models),
        ]
    )


def serve(port: int) -> None:
    import uvicorn

    uvicorn.run(_app(), host="127.0.0.1", port=port, log_level="warning", lifespan="off")


@contextlib.contextmanager
def running() -> Iterator[str]:
    """Start the server in its own process; yield its URL; stop it."""
    port = free_port()
    cmd = [sys.executable, "-m", "bench.transport", "--serve", str(port)]
    process = subprocess.Popen(cmd, cwd=ROOT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            with contextlib.suppress(httpx.HTTPError):
                httpx.post(url + "/infer/shapes", content=b"", timeout=1)
                break
            if time.monotonic() > deadline or process.poll() is not None:
                raise RuntimeError(f"the transport benchmark's server did not start ({cmd})")
            time.sleep(0.1)
        yield url
    finally:
        process.terminate()
        process.wait(30)
