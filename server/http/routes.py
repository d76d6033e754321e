"""The v1 HTTP API: ``/infer``, ``/plan``, ``/v1/models`` and export (docs/api.md)."""

from __future__ import annotations

import hashlib
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import JSONResponse, Response

from model_store.manifest import TaskEntry
from server.budget import BUDGET_LIMITS, MEMORY_BUDGET_PATTERN, parse_budget
from server.engine.outcome import ClientDisconnected
from server.engine.selection import check_level
from server.errors import ALL_ERRORS
from server.http.decode import IMAGE_TYPES, NPY_TYPES, decode
from server.http.encode import infer_body, infer_headers
from server.http.frontend import FrontEnd
from server.http.params import (
    BUDGET_DOC,
    BUDGET_SCHEMA,
    INFER_QUERY_DOC,
    LEVEL_DOC,
    LEVEL_SCHEMA,
    MAX_BUDGET_CHARS,
    ON_MISS_DOC,
    param_doc,
    parse_infer_query,
    parse_level,
)
from server.http.pipeline import Parsed, elapsed, frontend, read_body
from server.http.pipeline import infer as run_inference
from server.http.protocol import ErrorBody, InferResponse, ModelsResponse, PlanResponse


async def ready_frontend(request: Request) -> FrontEnd:
    """The front end, or 503 before the engine is ready and while draining."""
    fe = frontend(request)
    fe.check_ready()
    return fe


FrontEndDep = Annotated[FrontEnd, Depends(ready_frontend)]
# The pattern documents the grammar; parse_budget checks it, with messages that say how to
# fix a budget (FastAPI's would quote the regular expression).
BudgetQuery = Annotated[
    str | None,
    Query(
        description=BUDGET_DOC,
        max_length=MAX_BUDGET_CHARS,
        json_schema_extra={"pattern": BUDGET_SCHEMA["pattern"]},
    ),
]
OnMissQuery = Annotated[Literal["degrade", "reject"], Query(description=ON_MISS_DOC)]

ERRORS: dict[int | str, dict[str, Any]] = {
    status: {
        "model": ErrorBody,
        "description": "; ".join(e.type for e in ALL_ERRORS if e.status == status),
    }
    for status in sorted({e.status for e in ALL_ERRORS})
}
BINARY = {"type": "string", "format": "binary"}
INFER_BODY = {
    "requestBody": {
        "required": True,
        "description": (
            'One example or a batch: JSON `{"inputs": ...}`, a .npy array, or an image. The '
            "shape is the task's `input_shape` (GET /v1/models) for one example, or a batch "
            "(B, *input_shape) of at most DVN_MAX_REQUEST_BATCH; with one channel, the channel "
            "dimension may be left out. Values are model-space numbers, finite as float32 "
            "(.npy: a float16, float32 or float64 array); an image is resized and normalised "
            "as the task's preprocessing says. Anything else is 400 invalid_input, another "
            "content type 415."
        ),
        "content": {
            "application/json": {
                "schema": {
                    "type": "object",
                    "required": ["inputs"],
                    "properties": {
                        "inputs": {
                            "type": "array",
                            "minItems": 1,
                            # nested arrays of numbers: at least (H, W) deep
                            "items": {"type": "array", "minItems": 1},
                        }
                    },
                }
            },
            # every type decode() takes, and no other (415)
            **{kind: {"schema": BINARY} for kind in (*NPY_TYPES, *IMAGE_TYPES)},
        },
    }
}

router = APIRouter()


@router.post(
    "/infer/{task}",
    summary="Classify one example or a batch at the level the budget allows",
    response_model=InferResponse,
    responses=ERRORS,
    openapi_extra={**INFER_BODY, "parameters": INFER_QUERY_DOC},
    tags=["inference"],
)
async def infer(task: str, request: Request) -> Response:
    # The query is read by hand, not by FastAPI's dependency solver: this is the hot path
    # (server/http/params.py).
    query = None

    async def read(entry: TaskEntry, fe: FrontEnd) -> Parsed:
        nonlocal query
        query = parse_infer_query(request.query_params)
        parsed = parse_budget(query.budget)
        check_level(entry, query.level)
        if query.level is None and query.on_miss == "degrade":  # else: as asked, or 503
            # before the body is read: a refusal costs no body
            fe.client.admit(entry.name, parsed, elapsed(request))
        settings = fe.settings
        body = await read_body(request, settings.max_body_bytes)
        inputs = decode(
            body,
            request.headers.get("content-type"),
            fe.spec(entry.name),
            max_examples=settings.max_request_batch,
            max_image_pixels=settings.max_image_pixels,
        )
        return Parsed(query.budget, parsed, query.level, query.on_miss, inputs.array)

    log = request.scope.setdefault("state", {}).setdefault("log", {})
    log.update(task=task, budget=request.query_params.get("budget"))
    try:
        answer = await run_inference(request, task, read)
    except ClientDisconnected:
        # Routine (a client timeout): answered with nginx's 499, which nobody reads, instead
        # of re-raised, which uvicorn logs as an error with a traceback.
        return Response(status_code=499)
    assert query is not None
    fe = frontend(request)
    body_doc = infer_body(
        answer, fe.client.manifest, request.scope["state"]["request_id"], query.top_k
    )
    return JSONResponse(body_doc, headers=infer_headers(answer))


