"""deploy/ray/serve.yaml loads: Ray Serve's own schema accepts it, its builder
(``server.ray.app:build``) builds the application from its args, and KubeRay's
deploy/ray/rayservice.yaml embeds the same applications (one GPU per replica). No Ray
cluster is started: building an application does not need one."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

pytest.importorskip("ray.serve")

from ray.serve.schema import ServeDeploySchema

from server.ray.app import ROUTER, build

REPO_ROOT = Path(__file__).resolve().parents[2]
SERVE_CONFIG = REPO_ROOT / "deploy" / "ray" / "serve.yaml"
RAYSERVICE = REPO_ROOT / "deploy" / "ray" / "rayservice.yaml"


def load(path: Path) -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load(path.read_text())
    return data


def test_serve_config_validates_against_ray_serves_schema() -> None:
    schema = ServeDeploySchema.model_validate(load(SERVE_CONFIG))
    (app,) = schema.applications
    assert app.import_path == "server.ray.app:build"
    assert app.route_prefix == "/"


def test_serve_config_args_build_the_application(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("DVN_CHECKPOINT", "DVN_DEVICE"):
        monkeypatch.delenv(name, raising=False)
    (app,) = load(SERVE_CONFIG)["applications"]
    application = build(app["args"])
    ingress = application._bound_deployment
    assert ingress.name == "DVNIngress"
    engine = ingress.init_args[0]._bound_deployment
    assert engine.name == "DVNEngine"
    config = engine._deployment_config
    assert config.autoscaling_config.min_replicas == app["args"]["replicas"]
    assert config.autoscaling_config.max_replicas == app["args"]["max_replicas"]
    assert config.max_queued_requests == app["args"]["max_queued_requests"]
    assert config.request_router_config.request_router_class == ROUTER
    assert engine.ray_actor_options["num_cpus"] == app["args"]["num_cpus"]


@pytest.mark.parametrize(("look_back", "push"), [(None, 10.0), (60.0, 10.0), (2.0, 1.0)])
def test_autoscaling_window_and_metrics_push(
    monkeypatch: pytest.MonkeyPatch, look_back: float | None, push: float
) -> None:
    # Ray's defaults (30 s window, 10 s push) unless the window is shorter than two pushes:
    # then the queue depth is pushed twice a window (Ray needs it shorter than the window).
    monkeypatch.delenv("DVN_CHECKPOINT", raising=False)
    (app,) = load(SERVE_CONFIG)["applications"]
    args = app["args"] if look_back is None else {**app["args"], "look_back_s": look_back}
    engine = build(args)._bound_deployment.init_args[0]._bound_deployment
    scale = engine._deployment_config.autoscaling_config
    assert (scale.look_back_period_s, scale.metrics_interval_s) == (look_back or 30.0, push)


def test_bad_args_are_refused_by_name() -> None:
    (app,) = load(SERVE_CONFIG)["applications"]
    with pytest.raises(Exception, match="replicaz"):
        build({**app["args"], "replicaz": 3})


def test_rayservice_embeds_the_serve_config_with_a_gpu_per_replica() -> None:
    service = load(RAYSERVICE)
    assert service["apiVersion"] == "ray.io/v1" and service["kind"] == "RayService"
    embedded = yaml.safe_load(service["spec"]["serveConfigV2"])
    ServeDeploySchema.model_validate(embedded)
    (app,) = embedded["applications"]
    assert app["args"]["num_gpus"] == 1
    want = load(SERVE_CONFIG)
    for key in ("num_gpus", "num_cpus"):
        del app["args"][key]
        del want["applications"][0]["args"][key]
    assert embedded == want
    workers = service["spec"]["rayClusterConfig"]["workerGroupSpecs"]
    limits = workers[0]["template"]["spec"]["containers"][0]["resources"]["limits"]
    assert limits["nvidia.com/gpu"] == "1"


def test_router_pow2_selects_rays_default_router(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DVN_CHECKPOINT", raising=False)
    (app,) = load(SERVE_CONFIG)["applications"]
    application = build({**app["args"], "router": "pow2"})
    engine = application._bound_deployment.init_args[0]._bound_deployment
    config = engine._deployment_config.request_router_config
    assert config.request_router_class == "server.ray.router:PowerOfTwoRouter"
    assert config.request_router_kwargs == {}
    from ray.serve._private.request_router import PowerOfTwoChoicesRequestRouter

    from server.ray.router import PowerOfTwoRouter

    assert issubclass(PowerOfTwoRouter, PowerOfTwoChoicesRequestRouter)
