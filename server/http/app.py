"""``create_app(settings)``: the FastAPI app, its lifespan, middleware and error handlers."""

from __future__ import annotations

import asyncio
import contextlib
import re
import time
import uuid
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

from fastapi import APIRouter, Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from server.engine.client import EngineClient
from server.errors import (
    InvalidParameter,
    MethodNotAllowed,
    NotFound,
    PayloadTooLarge,
    ServeError,
)
from server.http.auth import check_key
from server.http.frontend import FrontEnd
from server.http.oip import health_router as oip_health_router
from server.http.oip import protocol_error_shape
from server.http.oip import router as oip_router
from server.http.pipeline import frontend
from server.http.protocol import Status
from server.http.routes import ERRORS
from server.http.routes import infer as infer_endpoint
from server.http.routes import router as v1_router
from server.http.warmup import warm_codecs, warm_routes
from server.logs import SERVER, access, configure_logging
from server.settings import Settings

if TYPE_CHECKING:  # the in-process engine's types: torch, imported only when it is asked for
    from model_store.checkpoint import Checkpoint
    from server.engine.pending import Clock
    from server.engine.runtime import ForwardWrapper, Runtime

_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")
UNCOUNTED = ("/healthz", "/readyz", "/metrics", "/v2/health/live", "/v2/health/ready")


