"""The peer servers ``dvn bench peers`` measures dvn-serve against: the same checkpoint, task
and level behind (a) LitServe with batching on and (b) a plain FastAPI endpoint (one uvicorn
worker, no batching, the forward run in the endpoint).

Both speak the part of dvn's API the load generator uses, so the same generator, bodies and
parsing load every server: ``GET /v1/models`` answers dvn's own JSON for the task (read from
``--models-json``, saved by the benchmark from the dvn server it runs), ``POST
/infer/{task}`` takes the same ``.npy`` body and answers the fields ``InferResult`` reads
(task, level, units, selection, predictions with every probability, cost, model). Each peer
serves the one level it was started with (``?level=`` is not read: LitServe does not pass
query parameters to ``decode_request``).

    python -m bench.peer_servers litserve --task shapes --level 4 --port 8100 --models-json m.json

No ``from __future__ import annotations`` here: LitServe reads the annotation of
``decode_request``'s ``request`` at run time as the type of its FastAPI endpoint parameter.
"""

import argparse
import io
import json
import os
import signal
import sys
from pathlib import Path
from types import FrameType
from typing import Annotated, Any

import litserve as ls
import numpy as np
import torch
from fastapi import Body, FastAPI, HTTPException, Request
from fastapi.responses import JSONResponse

from model_store.checkpoint import Checkpoint, load
from model_store.inference import LevelPlan

MAX_BATCH_SIZE = 32
BATCH_TIMEOUT_MS = 2.0
# LitServe parses the body as JSON when ``decode_request``'s ``request`` is annotated
# ``Request`` (or not at all); any other annotation becomes the FastAPI endpoint's parameter.
# ``bytes`` from ``Body()`` is the raw body for a non-JSON content type such as
# ``application/x-npy``, and bytes are what LitServe's queue to its worker can pickle.
NpyBody = Annotated[bytes, Body(media_type="application/x-npy")]


class PinnedLevel:
    """One (task, level) of a checkpoint: the decode, forward and encode every peer shares,
    so the peers differ from dvn-serve only in how they serve, not in what they compute."""

    def __init__(self, checkpoint: Path, task: str, level: int, device: str) -> None:
        self.device = torch.device(device)
        self.checkpoint: Checkpoint = load(checkpoint, self.device)
        self.task_index = self.checkpoint.model.config.task_index(task)
        self.entry = self.checkpoint.manifest.tasks[self.task_index]
        if not 1 <= level <= len(self.entry.levels):
            raise ValueError(f"task {task!r} has levels 1..{len(self.entry.levels)}, not {level}")
        self.level = self.entry.levels[level - 1]
        self.shape = tuple(self.entry.input_shape)
        # The forward dvn serve runs (model_store.inference), so the peers compute exactly
        # what it computes, as fast, and differ only in how they serve.
        self.plan = LevelPlan.build(self.checkpoint.model, self.task_index, level)

    def decode(self, body: bytes) -> torch.Tensor:
        """One example ``(C, H, W)`` from a ``.npy`` body of shape ``(1, C, H, W)`` or
        ``(C, H, W)``; an HTTP 400 in dvn's error shape otherwise."""
        try:
            array = np.load(io.BytesIO(body), allow_pickle=False)
        except (ValueError, OSError, EOFError) as e:
            raise _bad_input(f"body is not a .npy array: {e}") from e
        if array.shape == (1, *self.shape):
            array = array[0]
        if array.shape != self.shape or array.dtype.kind != "f":
            raise _bad_input(f"expected one float example of shape {self.shape}")
        return torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Class probabilities ``(B, classes)`` of a batch ``(B, C, H, W)``."""
        with torch.inference_mode():
            logits = self.plan(x.to(self.device))
            return torch.softmax(logits.float(), dim=1).cpu()

    def encode(self, probabilities: list[list[float]]) -> dict[str, Any]:
        """The response body: the fields of dvn's ``POST /infer`` answer for a pinned level."""
        classes = self.entry.classes
        predictions = []
        for row in probabilities:
            best = max(range(len(row)), key=row.__getitem__)
            predictions.append(
                {
                    "class_index": best,
                    "class_name": classes[best],
                    "probability": row[best],
                    "probabilities": row,
                }
            )
        m = self.checkpoint.manifest
        return {
            "task": self.entry.name,
            "level": self.level.level,
            "units": list(self.level.units),
            "selection": "pinned",
            "predictions": predictions,
            "budget": None,
            "cost": {
                "params": self.level.params,
                "param_bytes": self.level.param_bytes,
                "flops": self.level.flops,
            },
            "model": {"name": m.name, "version": m.version, "sha256": m.weights_sha256},
        }


def _bad_input(message: str) -> HTTPException:
    return HTTPException(400, detail={"type": "invalid_input", "message": message})


