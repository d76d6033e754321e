"""The KServe Open Inference Protocol v2 over REST (docs/oip.md): a second front end on the
one request path of :mod:`server.http.pipeline`, so batching, level selection and metrics
are shared with ``/infer``.

Two routers: :data:`router` (server and model metadata, model readiness, inference: behind
the API key when keys are on) and :data:`health_router` (``/v2/health/live`` and
``/v2/health/ready``: guarded like ``/healthz``). Errors answer in the protocol's shape
``{"error": "<message>"}`` (:func:`oip_error_response`): our 422s become 400, every other
status (404, 413, 429, 503 with ``Retry-After``, ...) is kept, and the server's error type is
in the ``X-DVN-Error-Type`` header. Errors raised before a handler runs (the API key check,
routing) reach the app's exception handlers; :func:`protocol_error_shape` makes those answer
the same way under ``/v2``.
"""

from __future__ import annotations

import functools
import importlib.metadata
import inspect
import json
from collections.abc import Awaitable, Callable
from typing import Any

from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import JSONResponse, Response

from model_store.manifest import TaskEntry
from server.budget import parse_budget
from server.engine.outcome import ClientDisconnected
from server.engine.selection import check_level
from server.errors import ALL_ERRORS, InvalidInput, NotFound, ServeError
from server.http.decode import check_array
from server.http.encode import infer_headers
from server.http.frontend import FrontEnd
from server.http.oip_codec import (
    dvn_parameters,
    inference_response,
    inline_schema,
    input_array,
    model_metadata,
    normalise_pixels,
    parse_request,
    requested_outputs,
)
from server.http.oip_protocol import (
    BINARY_UNSUPPORTED,
    EXTENSIONS,
    FLOAT_DATATYPES,
    IGNORED_OUTPUT_PARAMETERS,
    IGNORED_PARAMETERS,
    INPUT_NAME,
    OUTPUT_NAMES,
    PIXEL_DATATYPE,
    InferenceRequest,
    InferenceResponse,
    ModelMetadata,
    ModelReady,
    OipError,
    ServerLive,
    ServerMetadata,
    ServerReady,
)
from server.http.params import (
    BUDGET_DOC,
    BUDGET_SCHEMA,
    LEVEL_DOC,
    LEVEL_SCHEMA,
    ON_MISS,
    ON_MISS_DOC,
)
from server.http.pipeline import Parsed, elapsed, frontend, read_body
from server.http.pipeline import infer as run_inference

SERVER_NAME = "dvn-serve"
ERROR_TYPE_HEADER = "X-DVN-Error-Type"


def is_oip_path(path: str) -> bool:
    """Whether a request path belongs to the Open Inference Protocol (its errors answer in
    the protocol's shape)."""
    return path == "/v2" or path.startswith("/v2/")


def oip_status(status: int) -> int:
    """The protocol's status for one of ours: 400 for every invalid request (our 422s
    included); the rest (401, 403, 404, 405, 413, 429, 5xx) as the v1 API answers them."""
    return 400 if status == 422 else status


def oip_error_response(error: ServeError) -> JSONResponse:
    """``{"error": message}`` with the protocol's status; ``Retry-After`` kept."""
    headers = {**error.headers(), ERROR_TYPE_HEADER: error.type}
    return JSONResponse(
        {"error": error.message}, status_code=oip_status(error.status), headers=headers
    )


Handler = Callable[[Request, Exception], Response | Awaitable[Response]]


def protocol_shaped(handler: Handler) -> Handler:
    """Wrap one of the app's exception handlers: under ``/v2`` its ``{"error": {"type",
    "message"}}`` answer becomes the protocol's ``{"error": message}`` (status as
    :func:`oip_status`, other headers kept, the type in ``X-DVN-Error-Type``)."""

    async def wrapped(request: Request, exc: Exception) -> Response:
        answer = handler(request, exc)
        response = await answer if inspect.isawaitable(answer) else answer
        if not is_oip_path(request.url.path):
            return response
        try:
            error = json.loads(bytes(response.body))["error"]
            kind, message = str(error["type"]), str(error["message"])
        except (AttributeError, ValueError, KeyError, TypeError):
            return response  # not the v1 error shape: leave it as it is
        skip = ("content-length", "content-type", ERROR_TYPE_HEADER.lower())
        headers = {k: v for k, v in response.headers.items() if k.lower() not in skip}
        headers[ERROR_TYPE_HEADER] = kind
        return JSONResponse(
            {"error": message}, status_code=oip_status(response.status_code), headers=headers
        )

    return wrapped


def protocol_error_shape(app: FastAPI) -> None:
    """Make every exception handler of ``app`` answer paths under ``/v2`` in the protocol's
    error shape. Call it after the handlers are installed and before the first request
    (Starlette reads the handlers when it builds the middleware stack)."""
    for key, handler in list(app.exception_handlers.items()):
        app.exception_handlers[key] = protocol_shaped(handler)


