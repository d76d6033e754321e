"""The Ray application's HTTP front end, ``DVNIngress``: the same FastAPI app as ``dvn
serve`` (``create_app``) over a :class:`~server.ray.client.RayEngineClient`. Its own module,
so that an ingress replica imports no torch (the engine's replicas, ``server.ray.replica``,
do)."""

from __future__ import annotations

from typing import Any

from ray import serve
from ray.serve.handle import DeploymentHandle
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from model_store.manifest import config_from_manifest, read_manifest
from server.ray.client import RayEngineClient
from server.settings import Settings


@serve.ingress()
class DVNIngress:
    """The HTTP front end: ``create_app`` over the engine replicas' handle."""

    def __init__(self, engine: DeploymentHandle[Any], settings: str) -> None:
        self.engine = engine
        self.settings = Settings.model_validate_json(settings)

    def __serve_build_asgi_app__(self) -> Any:
        from server.http.app import create_app

        manifest = read_manifest(self.settings.checkpoint)
        specs = {s.name: s for s in config_from_manifest(manifest).tasks}
        client = RayEngineClient(
            self.engine, manifest, specs, max_inflight=self.settings.max_inflight
        )
        return OneRequestId(create_app(self.settings, engine=client))


class OneRequestId:
    """Pure ASGI wrapper: leaves ``X-Request-ID`` on the response to Ray's proxy, which
    always adds it (with the id it put on the request, the one the app echoes), so that a
    response carries it once."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_once(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [
                    (k, v) for k, v in message.get("headers", []) if k.lower() != b"x-request-id"
                ]
            await send(message)

        await self.app(scope, receive, send_once)
