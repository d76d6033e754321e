"""/metrics after a known mix of requests: exact counts, parsed with prometheus_client."""

from __future__ import annotations

import pytest
from prometheus_client.parser import text_string_to_metric_families

from model_store.checkpoint import Checkpoint
from model_store.costs import unit_param_bytes
from server.metrics import BATCH_BUCKETS, LATENCY_BUCKETS
from tests.conftest import AppClient, ServeFactory
from tests.server.helpers import Samples, error_of, example, parse_metrics, series

Labels = tuple[tuple[str, str], ...]


def labels(**kv: str) -> Labels:
    return tuple(sorted(kv.items()))


def nonzero(samples: Samples, name: str) -> dict[Labels, float]:
    return {k: v for k, v in series(samples, name).items() if v != 0}


async def scrape(client: AppClient) -> Samples:
    r = await client.get("/metrics")
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/plain; version=")
    return parse_metrics(r.text)


async def send_known_mix(client: AppClient, reference: Checkpoint) -> None:
    """3 digits pinned at level 1, 2 shapes (2 examples each) under a memory budget that
    fits level 2, then one each of: invalid input, unknown task, unsatisfiable budget."""
    for i in range(3):
        r = await client.post("/infer/digits?level=1", json={"inputs": example("digits", i).tolist()})  # fmt: skip
        assert (r.status_code, r.json()["level"]) == (200, 1)
    limit = reference.manifest.task("shapes").levels[1].param_bytes
    for i in range(2):
        x = example("shapes", i, batch=2)
        r = await client.post(f"/infer/shapes?budget={limit}B", json={"inputs": x.tolist()})
        assert (r.status_code, r.json()["level"], r.json()["selection"]) == (200, 2, "budget")
    r = await client.post("/infer/digits", json={"inputs": [[1.0]]})
    assert error_of(r)[:2] == (400, "invalid_input")
    r = await client.post("/infer/cifar", json={"inputs": [[1.0]]})
    assert error_of(r)[:2] == (404, "unknown_task")
    r = await client.post("/infer/digits?budget=1B", json={"inputs": example("digits", 0).tolist()})  # fmt: skip
    assert error_of(r)[:2] == (422, "budget_unsatisfiable")


async def test_counts_of_a_known_mix(client: AppClient, reference: Checkpoint) -> None:
    await send_known_mix(client, reference)
    s = await scrape(client)
    assert nonzero(s, "dvn_requests_total") == {
        labels(task="digits", level="1", outcome="ok"): 3,
        labels(task="shapes", level="2", outcome="ok"): 2,
        labels(task="digits", level="none", outcome="invalid"): 2,
        labels(task="unknown", level="none", outcome="invalid"): 1,
    }
    # Every (task, level, outcome) series exists from the start, at zero.
    assert len(series(s, "dvn_requests_total")) == 2 * 4 * 5 + 2
    assert series(s, "dvn_level_selected_total") == {
        labels(task="digits", level="1", reason="pinned"): 3,
        labels(task="shapes", level="2", reason="budget"): 2,
    }
    assert series(s, "dvn_budget_total") == {
        labels(task="shapes", kind="memory", result="met"): 2,
        # the budget_unsatisfiable request: refused by its memory budget
        labels(task="digits", kind="memory", result="missed"): 1,
    }
    digits_units = reference.manifest.task("digits").levels[0].units
    shapes_units = reference.manifest.task("shapes").levels[1].units
    assert (digits_units, shapes_units) == ([0], [3, 2])
    assert series(s, "dvn_unit_requests_total") == {
        **{labels(unit=str(u), task="digits"): 3 for u in digits_units},
        **{labels(unit=str(u), task="shapes"): 2 for u in shapes_units},
    }
    assert series(s, "dvn_unit_examples_total") == {
        labels(unit="0"): 3,  # 3 requests of 1 example at digits level 1
        labels(unit="3"): 4,  # 2 requests of 2 examples at shapes level 2
        labels(unit="2"): 4,
    }
    served = {labels(task="digits", level="1"): 3, labels(task="shapes", level="2"): 2}
    for name in ("dvn_request_duration_seconds", "dvn_queue_wait_seconds"):
        assert series(s, f"{name}_count") == served, name
    # Requests sent one at a time: one batch each.
    assert series(s, "dvn_compute_seconds_count") == served
    assert series(s, "dvn_batch_size_count") == served
    assert series(s, "dvn_batch_size_sum") == {
        labels(task="digits", level="1"): 3,
        labels(task="shapes", level="2"): 4,
    }
    assert series(s, "dvn_batch_failures_total") == {}
    assert series(s, "dvn_inflight_requests") == {(): 0}
    assert set(series(s, "dvn_queue_depth").values()) == {0}
    assert set(series(s, "dvn_queue_capacity").values()) == {256}
    assert len(series(s, "dvn_queue_depth")) == 8
    predicted = series(s, "dvn_level_predicted_latency_seconds")
    assert len(predicted) == 8
    assert all(0 < v < 1 for v in predicted.values())