@functools.cache
def server_version() -> str:
    try:
        return importlib.metadata.version("dvn-serve")
    except importlib.metadata.PackageNotFoundError:  # a source checkout, not installed
        return "0+unknown"


def _errors(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI responses: each status with the error types that answer with it."""
    found: dict[int | str, dict[str, Any]] = {}
    for status in statuses:
        types = [e.type for e in ALL_ERRORS if oip_status(e.status) == status]
        found[status] = {"model": OipError, "description": "; ".join(types)}
    # Every error has this shape; declaring it also keeps FastAPI's 422 schema out.
    found["default"] = {"model": OipError, "description": "any other error, same shape"}
    return found


def documented_request_schema() -> dict[str, Any]:
    """``$inference_request`` as this server reads it: the protocol's schema (the pydantic
    models) narrowed to what :func:`~server.http.oip_codec.dvn_parameters`,
    :func:`~server.http.oip_codec.requested_outputs` and
    :func:`~server.http.oip_codec.input_array` take. Narrowed here, in the document only,
    so that a refusal keeps the codec's message, which says how to fix the request."""
    schema = inline_schema(InferenceRequest.model_json_schema())
    props = schema["properties"]
    scalar = {"anyOf": [{"type": t} for t in ("string", "integer", "number", "boolean")]}

    def nullable(node: dict[str, Any]) -> dict[str, Any]:  # null: as if left out
        return {"anyOf": [node, {"type": "null"}]}

    props["parameters"] = nullable(
        {
            "type": "object",
            "properties": {
                "budget": {**BUDGET_SCHEMA, "description": BUDGET_DOC},
                "level": {**LEVEL_SCHEMA, "description": LEVEL_DOC},
                "on_miss": {"type": "string", "enum": list(ON_MISS), "description": ON_MISS_DOC},
                **{name: scalar for name in IGNORED_PARAMETERS},
            },
            "additionalProperties": False,
        }
    )
    tensor = props["inputs"]["items"]
    tensor["properties"]["name"] = {"type": "string", "enum": [INPUT_NAME]}
    tensor["properties"]["datatype"] = {
        "type": "string",
        "enum": [*FLOAT_DATATYPES, PIXEL_DATATYPE],
    }
    tensor["properties"]["shape"] = {"type": "array", "items": {"type": "integer", "minimum": 0}}
    tensor["properties"]["data"] = {"type": "array", "minItems": 1}
    tensor["properties"]["parameters"] = nullable(
        {
            "type": "object",
            "not": {
                "anyOf": [
                    {"required": ["binary_data_size"]},
                    {"required": ["shared_memory_region"]},
                ]
            },
            "additionalProperties": scalar,
        }
    )
    tensor["required"] = ["name", "shape", "datatype", "data"]
    props["inputs"] = {"type": "array", "items": tensor, "minItems": 1, "maxItems": 1}
    props["id"] = nullable({"type": "string"})
    props["outputs"] = nullable(
        {
            "type": "array",
            "items": {
                "type": "object",
                "properties": {
                    "name": {"type": "string", "enum": list(OUTPUT_NAMES)},
                    "parameters": nullable(
                        {
                            "type": "object",
                            "properties": {name: scalar for name in IGNORED_OUTPUT_PARAMETERS},
                            "additionalProperties": False,
                        }
                    ),
                },
                "required": ["name"],
            },
        }
    )
    return schema


AUTH = (401, 403)
METADATA_ERRORS = _errors(*AUTH, 404, 503)
INFER_ERRORS = _errors(400, *AUTH, 404, 413, 429, 500, 503, 504)
INFER_BODY = {
    "requestBody": {
        "required": True,
        "description": (
            "One input tensor named `input`: shape [B, *input_shape] (GET /v2/models/{task}), "
            "`data` holding exactly the shape's element count, flat row-major or nested; FP32, "
            "FP16 or FP64 values finite in float32, or UINT8 pixels 0..255. Anything else is "
            "400."
        ),
        "content": {"application/json": {"schema": documented_request_schema()}},
    }
}

router = APIRouter(tags=["open inference protocol"])
health_router = APIRouter(tags=["open inference protocol"])


# -- health ----------------------------------------------------------------------------------
@health_router.get("/v2/health/live", response_model=ServerLive)
async def oip_server_live() -> dict[str, bool]:
    """Live: the process answers."""
    return {"live": True}


@health_router.get(
    "/v2/health/ready", response_model=ServerReady, responses={503: METADATA_ERRORS[503]}
)
async def oip_server_ready(request: Request) -> Response:
    """Ready: every model (task) is loaded and warmed up, and the server is not draining;
    else 503 with ``Retry-After``."""
    try:
        frontend(request).check_ready()
    except ServeError as e:
        return oip_error_response(e)
    return JSONResponse({"ready": True})


# -- metadata ----------------------------------------------------------------------------------
@router.get("/v2", response_model=ServerMetadata, responses=_errors(*AUTH))
async def oip_server_metadata() -> dict[str, Any]:
    """The server's name, version and protocol extensions."""
    return {"name": SERVER_NAME, "version": server_version(), "extensions": EXTENSIONS}


