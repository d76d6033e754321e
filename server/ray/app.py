"""The Ray Serve application: ``DVNEngine`` replicas (one per device) behind an ingress
deployment that serves the same FastAPI app as ``dvn serve`` (``create_app``) over a
:class:`~server.ray.client.RayEngineClient`.

Built by :func:`build_application` (``dvn serve --ray``, tests) or by :func:`build`, the
application builder that ``serve run`` / ``serve deploy`` import
(``import_path: server.ray.app:build`` in ``deploy/ray/serve.yaml``, its ``args`` the
:class:`RayOptions` fields plus any ``DVN_`` setting in lower case).
"""

from __future__ import annotations

import warnings
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field
from ray import serve
from ray.serve import Application
from ray.serve.config import RequestRouterConfig

from server.ray.ingress import DVNIngress
from server.ray.replica import DVNEngine
from server.settings import Settings, load_settings

if TYPE_CHECKING:
    from server.engine.runtime import ForwardWrapper

ROUTERS = {
    "budget": "server.ray.router:BudgetRouter",
    # Ray's default, power of two choices on queue length (and named calls honoured)
    "pow2": "server.ray.router:PowerOfTwoRouter",
}
ROUTER = ROUTERS["budget"]


class RayOptions(BaseModel):
    """How the application is laid out on the cluster."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    replicas: int = Field(default=2, ge=1, description="engine replicas (the minimum, autoscaled)")
    max_replicas: int | None = Field(
        default=None, ge=1, description="autoscale up to this many replicas; None: fixed"
    )
    target_queue: float = Field(
        default=16.0, gt=0, description="autoscaling target: requests per replica in flight"
    )
    upscale_delay_s: float = Field(
        default=30.0, ge=0, description="autoscaling: load held this long before a replica is added"
    )
    downscale_delay_s: float = Field(
        default=600.0, ge=0, description="autoscaling: idle this long before one is removed"
    )
    look_back_s: float = Field(
        default=30.0, gt=0, description="autoscaling: requests in flight averaged over this window"
    )
    num_gpus: float = Field(default=0.0, ge=0, description="per replica: 1 on GPUs")
    num_cpus: float = Field(default=0.5, gt=0, description="per replica (fractional on CPUs)")
    max_ongoing_requests: int = Field(default=256, ge=1, description="per replica")
    max_queued_requests: int = Field(
        default=1024, ge=-1, description="waiting for a replica, past which 429 server_busy"
    )
    stats_period_s: float = Field(default=0.1, gt=0, description="routing stats period")
    stale_after_s: float = Field(default=1.0, gt=0, description="older stats: power of two")
    ingress_cpus: float = Field(default=0.25, gt=0)
    router: Literal["budget", "pow2"] = Field(
        default="budget",
        description="replica choice: budget (BudgetRouter, predicted answer time) or pow2 "
        "(Ray's default power of two choices on queue length; a baseline)",
    )


def engine_deployment(
    settings: Settings, options: RayOptions, forward_wrapper: ForwardWrapper | None = None
) -> Application:
    """The ``DVNEngine`` deployment, bound: its replicas, resources, router, autoscaling
    on requests in flight per replica, and a graceful shutdown long enough to drain."""
    scale: dict[str, Any] = {"num_replicas": options.replicas}
    if options.max_replicas is not None and options.max_replicas > options.replicas:
        # Scale on queue depth: requests in flight per replica (queued in its engine or
        # computing), towards target_queue.
        scale = {
            "autoscaling_config": {
                "min_replicas": options.replicas,
                "initial_replicas": options.replicas,
                "max_replicas": options.max_replicas,
                "target_ongoing_requests": options.target_queue,
                "upscale_delay_s": options.upscale_delay_s,
                "downscale_delay_s": options.downscale_delay_s,
                "look_back_period_s": options.look_back_s,
                # How often the queue depth reaches Ray's controller: Ray's 10 s, or within
                # a shorter window (Ray needs it shorter than the window).
                "metrics_interval_s": min(10.0, options.look_back_s / 2),
            }
        }
    kwargs = {"stale_after_s": options.stale_after_s} if options.router == "budget" else {}
    router: dict[str, Any] = {
        "request_router_class": ROUTERS[options.router],
        "request_router_kwargs": kwargs,
        "request_routing_stats_period_s": options.stats_period_s,
        "request_routing_stats_timeout_s": max(1.0, 10 * options.stats_period_s),
    }
    with warnings.catch_warnings():  # Ray warns on any metrics_interval_s but its default
        warnings.filterwarnings("ignore", "The `metrics_interval_s` field", DeprecationWarning)
        deployment: Any = serve.deployment(
            DVNEngine,
            name="DVNEngine",
            **scale,
            ray_actor_options={"num_cpus": options.num_cpus, "num_gpus": options.num_gpus},
            max_ongoing_requests=options.max_ongoing_requests,
            max_queued_requests=options.max_queued_requests,
            # Ray waits this long for __del__ (the drain) before it kills a stopping replica.
            graceful_shutdown_timeout_s=settings.drain_timeout_s + 5.0,
            health_check_period_s=2.0,
            request_router_config=RequestRouterConfig(**router),
        )
    app: Application = deployment.bind(settings.model_dump_json(), forward_wrapper)
    return app


def build_application(
    settings: Settings,
    options: RayOptions | None = None,
    forward_wrapper: ForwardWrapper | None = None,
) -> Application:
    """The whole application, ready for ``serve.run``."""
    options = options or RayOptions()
    engine = engine_deployment(settings, options, forward_wrapper)
    ingress: Any = serve.deployment(
        DVNIngress,
        name="DVNIngress",
        ray_actor_options={"num_cpus": options.ingress_cpus},
        max_ongoing_requests=4 * options.max_ongoing_requests,
    )
    app: Application = ingress.bind(engine, settings.model_dump_json())
    return app


def build(args: dict[str, Any]) -> Application:
    """The application builder of ``serve run``/``serve deploy`` (``import_path:
    server.ray.app:build``): ``args`` holds :class:`RayOptions` fields and settings
    (``checkpoint``, ``max_batch_size``...; the ``DVN_`` environment fills the rest).

    Raises:
        SettingsError, pydantic.ValidationError: a bad setting or option, named.
    """
    fields = set(RayOptions.model_fields)
    options = RayOptions(**{k: v for k, v in args.items() if k in fields})
    settings = load_settings(**{k: v for k, v in args.items() if k not in fields})
    return build_application(settings, options)
