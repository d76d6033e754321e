"""The front ends ``dvn bench pairs frontend`` compares with the shipped one: ``routed``
(``DirectInfer`` off: FastAPI's routing, middleware and exception handling) and ``fastapi``
(routed, and the ``/infer`` query declared as FastAPI parameters, as round 1 had it).
Each runs in its own process: :func:`frontend_child` patches, then runs the worker."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import Query, Request
from fastapi.responses import Response

from server.http.params import LEVEL_DOC
from server.http.routes import BudgetQuery, OnMissQuery

# The counterfactual's query parameters (module level: FastAPI resolves them by name).
LevelQuery = Annotated[int | None, Query(ge=1, description=LEVEL_DOC)]
TopKQuery = Annotated[int | None, Query(ge=1, description="Return the k most probable classes.")]


def frontend_child(variant: str, argv: list[str]) -> int:
    """Run ``python -m server.http.worker`` with ``argv``, as ``variant`` (``FRONTENDS``)."""
    from server.http import app as http_app
    from server.http.worker import main

    if variant in ("routed", "fastapi"):

        async def passthrough(self: Any, scope: Any, receive: Any, send: Any) -> None:
            await self.app(scope, receive, send)

        http_app.DirectInfer.__call__ = passthrough  # type: ignore[method-assign]
    if variant == "fastapi":
        _declare_infer_query()
    return main(argv)


def _declare_infer_query() -> None:
    """Replace ``POST /infer/{task}`` by the same endpoint with its query declared as
    FastAPI parameters (validated by FastAPI's dependency solver), as round 1 had it."""
    from fastapi.responses import JSONResponse

    from model_store.manifest import TaskEntry
    from server.budget import parse_budget
    from server.engine.outcome import ClientDisconnected
    from server.engine.selection import check_level
    from server.http import routes
    from server.http.decode import decode
    from server.http.encode import infer_body, infer_headers
    from server.http.frontend import FrontEnd
    from server.http.pipeline import Parsed, elapsed, frontend, read_body
    from server.http.pipeline import infer as run_inference
    from server.http.protocol import InferResponse

    router = routes.router
    router.routes[:] = [r for r in router.routes if getattr(r, "path", "") != "/infer/{task}"]

    @router.post("/infer/{task}", response_model=InferResponse, responses=routes.ERRORS)
    async def infer(
        task: str,
        request: Request,
        budget: BudgetQuery = None,
        level: LevelQuery = None,
        on_miss: OnMissQuery = "degrade",
        top_k: TopKQuery = None,
    ) -> Response:
        async def read(entry: TaskEntry, fe: FrontEnd) -> Parsed:
            parsed = parse_budget(budget)
            check_level(entry, level)
            if level is None and on_miss == "degrade":
                fe.client.admit(entry.name, parsed, elapsed(request))
            s = fe.settings
            body = await read_body(request, s.max_body_bytes)
            inputs = decode(
                body,
                request.headers.get("content-type"),
                fe.spec(entry.name),
                max_examples=s.max_request_batch,
                max_image_pixels=s.max_image_pixels,
            )
            return Parsed(budget, parsed, level, on_miss, inputs.array)

        request.scope.setdefault("state", {}).setdefault("log", {}).update(task=task, budget=budget)
        try:
            answer = await run_inference(request, task, read)
        except ClientDisconnected:
            return Response(status_code=499)
        fe = frontend(request)
        doc = infer_body(answer, fe.client.manifest, request.scope["state"]["request_id"], top_k)
        return JSONResponse(doc, headers=infer_headers(answer))