def find_model(fe: FrontEnd, task: str, version: str | None) -> TaskEntry:
    """The task named ``task`` at ``version`` (any version when ``None``).

    Raises:
        NotReady: the checkpoint is not loaded yet.
        UnknownTask, NotFound: no such model, or not at that version.
    """
    entry = fe.task(task)
    served = fe.client.manifest.version
    if version is not None and version != served:
        raise NotFound(
            f"model {task!r} has no version {version!r}; this server serves version "
            f"{served!r} (or leave the version out of the path)"
        )
    return entry


def _metadata(request: Request, task: str, version: str | None) -> Response:
    fe = frontend(request)
    try:
        entry = find_model(fe, task, version)
    except ServeError as e:
        return oip_error_response(e)
    return JSONResponse(model_metadata(entry, fe.client.manifest))


@router.get("/v2/models/{task}", response_model=ModelMetadata, responses=METADATA_ERRORS)
async def oip_model_metadata(task: str, request: Request) -> Response:
    """A task as a model: its input and outputs, version, and the DVN's levels."""
    return _metadata(request, task, None)


@router.get(
    "/v2/models/{task}/versions/{version}",
    response_model=ModelMetadata,
    responses=METADATA_ERRORS,
)
async def oip_model_version_metadata(task: str, version: str, request: Request) -> Response:
    """As ``/v2/models/{task}``, for the checkpoint's version only."""
    return _metadata(request, task, version)


def _model_ready(request: Request, task: str, version: str | None) -> Response:
    fe = frontend(request)
    try:
        find_model(fe, task, version)
        fe.check_ready()
    except ServeError as e:
        return oip_error_response(e)
    return JSONResponse({"name": task, "ready": True})


@router.get("/v2/models/{task}/ready", response_model=ModelReady, responses=METADATA_ERRORS)
async def oip_model_ready(task: str, request: Request) -> Response:
    """Ready: the task is served and warmed up (503 with ``Retry-After`` before)."""
    return _model_ready(request, task, None)


@router.get(
    "/v2/models/{task}/versions/{version}/ready",
    response_model=ModelReady,
    responses=METADATA_ERRORS,
)
async def oip_model_version_ready(task: str, version: str, request: Request) -> Response:
    """As ``/v2/models/{task}/ready``, for the checkpoint's version only."""
    return _model_ready(request, task, version)


# -- inference -------------------------------------------------------------------------------
async def _infer(request: Request, task: str, version: str | None) -> Response:
    """The one request path (:func:`server.http.pipeline.infer`) with the protocol's body."""
    log: dict[str, Any] = request.scope.setdefault("state", {}).setdefault("log", {})
    log.update(task=task, protocol="v2")
    request_id: str | None = None
    names: list[str] = []

    async def read(entry: TaskEntry, fe: FrontEnd) -> Parsed:
        nonlocal request_id, names
        find_model(fe, task, version)
        if "inference-header-content-length" in request.headers:
            raise InvalidInput(BINARY_UNSUPPORTED)
        settings = fe.settings
        body = await read_body(request, settings.max_body_bytes)
        infer_request = parse_request(body)
        request_id = infer_request.id
        params = dvn_parameters(infer_request.parameters)
        log.update(budget=params.budget)
        budget = parse_budget(params.budget)
        check_level(entry, params.level)
        if params.level is None and params.on_miss == "degrade":  # else: as asked, or 503
            fe.client.admit(entry.name, budget, elapsed(request))
        names = requested_outputs(infer_request, task)
        spec = fe.spec(task)
        array, pixels = input_array(infer_request, task)
        inputs = check_array(array, spec, max_examples=settings.max_request_batch)
        array = normalise_pixels(inputs.array, spec) if pixels else inputs.array
        return Parsed(params.budget, budget, params.level, params.on_miss, array)

    try:
        answer = await run_inference(request, task, read)
    except ServeError as e:
        return oip_error_response(e)
    except ClientDisconnected:
        # As /infer: routine (a client timeout), answered with nginx's 499, which nobody
        # reads, rather than re-raised and logged by uvicorn as an error.
        return Response(status_code=499)
    doc = inference_response(answer, frontend(request).client.manifest.version, request_id, names)
    return JSONResponse(doc, headers=infer_headers(answer))


@router.post(
    "/v2/models/{task}/infer",
    response_model=InferenceResponse,
    responses=INFER_ERRORS,
    openapi_extra=INFER_BODY,
)
async def oip_infer(task: str, request: Request) -> Response:
    """Classify one example or a batch at the level the budget in ``parameters`` allows."""
    return await _infer(request, task, None)


@router.post(
    "/v2/models/{task}/versions/{version}/infer",
    response_model=InferenceResponse,
    responses=INFER_ERRORS,
    openapi_extra=INFER_BODY,
)
async def oip_infer_version(task: str, version: str, request: Request) -> Response:
    """As ``/v2/models/{task}/infer``, for the checkpoint's version only."""
    return await _infer(request, task, version)