class RequestContext:
    """Pure ASGI middleware: arrival time, request id (echoed if sane, else generated), the
    ``X-Request-ID`` header, and one access log line per request."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        arrival = time.perf_counter()
        given = next(
            (v.decode("latin-1") for k, v in scope["headers"] if k == b"x-request-id"), None
        )
        request_id = given if given and _REQUEST_ID.match(given) else uuid.uuid4().hex
        state = scope.setdefault("state", {})
        state.update(arrival=arrival, request_id=request_id, log={})
        status = 500

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message.setdefault("headers", [])
                extra = [(b"x-request-id", request_id.encode())]
                if draining(scope):  # no next request on this connection: it is closing
                    extra.append((b"connection", b"close"))
                message["headers"] = [*message["headers"], *extra]
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            if scope["path"] not in UNCOUNTED:
                access(
                    {
                        "request_id": request_id,
                        "method": scope["method"],
                        "path": scope["path"],
                        "status": status,
                        "latency_ms": round((time.perf_counter() - arrival) * 1e3, 3),
                        **state["log"],
                    }
                )


def draining(scope: Scope) -> bool:
    app = scope.get("app")
    fe = getattr(getattr(app, "state", None), "frontend", None)
    return bool(getattr(fe, "draining", False))


def error_response(error: ServeError) -> JSONResponse:
    return JSONResponse(error.body(), status_code=error.status, headers=error.headers())


def internal_error_response(request: Request) -> JSONResponse:
    """500 for a bug of ours: logged with its traceback, the client told the request id."""
    rid = request.scope.get("state", {}).get("request_id", "?")
    SERVER.exception("unhandled error", extra={"fields": {"request_id": rid}})
    return JSONResponse(
        {"error": {"type": "internal_error", "message": f"internal error (request id {rid})"}},
        status_code=500,
    )


class DirectInfer:
    """Pure ASGI middleware: ``POST /infer/{task}`` goes straight to its endpoint, past
    FastAPI's routing, middleware chain and exception machinery, which cost about a third
    of a level-1 request's CPU. The endpoint, the API-key check and the error responses
    are the ones the routed path uses; anything else (other methods, other paths) is left
    to FastAPI, which also still documents the route."""

    def __init__(self, app: ASGIApp, api_keys: list[str]) -> None:
        self.app = app
        self.api_keys = api_keys

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        task = _infer_task(scope)
        if task is None:
            await self.app(scope, receive, send)
            return
        request = Request(scope, receive)
        try:
            check_key(request, self.api_keys)
            response = await infer_endpoint(task, request)
        except ServeError as e:
            response = error_response(e)
        except Exception:
            response = internal_error_response(request)
        await response(scope, receive, send)


def _infer_task(scope: Scope) -> str | None:
    """The task of a ``POST /infer/{task}`` request (one path segment), else None."""
    if scope["type"] != "http" or scope["method"] != "POST":
        return None
    path: str = scope["path"]
    root: str = scope.get("root_path", "")
    if root and path.startswith(root):
        path = path[len(root) :]
    if not path.startswith("/infer/"):
        return None
    task = path[len("/infer/") :]
    return task if task and "/" not in task else None


def install_error_handlers(app: FastAPI) -> None:
    """One JSON shape for every error: ours, FastAPI's validation, Starlette's routing."""

    async def serve_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, ServeError)
        return error_response(exc)

    async def validation_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, RequestValidationError)
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc'])}: {err['msg']}" for err in exc.errors()
        )
        return error_response(InvalidParameter(f"invalid request parameters: {problems}"))

    async def http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, StarletteHTTPException)
        if exc.status_code == 404:
            return error_response(NotFound(f"no route {request.url.path}; see /docs for the API"))
        if exc.status_code == 405:
            response = error_response(
                MethodNotAllowed(f"{request.method} is not allowed on {request.url.path}")
            )
            # RFC 9110: a 405 lists the methods the resource takes (Starlette gives them).
            if exc.headers and "Allow" in exc.headers:
                response.headers["Allow"] = exc.headers["Allow"]
            return response
        if exc.status_code == 413:
            return error_response(PayloadTooLarge(str(exc.detail)))
        return JSONResponse(
            {"error": {"type": "http_error", "message": str(exc.detail)}},
            status_code=exc.status_code,
        )

    async def unexpected(request: Request, exc: Exception) -> Response:
        return internal_error_response(request)

    app.add_exception_handler(ServeError, serve_error)
    app.add_exception_handler(RequestValidationError, validation_error)
    app.add_exception_handler(StarletteHTTPException, http_error)
    app.add_exception_handler(Exception, unexpected)


def ops_router(settings: Settings) -> APIRouter:
    """Health and metrics, open or behind the API key as configured."""

    def guard(protected: bool) -> list[Any]:
        if not protected or not settings.api_keys:
            return []

        async def require(request: Request) -> None:
            check_key(request, settings.api_keys)

        return [Depends(require)]

    router = APIRouter(tags=["operations"])

    @router.get("/healthz", response_model=Status, dependencies=guard(settings.protect_health))
    async def healthz() -> dict[str, str]:
        """Alive: the process answers."""
        return {"status": "alive"}

    @router.get(
        "/readyz",
        response_model=Status,
        responses={503: ERRORS[503]},
        dependencies=guard(settings.protect_health),
    )
    async def readyz(request: Request) -> dict[str, str]:
        """Ready: the engine is up, loaded and warmed up, and nothing is draining."""
        frontend(request).check_ready(probe=True)
        return {"status": "ready"}

    @router.get(
        "/metrics",
        response_class=Response,
        dependencies=guard(settings.protect_metrics),
        responses={200: {"content": {"text/plain": {"schema": {"type": "string"}}}}},
    )
    async def metrics(request: Request) -> Response:
        """Prometheus metrics: the engine's and the front ends'."""
        fe = frontend(request)
        engine = b""
        up = fe.client.status().up
        if up:
            try:
                engine = await fe.client.call("metrics")
            except ServeError:
                up = False
        return Response(engine + fe.metrics.text(up), media_type=CONTENT_TYPE_LATEST)

    return router


async def drain_frontend(fe: FrontEnd, timeout: float) -> bool:
    """Refuse new requests (503) and wait, at most ``timeout`` seconds, until every request
    this front end accepted has its answer. False on timeout."""
    fe.draining = True
    deadline = time.monotonic() + timeout
    while fe.inflight and time.monotonic() < deadline:
        await asyncio.sleep(0.01)
    return fe.inflight == 0


def create_app(
    settings: Settings | None = None,
    *,
    checkpoint: Checkpoint | None = None,
    forward_wrapper: ForwardWrapper | None = None,
    engine: EngineClient | None = None,
    clock: Clock | None = None,
) -> FastAPI:
    """Build a front end. Without ``engine``, the engine runs in this process
    (:class:`~server.engine.inproc.InprocClient`): the checkpoint loads in the lifespan
    (unless given, already loaded), warm-up runs in the background and ``/readyz`` turns
    200 when it is done. With ``engine`` (an :class:`~server.engine.mp_client.MPClient`), the
    engine is another process.

    ``forward_wrapper`` wraps the in-process engine's forward (tests inject faults with it);
    ``clock`` replaces its ``time.perf_counter`` (tests drive time with it)."""
    settings = settings or Settings()
    configure_logging(settings.log_level, settings.log_json)
    runtime: Runtime | None = None
    if engine is None:
        # Imported here: a front end of `dvn serve --workers N` never loads torch.
        from server.engine.inproc import InprocClient
        from server.engine.runtime import Runtime

        runtime = Runtime(
            settings=settings,
            checkpoint=checkpoint,
            forward_wrapper=forward_wrapper,
            clock=clock or time.perf_counter,
        )
        engine = InprocClient(runtime)
    fe = FrontEnd(settings, engine)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await fe.client.start()
        # Before the first request: the engine warms the model, each front end its codecs.
        started = time.perf_counter()
        warmed = warm_codecs(fe.client.manifest, fe.client.specs)
        await warm_routes(app.router)
        SERVER.info(
            "front end warmed up",
            extra={
                "fields": {
                    "body_types": sorted(warmed),
                    "warmup_s": round(time.perf_counter() - started, 3),
                }
            },
        )
        try:
            yield
        finally:
            if runtime is None:  # the engine process drains itself
                await drain_frontend(fe, settings.drain_timeout_s)
            await fe.client.close()

    app = FastAPI(
        title="dvn-serve",
        version="0.1.0",
        summary="Every task of a deep virtual network at the level each request's budget allows.",
        lifespan=lifespan,
    )
    app.state.frontend = fe
    app.state.runtime = runtime  # the in-process engine's, for tests and debugging
    install_error_handlers(app)
    protocol_error_shape(app)  # errors under /v2 in the protocol's {"error": "..."} shape

    async def require_key(request: Request) -> None:  # async: no worker-thread hop
        check_key(request, settings.api_keys)

    guarded = [Depends(require_key)] if settings.api_keys else []
    app.include_router(v1_router, dependencies=guarded)
    app.include_router(oip_router, dependencies=guarded)
    app.include_router(oip_health_router, dependencies=guarded if settings.protect_health else [])
    app.include_router(ops_router(settings))
    # Added last, so outermost: RequestContext wraps DirectInfer, which wraps the routes.
    app.add_middleware(DirectInfer, api_keys=settings.api_keys)
    app.add_middleware(RequestContext)
    return app