async def test_latency_budget_counts(client: AppClient) -> None:
    x = {"inputs": example("digits", 0).tolist()}
    assert (await client.post("/infer/digits?budget=10s", json=x)).json()["level"] == 4
    # Passed before its batch forms: not computed, under degrade as under reject.
    r = await client.post("/infer/digits?budget=1us", json=x)
    assert error_of(r)[:2] == (504, "deadline_exceeded")
    r = await client.post("/infer/digits?budget=1us&on_miss=reject", json=x)
    assert error_of(r)[:2] == (503, "deadline_unmeetable")
    s = await scrape(client)
    assert series(s, "dvn_budget_total") == {
        labels(task="digits", kind="latency", result="met"): 1,
        labels(task="digits", kind="latency", result="missed"): 2,
    }
    assert series(s, "dvn_level_selected_total") == {
        labels(task="digits", level="4", reason="budget"): 1,
    }
    assert nonzero(s, "dvn_requests_total") == {
        labels(task="digits", level="4", outcome="ok"): 1,
        labels(task="digits", level="none", outcome="rejected"): 2,
    }
    assert series(s, "dvn_unit_requests_total") == {
        labels(unit=str(u), task="digits"): 1 for u in (0, 1, 2, 3)
    }


async def test_operations_endpoints_are_not_counted(
    client: AppClient, reference: Checkpoint
) -> None:
    await send_known_mix(client, reference)
    before = await scrape(client)
    for path in ("/metrics", "/healthz", "/readyz", "/metrics", "/healthz", "/readyz"):
        assert (await client.get(path)).status_code == 200
    assert await scrape(client) == before


async def test_each_app_has_its_own_registry(serve: ServeFactory) -> None:
    a, b = await serve(), await serve()
    assert a.app.state.runtime.metrics.registry is not b.app.state.runtime.metrics.registry
    for _ in range(2):
        r = await a.post("/infer/digits?level=2", json={"inputs": example("digits", 0).tolist()})
        assert r.status_code == 200
    sa, sb = await scrape(a), await scrape(b)
    assert nonzero(sa, "dvn_requests_total") == {labels(task="digits", level="2", outcome="ok"): 2}
    assert nonzero(sb, "dvn_requests_total") == {}
    assert series(sb, "dvn_unit_examples_total") == {}


FAMILIES = {
    "dvn_requests": "counter",
    "dvn_unit_requests": "counter",
    "dvn_unit_examples": "counter",
    "dvn_level_selected": "counter",
    "dvn_budget": "counter",
    "dvn_batch_failures": "counter",
    "dvn_request_duration_seconds": "histogram",
    "dvn_queue_wait_seconds": "histogram",
    "dvn_compute_seconds": "histogram",
    "dvn_batch_size": "histogram",
    "dvn_queue_depth": "gauge",
    "dvn_queue_capacity": "gauge",
    "dvn_inflight_requests": "gauge",
    "dvn_level_predicted_latency_seconds": "gauge",
    "dvn_level_ceiling": "gauge",
    "dvn_prediction_error_seconds": "gauge",
    "dvn_model_info": "gauge",  # an Info is a gauge in the Prometheus text format
    "dvn_model_param_bytes": "gauge",
    "dvn_unit_param_bytes": "gauge",
    # the front ends' own
    "dvn_engine_up": "gauge",
    "dvn_ipc_seconds": "histogram",
}


async def test_every_design_metric_is_exposed(client: AppClient, reference: Checkpoint) -> None:
    fresh = (await client.get("/metrics")).text
    families = {f.name: f.type for f in text_string_to_metric_families(fresh)}
    assert {k: v for k, v in families.items() if not k.endswith("_created")} == FAMILIES
    await send_known_mix(client, reference)
    s = await scrape(client)
    names = {name for name, _ in s}
    for name in (
        "dvn_requests_total", "dvn_unit_requests_total", "dvn_unit_examples_total",
        "dvn_level_selected_total", "dvn_budget_total", "dvn_queue_depth",
        "dvn_queue_capacity", "dvn_inflight_requests", "dvn_level_predicted_latency_seconds",
        "dvn_model_info", "dvn_model_param_bytes", "dvn_unit_param_bytes",
    ):  # fmt: skip
        assert name in names, name
    m = reference.manifest
    assert series(s, "dvn_model_info") == {
        labels(name="tiny", version="0.0.1", sha256=m.weights_sha256, device="cpu"): 1
    }
    state = reference.model.state_dict().values()
    assert series(s, "dvn_model_param_bytes") == {
        (): sum(t.numel() * t.element_size() for t in state)
    }
    assert series(s, "dvn_unit_param_bytes") == {
        labels(unit=str(u)): n for u, n in unit_param_bytes(reference.model).items()
    }
    for name, buckets in (
        ("dvn_request_duration_seconds", LATENCY_BUCKETS),
        ("dvn_queue_wait_seconds", LATENCY_BUCKETS),
        ("dvn_compute_seconds", LATENCY_BUCKETS),
        ("dvn_batch_size", BATCH_BUCKETS),
    ):
        bucket_series = series(s, f"{name}_bucket")
        les = {dict(k)["le"] for k in bucket_series if dict(k)["task"] == "digits"}
        assert sorted(float(le) for le in les) == [*map(float, buckets), float("inf")], name
        # Cumulative, ending at the count.
        key = labels(task="digits", level="1")
        row = sorted(
            ((float(dict(k)["le"]), v) for k, v in bucket_series.items()
             if tuple(p for p in k if p[0] != "le") == key),
        )  # fmt: skip
        assert [v for _, v in row] == sorted(v for _, v in row)
        assert row[-1][1] == series(s, f"{name}_count")[key] == 3


@pytest.mark.parametrize("queue", [1, 7])
async def test_queue_capacity_follows_settings(serve: ServeFactory, queue: int) -> None:
    s = await scrape(await serve(max_queue_size=queue))
    assert set(series(s, "dvn_queue_capacity").values()) == {queue}
