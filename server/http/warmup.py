"""A front end's own warm-up: every decoder and encoder run once on synthetic data, and
every router tried once, so that the first request of each body type and route costs what
later ones do.

Without it the first PNG request of a fresh server paid for Pillow loading its image
plugins (more than the README's 5 ms budget), and the first of every other
kind for the code paths numpy, json and the response encoders take on first use. The
engine warms the model (:mod:`server.engine.runtime`); this is the front end's part, run
in every front-end process, since each has its own interpreter.
"""

from __future__ import annotations

import io
import json
from collections.abc import Iterator

import numpy as np
from fastapi.responses import JSONResponse
from PIL import Image
from starlette.types import ASGIApp, Message, Scope

from model_store.manifest import Manifest, TaskEntry
from model_store.tasks import TaskSpec
from server.budget import parse_budget
from server.engine.outcome import Answer
from server.http.decode import IMAGE_TYPES, JSON_TYPES, NPY_TYPES, check_array, decode
from server.http.encode import infer_body, infer_headers
from server.http.oip_codec import (
    dvn_parameters,
    inference_response,
    input_array,
    normalise_pixels,
    parse_request,
    requested_outputs,
)
from server.http.oip_protocol import FLOAT_DATATYPES, OUTPUT_NAMES, PIXEL_DATATYPE
from server.http.params import parse_infer_query

WARM_BUDGET = "5ms,100KiB"  # the README's example: both kinds of constraint
WARM_EXAMPLES, WARM_PIXELS = 2, 1 << 20  # what the synthetic bodies hold, at most
OIP_BODY = "oip/"  # prefix of the OIP JSON bodies in what warm_codecs reports, by datatype
UNROUTED = "/-/warm-up"  # a path no route takes: routing it tries every route


def npy_bytes(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array)
    return buffer.getvalue()


def image_bytes(spec: TaskSpec, fmt: str) -> Iterator[bytes]:
    """``fmt`` images for ``spec``: at the task's size and twice it (the resize path), in
    its colour mode and in the other one (the conversion path)."""
    height, width = spec.preprocessing.size
    for mode in ("L", "RGB"):
        for scale in (1, 2):
            image = Image.new(
                mode, (width * scale, height * scale), color=128 if mode == "L" else (128, 64, 32)
            )
            buffer = io.BytesIO()
            image.save(buffer, format=fmt)
            yield buffer.getvalue()


def oip_body(spec: TaskSpec, datatype: str) -> bytes:
    shape = [1, *spec.input_shape]
    count = int(np.prod(shape))
    data: list[float] | list[int] = [128] * count if datatype == PIXEL_DATATYPE else [0.5] * count
    doc = {
        "id": "warm-up",
        "parameters": {"budget": WARM_BUDGET, "on_miss": "degrade"},
        "inputs": [{"name": "input", "shape": shape, "datatype": datatype, "data": data}],
        "outputs": [{"name": name} for name in OUTPUT_NAMES],
    }
    return json.dumps(doc).encode()


def synthetic_answer(entry: TaskEntry, examples: int) -> Answer:
    classes = len(entry.classes)
    level = entry.levels[0]
    return Answer(
        task=entry,
        level=level.level,
        units=list(level.units),
        reason="warm-up",
        probabilities=np.full((examples, classes), 1.0 / classes, dtype=np.float32),
        budget=parse_budget(WARM_BUDGET),
        latency_met=True,
        memory_met=True,
        predicted_latency_s=0.0,
        measured_latency_s=0.0,
        queue_wait_s=0.0,
        compute_s=0.0,
    )


def warm_codecs(manifest: Manifest, specs: dict[str, TaskSpec]) -> set[str]:
    """Decode a synthetic body of every media type the front end takes (v1: JSON, .npy,
    PNG, JPEG; Open Inference Protocol: JSON of each input datatype) for every task, and
    encode a synthetic answer of each protocol. Returns the body types it decoded (the
    media types, and ``oip/<datatype>``).

    Raises:
        ServeError: a synthetic body refused: a bug in the decoders or here.
    """
    # Not the server's limits, which could refuse a synthetic body: these are warm-up's own.
    limits = {"max_examples": WARM_EXAMPLES, "max_image_pixels": WARM_PIXELS}
    parse_infer_query({"budget": WARM_BUDGET, "top_k": "3", "on_miss": "degrade"})
    decoded: set[str] = set()
    for entry in manifest.tasks:
        spec = specs[entry.name]
        example = np.zeros(spec.input_shape, dtype=np.float32)
        bodies: list[tuple[str, bytes]] = [
            *((kind, json.dumps({"inputs": example.tolist()}).encode()) for kind in JSON_TYPES),
            *((kind, npy_bytes(example[None])) for kind in NPY_TYPES),
            *(
                (kind, image)
                for kind, fmt in IMAGE_TYPES.items()
                for image in image_bytes(spec, fmt)
            ),
        ]
        for kind, body in bodies:
            decode(body, kind, spec, **limits)
            decoded.add(kind)
        for datatype in (*FLOAT_DATATYPES, PIXEL_DATATYPE):
            request = parse_request(oip_body(spec, datatype))
            dvn_parameters(request.parameters)
            requested_outputs(request, entry.name)
            array, pixels = input_array(request, entry.name)
            inputs = check_array(array, spec, max_examples=WARM_EXAMPLES)
            if pixels:
                normalise_pixels(inputs.array, spec)
            decoded.add(OIP_BODY + datatype)
        for examples in (1, 2):
            answer = synthetic_answer(entry, examples)
            for top_k in (None, 3):
                v1 = infer_body(answer, manifest, "warm-up", top_k)
                JSONResponse(v1, headers=infer_headers(answer))
            doc = inference_response(answer, manifest.version, "warm-up", list(OUTPUT_NAMES))
            JSONResponse(doc, headers=infer_headers(answer))
    return decoded


async def warm_routes(router: ASGIApp) -> None:
    """Route one request that no route takes through ``router`` (the app's router, inside
    its middleware: nothing logged or counted), answered 404 to nobody.

    FastAPI builds an included router's route state (a pydantic field per parameter of
    each of its routes) on the first request tried against that router, in each process:
    about 20 ms for the Open Inference Protocol's routes, paid by the first such request
    of a front end that had not served one (docs/decisions.md, cold paths). A path that
    matches nothing is tried against every route, so every router is built here.
    """
    scope: Scope = {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "GET",
        "scheme": "http", "path": UNROUTED, "raw_path": UNROUTED.encode(), "root_path": "",
        "query_string": b"", "headers": [], "client": None, "server": None,
    }  # fmt: skip

    async def receive() -> Message:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: Message) -> None:
        return None

    await router(scope, receive, send)