@router.get(
    "/plan/{task}",
    summary="Dry run: the level a request would get now, and every level's cost",
    response_model=PlanResponse,
    responses=ERRORS,
    tags=["inference"],
)
async def plan(
    task: str,
    fe: FrontEndDep,
    budget: BudgetQuery = None,
    on_miss: OnMissQuery = "degrade",
    examples: Annotated[int, Query(ge=1, le=4096, description="Examples in the request.")] = 1,
) -> dict[str, Any]:
    entry = fe.task(task)
    parse_budget(budget)  # a bad budget is the front end's 422, not a round trip
    plan: dict[str, Any] = await fe.client.call(
        "plan", task=entry.name, budget=budget, on_miss=on_miss, examples=examples
    )
    return plan


@router.get(
    "/v1/models",
    summary="The loaded checkpoint: tasks, levels, costs, accuracy, profiled latency",
    response_model=ModelsResponse,
    responses=ERRORS,
    tags=["models"],
)
async def models(fe: FrontEndDep) -> dict[str, Any]:
    summary: dict[str, Any] = await fe.client.call("models")
    return summary


EXPORT_RESPONSES: dict[int | str, dict[str, Any]] = {
    **ERRORS,
    200: {
        "description": "A .tar archive holding manifest.json and weights.safetensors.",
        "content": {"application/x-tar": {"schema": {"type": "string", "format": "binary"}}},
    },
}


EXPORT_BUDGET_DOC = param_doc(
    "budget",
    {"type": "string", "maxLength": MAX_BUDGET_CHARS, "pattern": MEMORY_BUDGET_PATTERN},
    "A memory budget alone (B, kB, MB, GB, KiB, MiB, GiB), e.g. `2MiB`: the largest level "
    f"that fits. {BUDGET_LIMITS}",
    required=True,
)


async def archive_response(fe: FrontEnd, entry: TaskEntry, level: int) -> Response:
    data: bytes = await fe.client.call("archive", task=entry.name, level=level)
    name = f"{fe.client.manifest.name}-{entry.name}-level{level}.tar"
    return Response(
        data,
        media_type="application/x-tar",
        headers={
            "Content-Disposition": f'attachment; filename="{name}"',
            "X-DVN-Archive-SHA256": hashlib.sha256(data).hexdigest(),
            "X-DVN-Level": str(level),
            "X-DVN-Units": ",".join(str(u) for u in entry.levels[level - 1].units),
        },
    )


@router.get(
    "/v1/models/{task}/levels/{level}/export",
    summary="One (task, level) as a standalone checkpoint archive",
    response_class=Response,
    responses=EXPORT_RESPONSES,
    tags=["models"],
    # The level is read by hand (parse_level): digits only, as the schema says.
    openapi_extra={
        "parameters": [param_doc("level", LEVEL_SCHEMA, LEVEL_DOC, where="path", required=True)]
    },
)
async def export_level(task: str, request: Request, fe: FrontEndDep) -> Response:
    entry = fe.task(task)
    level = parse_level(request.path_params["level"])
    check_level(entry, level)
    return await archive_response(fe, entry, level)


@router.get(
    "/v1/models/{task}/export",
    summary="The largest level of a task that fits a memory budget, as a checkpoint archive",
    response_class=Response,
    responses=EXPORT_RESPONSES,
    tags=["models"],
    openapi_extra={"parameters": [EXPORT_BUDGET_DOC]},
)
async def export_budget(
    task: str,
    fe: FrontEndDep,
    # Documented below as required; a missing one is refused by export_level's own message.
    budget: Annotated[str | None, Query(include_in_schema=False)] = None,
) -> Response:
    entry = fe.task(task)
    parse_budget(budget)
    level: int = await fe.client.call("export_level", task=entry.name, budget=budget)
    return await archive_response(fe, entry, level)
