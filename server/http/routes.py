"""The v1 HTTP API: ``/infer``, ``/plan``, ``/v1/models`` and export (docs/api.md)."""

from __future__ import annotations

import time
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import JSONResponse, Response

from server.budget import Budget, parse_budget
from server.engine.archive import archive_for
from server.engine.core import InferenceService
from server.engine.outcome import ClientDisconnected
from server.engine.profile import predict_latency
from server.engine.runtime import ready_service
from server.engine.selection import fits_latency, fits_memory, select_level
from server.errors import ALL_ERRORS, InvalidParameter, PayloadTooLarge, ServeError
from server.http.decode import decode
from server.http.encode import infer_body, infer_headers
from server.http.params import (
    BUDGET_DOC,
    INFER_QUERY_DOC,
    MAX_BUDGET_CHARS,
    ON_MISS_DOC,
    parse_infer_query,
)
from server.http.protocol import ErrorBody, InferResponse, ModelsResponse, PlanResponse


async def service_dependency(request: Request) -> InferenceService:
    # async: FastAPI runs a plain-def dependency in a worker thread, a thread hop per request
    return ready_service(request)


ServiceDep = Annotated[InferenceService, Depends(service_dependency)]
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


async def read_body(request: Request, limit: int) -> bytes:
    """The body, refused with 413 as soon as it is known to exceed ``limit`` bytes."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise PayloadTooLarge(
            f"body of {declared} bytes is over the {limit}-byte limit; send fewer examples per "
            "request (or raise DVN_MAX_BODY_BYTES)"
        )
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise PayloadTooLarge(
                f"body is over the {limit}-byte limit; send fewer examples per request "
                "(or raise DVN_MAX_BODY_BYTES)"
            )
        chunks.append(chunk)
    return b"".join(chunks)


async def wait_disconnect(request: Request) -> None:
    """Returns when the client goes away (the body has been read by then)."""
    while True:
        message = await request.receive()
        if message["type"] == "http.disconnect":
            return


@router.post(
    "/infer/{task}",
    summary="Classify one example or a batch at the level the budget allows",
    response_model=InferResponse,
    responses=ERRORS,
    openapi_extra={**INFER_BODY, "parameters": INFER_QUERY_DOC},
    tags=["inference"],
)
async def infer(task: str, request: Request) -> Response:
    # The service and the query are looked up by hand, not by FastAPI's dependency
    # solver: this is the hot path (server/params.py).
    service = ready_service(request)
    arrival = request.scope.get("state", {}).get("arrival", time.perf_counter())
    log: dict[str, Any] = request.scope.setdefault("state", {}).setdefault("log", {})
    log.update(task=task, budget=request.query_params.get("budget"))
    settings = service.settings
    try:
        with service.handling(task, log) as handling:
            query = parse_infer_query(request.query_params)
            entry = service.task(task)
            parsed = parse_budget(query.budget)
            service.check_level(entry, query.level)
            service.check_backlog(parsed, handling.ticket)
            body = await read_body(request, settings.max_body_bytes)
            inputs = decode(
                body,
                request.headers.get("content-type"),
                service.spec(task),
                max_examples=settings.max_request_batch,
                max_image_pixels=settings.max_image_pixels,
            )
            handling.examples = inputs.examples
            answer = handling.answer = await service.infer(
                entry,
                inputs.array,
                budget=parsed,
                level=query.level,
                on_miss=query.on_miss,
                arrival=arrival,
                ticket=handling.ticket,
                disconnected=lambda: wait_disconnect(request),
            )
    except ClientDisconnected:
        # Routine (a client timeout): answered with nginx's 499, which nobody reads, instead
        # of re-raised, which uvicorn logs as an error with a traceback.
        return Response(status_code=499)
    body_doc = infer_body(
        answer, service.manifest, request.scope["state"]["request_id"], query.top_k
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
    service: ServiceDep,
    budget: BudgetQuery = None,
    on_miss: OnMissQuery = "degrade",
    examples: Annotated[int, Query(ge=1, le=4096, description="Examples in the request.")] = 1,
) -> dict[str, Any]:
    entry = service.task(task)
    parsed: Budget | None = parse_budget(budget)
    options = service.forecast.options(entry, examples, parsed)
    chosen: dict[str, Any] = {"level": None, "selection": None, "budget_met": None, "error": None}
    try:
        sel = select_level(entry.name, options, parsed, on_miss=on_miss)
        met = None
        if parsed is not None:
            option = next(o for o in options if o.level == sel.level)
            met = fits_memory(option, parsed) and fits_latency(option, parsed)
        chosen = {"level": sel.level, "selection": sel.reason, "budget_met": met, "error": None}
    except ServeError as e:
        chosen["error"] = e.body()["error"]
    levels = []
    state = service.forecast.queue_state()
    for lv, option in zip(entry.levels, options, strict=True):
        # What runs before this level's forward: the running batch and every backlog.
        wait_s = predict_latency(
            service.profile, state, (entry.name, lv.level), 0, service.settings.max_batch_size
        )
        levels.append(
            {
                "level": lv.level,
                "units": lv.units,
                "params": lv.params,
                "param_bytes": lv.param_bytes,
                "flops": lv.flops,
                "accuracy": None if lv.accuracy is None else lv.accuracy.value,
                "predicted_latency_ms": round(option.predicted_latency_s * 1e3, 3),
                "queue_wait_ms": round(wait_s * 1e3, 3),
                "queue_depth": service.batcher.depth((entry.name, lv.level)),
                "fits_memory": fits_memory(option, parsed),
                "fits_latency": fits_latency(option, parsed),
            }
        )
    return {
        "task": entry.name,
        "budget": None if parsed is None else parsed.to_dict(),
        **chosen,
        "levels": levels,
    }


@router.get(
    "/v1/models",
    summary="The loaded checkpoint: tasks, levels, costs, accuracy, profiled latency",
    response_model=ModelsResponse,
    responses=ERRORS,
    tags=["models"],
)
async def models(service: ServiceDep) -> dict[str, Any]:
    return service.summary()


EXPORT_RESPONSES: dict[int | str, dict[str, Any]] = {
    **ERRORS,
    200: {
        "description": "A .tar archive holding manifest.json and weights.safetensors.",
        "content": {"application/x-tar": {"schema": {"type": "string", "format": "binary"}}},
    },
}


@router.get(
    "/v1/models/{task}/levels/{level}/export",
    summary="One (task, level) as a standalone checkpoint archive",
    response_class=Response,
    responses=EXPORT_RESPONSES,
    tags=["models"],
)
async def export_level(task: str, level: int, service: ServiceDep) -> Response:
    entry = service.task(task)
    service.check_level(entry, level)
    return await archive_for(service, entry, level)


@router.get(
    "/v1/models/{task}/export",
    summary="The largest level of a task that fits a memory budget, as a checkpoint archive",
    response_class=Response,
    responses=EXPORT_RESPONSES,
    tags=["models"],
)
async def export_budget(task: str, service: ServiceDep, budget: BudgetQuery = None) -> Response:
    entry = service.task(task)
    parsed = parse_budget(budget)
    if parsed is None or parsed.memory_bytes is None or parsed.latency_s is not None:
        raise InvalidParameter(
            "export takes a memory budget only, e.g. ?budget=2MiB (or use "
            f"/v1/models/{task}/levels/{{level}}/export)"
        )
    options = service.forecast.options(entry, 1)
    by_memory = [o for o in options if fits_memory(o, parsed)]
    if not by_memory:
        select_level(entry.name, options, parsed)  # raises BudgetUnsatisfiable, same message
    return await archive_for(service, entry, max(o.level for o in by_memory))
