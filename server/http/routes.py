"""The v1 HTTP API: ``/infer``, ``/plan``, ``/v1/models`` and export (docs/api.md)."""

from __future__ import annotations

import hashlib
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import JSONResponse, Response

from model_store.manifest import TaskEntry
from server.budget import parse_budget
from server.engine.outcome import ClientDisconnected
from server.engine.selection import check_level
from server.errors import ALL_ERRORS
from server.http.decode import decode
from server.http.encode import infer_body, infer_headers
from server.http.frontend import FrontEnd
from server.http.params import (
    BUDGET_DOC,
    INFER_QUERY_DOC,
    MAX_BUDGET_CHARS,
    ON_MISS_DOC,
    parse_infer_query,
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
BudgetQuery = Annotated[str | None, Query(description=BUDGET_DOC, max_length=MAX_BUDGET_CHARS)]
OnMissQuery = Annotated[Literal["degrade", "reject"], Query(description=ON_MISS_DOC)]

ERRORS: dict[int | str, dict[str, Any]] = {
    status: {
        "model": ErrorBody,
        "description": "; ".join(e.type for e in ALL_ERRORS if e.status == status),
    }
    for status in sorted({e.status for e in ALL_ERRORS})
}
INFER_BODY = {
    "requestBody": {
        "required": True,
        "description": 'One example or a batch: JSON `{"inputs": ...}`, a .npy array, or an image.',
        "content": {
            "application/json": {
                "schema": {
                    "type": "object",
                    "required": ["inputs"],
                    "properties": {"inputs": {"type": "array", "items": {}}},
                }
            },
            "application/x-npy": {"schema": {"type": "string", "format": "binary"}},
            "image/png": {"schema": {"type": "string", "format": "binary"}},
            "image/jpeg": {"schema": {"type": "string", "format": "binary"}},
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
)
async def export_level(task: str, level: int, fe: FrontEndDep) -> Response:
    entry = fe.task(task)
    check_level(entry, level)
    return await archive_response(fe, entry, level)


@router.get(
    "/v1/models/{task}/export",
    summary="The largest level of a task that fits a memory budget, as a checkpoint archive",
    response_class=Response,
    responses=EXPORT_RESPONSES,
    tags=["models"],
)
async def export_budget(task: str, fe: FrontEndDep, budget: BudgetQuery = None) -> Response:
    entry = fe.task(task)
    parse_budget(budget)
    level: int = await fe.client.call("export_level", task=entry.name, budget=budget)
    return await archive_response(fe, entry, level)