def _add_dvn_routes(app: FastAPI, models_json: Path) -> None:
    """dvn's ``GET /v1/models`` answer for the task (read when asked: the benchmark writes
    it once its dvn server is up, which may be after the peer started), and dvn's error
    shape for HTTP errors."""

    @app.get("/v1/models")
    async def v1_models() -> JSONResponse:
        return JSONResponse(json.loads(models_json.read_text()))

    async def error_shape(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, HTTPException)
        detail = exc.detail if isinstance(exc.detail, dict) else {"type": "http_error"}
        return JSONResponse({"error": detail}, status_code=exc.status_code)

    app.add_exception_handler(HTTPException, error_shape)


def plain_fastapi_app(served: PinnedLevel, models_json: Path) -> FastAPI:
    """A plain FastAPI app: the forward runs in the ``async`` endpoint itself, so requests
    are computed one at a time on the event loop (a ``def`` endpoint would run up to 40
    forwards at once in threads, each with torch's own thread pool, oversubscribing the
    cores)."""
    app = FastAPI()
    _add_dvn_routes(app, models_json)

    @app.get("/readyz")
    async def readyz() -> dict[str, str]:
        return {"status": "ready"}

    @app.post("/infer/{task}")
    async def infer(task: str, request: Request) -> JSONResponse:
        if task != served.entry.name:
            error = {"type": "unknown_task", "message": f"this peer serves {served.entry.name}"}
            return JSONResponse({"error": error}, status_code=404)
        x = served.decode(await request.body())
        return JSONResponse(served.encode(served.forward(x[None]).tolist()))

    return app


class PinnedLevelAPI(ls.LitAPI):  # type: ignore[misc]  # litserve ships no types
    """LitServe's hooks over one pinned level: setup loads the checkpoint in the worker,
    decode_request takes the raw ``.npy`` body, batch stacks, predict runs the forward and
    softmax, unbatch splits the rows, encode_response builds dvn's answer."""

    def __init__(self, checkpoint: str, task: str, level: int, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.where = (checkpoint, task, level)

    def setup(self, device: str) -> None:
        checkpoint, task, level = self.where
        self.served = PinnedLevel(Path(checkpoint), task, level, device)

    def decode_request(self, request: NpyBody) -> torch.Tensor:
        return self.served.decode(request)

    def batch(self, inputs: list[torch.Tensor]) -> torch.Tensor:
        return torch.stack(inputs)

    def predict(self, x: torch.Tensor) -> torch.Tensor:
        return self.served.forward(x)

    def unbatch(self, output: torch.Tensor) -> list[list[float]]:
        rows: list[list[float]] = output.tolist()
        return rows

    # No return annotation on purpose: LitServe makes it the endpoint's response type, and
    # none keeps its default (the dict serialised as JSON, no response model to validate).
    def encode_response(self, output: list[float]):  # type: ignore[no-untyped-def]
        return self.served.encode([output])


def _litserve_server(args: argparse.Namespace) -> Any:
    api = PinnedLevelAPI(
        args.checkpoint,
        args.task,
        args.level,
        max_batch_size=args.max_batch_size,
        batch_timeout=args.batch_timeout_ms / 1000,
        api_path=f"/infer/{args.task}",
    )
    server = ls.LitServer(api, accelerator=args.accelerator, workers_per_device=1, timeout=30)
    _add_dvn_routes(server.app, Path(args.models_json))
    return server


def _stop_on_sigterm() -> None:
    """LitServe shuts its workers down on KeyboardInterrupt only; make SIGTERM one too, in
    this process only (its forked API servers inherit the handler)."""
    main_pid = os.getpid()

    def interrupt(signum: int, frame: FrameType | None) -> None:
        if os.getpid() == main_pid:
            raise KeyboardInterrupt
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        os.kill(os.getpid(), signal.SIGTERM)

    signal.signal(signal.SIGTERM, interrupt)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.peer_servers", description=__doc__)
    p.add_argument("kind", choices=["litserve", "fastapi"])
    p.add_argument("--checkpoint", required=True)
    p.add_argument("--task", required=True)
    p.add_argument("--level", type=int, required=True)
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--models-json", required=True, help="dvn's GET /v1/models JSON to answer")
    p.add_argument("--max-batch-size", type=int, default=MAX_BATCH_SIZE)
    p.add_argument("--batch-timeout-ms", type=float, default=BATCH_TIMEOUT_MS)
    p.add_argument("--accelerator", default="auto", help="LitServe: auto, cpu or cuda")
    args = p.parse_args(argv)
    if args.kind == "fastapi":
        import uvicorn

        device = "cuda" if args.accelerator != "cpu" and torch.cuda.is_available() else "cpu"
        served = PinnedLevel(Path(args.checkpoint), args.task, args.level, device)
        app = plain_fastapi_app(served, Path(args.models_json))
        uvicorn.run(app, host="127.0.0.1", port=args.port, log_level="warning", access_log=False)
        return 0
    _stop_on_sigterm()
    server = _litserve_server(args)
    server.run(
        host="127.0.0.1",
        port=args.port,
        log_level="warning",
        generate_client_file=False,  # else it writes client.py into the working directory
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
