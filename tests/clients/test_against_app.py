"""The clients against the real in-process app (``httpx.ASGITransport``, lifespan entered):
every input kind answers what the model computes, every error reaches the caller typed and
with the server's message, and ``LocalDVN`` on an export answers what the server does."""

from __future__ import annotations

import io
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import torch
from PIL import Image

from clients import errors
from clients.async_client import AsyncDVNClient
from clients.loadtest import LoadTestConfig, arun_loadtest
from clients.local import LocalDVN
from clients.results import InferResult, ModelSummary
from model_store.checkpoint import Checkpoint, load
from tests.conftest import ACCURACY, DIGITS, SHAPES, AppClient, ServeFactory
from tests.server.helpers import expected_probs, parse_metrics, series

TASKS = {"digits": DIGITS, "shapes": SHAPES}
# Parameter bytes of the tiny checkpoint's levels (float32, resnet-tiny over both tasks).
DIGITS_BYTES = {1: 1744, 2: 5816, 3: 12256, 4: 21064}
SHAPES_BYTES = {1: 1848, 2: 6032, 3: 12584, 4: 21504}
# Units of each level: the tasks walk the shared units in opposite orders.
UNITS = {
    "digits": [[0], [0, 1], [0, 1, 2], [0, 1, 2, 3]],
    "shapes": [[3], [3, 2], [3, 2, 1], [3, 2, 1, 0]],
}


@pytest.fixture(scope="module")
def reference(tiny_checkpoint: Path) -> Checkpoint:
    """The checkpoint the test servers load, run directly."""
    return load(tiny_checkpoint, "cpu")


@dataclass
class Served:
    dvn: AsyncDVNClient
    http: AppClient  # the raw app client (metrics)


async def connect(serve: ServeFactory, api_key: str | None = None, **settings: Any) -> Served:
    http = await serve(**settings)
    dvn = AsyncDVNClient(
        base_url="http://test", transport=httpx.ASGITransport(app=http.app), api_key=api_key
    )
    return Served(dvn, http)


@pytest.fixture
async def served(serve: ServeFactory) -> AsyncIterator[Served]:
    s = await connect(serve)
    async with s.dvn:
        yield s


def rng_array(seed: int, *shape: int) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


def preprocess(image_bytes: bytes, task: str) -> np.ndarray:
    """The task's image preprocessing, written out: colour mode, bilinear resize to (W, H),
    /255, (x - mean) / std; (1, C, H, W)."""
    prep = TASKS[task].preprocessing
    image = Image.open(io.BytesIO(image_bytes)).convert(prep.color_mode)
    h, w = prep.size
    pixels = np.asarray(image.resize((w, h), Image.Resampling.BILINEAR), dtype=np.float32) / 255
    chw = pixels[None] if pixels.ndim == 2 else pixels.transpose(2, 0, 1)
    mean = np.asarray(prep.mean, dtype=np.float32)[:, None, None]
    std = np.asarray(prep.std, dtype=np.float32)[:, None, None]
    return ((chw - mean) / std)[None]


def image_bytes(fmt: str, size: tuple[int, int], seed: int) -> bytes:
    pixels = np.random.default_rng(seed).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels, "RGB").save(buffer, format=fmt)
    return buffer.getvalue()


def check_result(
    reference: Checkpoint, result: InferResult, x: np.ndarray, models: ModelSummary
) -> None:
    """``result`` is the model's answer for ``x`` (B, C, H, W) at the level it reports."""
    want = expected_probs(reference, result.task, result.level, x)
    assert len(result.predictions) == len(want)
    classes = TASKS[result.task].classes
    for row, pred in zip(want, result.predictions, strict=True):
        assert pred.probabilities is not None and pred.top_k is None
        np.testing.assert_allclose(pred.probabilities, row, rtol=0, atol=1e-5)
        assert pred.class_index == int(row.argmax())
        assert pred.class_name == classes[int(row.argmax())]
        assert abs(pred.probability - float(row.max())) <= 1e-5
    level = models.task(result.task).levels[result.level - 1]
    assert result.units == level.units
    assert result.cost.param_bytes == level.param_bytes
    assert result.cost.params == level.params and result.cost.flops == level.flops
    assert result.model.name == "tiny" and result.model.version == "0.0.1"
    assert result.model.sha256 == reference.manifest.weights_sha256
    assert result.request_id is not None and len(result.request_id) == 32


async def test_every_input_kind_answers_what_the_model_computes(
    served: Served, reference: Checkpoint, tmp_path: Path
) -> None:
    dvn = served.dvn
    models = await dvn.models()

    single = rng_array(1, 1, 8, 8)
    r = await dvn.infer("digits", single)
    assert (r.task, r.level, r.selection, r.budget) == ("digits", 4, "default", None)
    check_result(reference, r, single[None], models)

    batch = rng_array(2, 3, 3, 16, 16)
    r = await dvn.infer("shapes", batch, level=2)
    assert (r.task, r.level, r.selection, r.units) == ("shapes", 2, "pinned", [3, 2])
    check_result(reference, r, batch, models)

    tensor = torch.from_numpy(rng_array(3, 2, 1, 8, 8))
    r = await dvn.infer("digits", tensor, budget=f"{DIGITS_BYTES[3]}B")
    assert (r.level, r.selection) == (3, "budget")
    assert r.budget is not None
    assert (r.budget.met, r.budget.memory_met, r.budget.latency_met) == (True, True, None)
    assert r.budget.memory_bytes == DIGITS_BYTES[3] and r.budget.latency_s is None
    check_result(reference, r, tensor.numpy(), models)

    # float64 tensors travel as float64; the server computes in float32
    wide = torch.from_numpy(rng_array(4, 1, 8, 8)).double()
    r = await dvn.infer("digits", wide, level=1)
    check_result(reference, r, wide.float().numpy()[None], models)

    # a PNG file, not of the task's size or colour mode: the server preprocesses it
    png = image_bytes("PNG", (13, 11), seed=5)
    (tmp_path / "digit.png").write_bytes(png)
    r = await dvn.infer("digits", tmp_path / "digit.png", level=3)
    check_result(reference, r, preprocess(png, "digits"), models)
    r = await dvn.infer("shapes", str(tmp_path / "digit.png"))
    assert r.level == 4
    check_result(reference, r, preprocess(png, "shapes"), models)

    # JPEG bytes: the expectation decodes the same bytes
    jpeg = image_bytes("JPEG", (20, 24), seed=6)
    r = await dvn.infer("shapes", jpeg, level=1)
    check_result(reference, r, preprocess(jpeg, "shapes"), models)

    # top_k: the k most probable classes, best first
    r = await dvn.infer("shapes", batch[:1], level=2, top_k=3)
    want = expected_probs(reference, "shapes", 2, batch[:1])[0]
    (pred,) = r.predictions
    assert pred.probabilities is None and pred.top_k is not None
    order = np.argsort(-want, kind="stable")[:3]
    assert [c.class_index for c in pred.top_k] == order.tolist()
    assert [c.class_name for c in pred.top_k] == [SHAPES.classes[i] for i in order]
    np.testing.assert_allclose([c.probability for c in pred.top_k], want[order], atol=1e-5)


def digits_unsatisfiable(budget_bytes: int, human: str) -> str:
    return (
        f"memory budget {budget_bytes} B ({human}) is below the smallest level of task "
        f"'digits': level 1 needs {DIGITS_BYTES[1]} B (1.7 KiB); raise the budget to at least that"
    )


async def test_every_error_arrives_typed_with_the_servers_message(
    served: Served, tmp_path: Path
) -> None:
    dvn = served.dvn
    x = rng_array(7, 1, 8, 8)
    cases: list[tuple[Callable[[], Awaitable[object]], type[errors.DVNError], int, str, str]] = [
        (
            lambda: dvn.infer("nope", x),
            errors.UnknownTaskError,
            404,
            "unknown_task",
            "unknown task 'nope'; this server serves: digits, shapes",
        ),
        (
            lambda: dvn.plan("nope"),
            errors.UnknownTaskError,
            404,
            "unknown_task",
            "unknown task 'nope'; this server serves: digits, shapes",
        ),
        (
            lambda: dvn.infer("digits", x, budget="5xs"),
            errors.InvalidBudgetError,
            422,
            "invalid_budget",
            "budget '5xs': unknown unit 'xs'; use one of us, ms, s, B, kB, MB, GB, KiB, MiB, "
            "GiB (units are case-sensitive), e.g. budget=15ms,2MiB",
        ),
        (
            lambda: dvn.infer("digits", x, budget="5ms,6ms"),
            errors.InvalidBudgetError,
            422,
            "invalid_budget",
            "budget '5ms,6ms': more than one latency constraint; give one",
        ),
        (
            lambda: dvn.plan("digits", budget="-1ms"),
            errors.InvalidBudgetError,
            422,
            "invalid_budget",
            "budget '-1ms': cannot read '-1ms'; each constraint is a positive number and a "
            "unit (us, ms, s, B, kB, MB, GB, KiB, MiB, GiB), e.g. budget=15ms,2MiB",
        ),
        (
            lambda: dvn.infer("digits", x, budget="1.5KiB"),
            errors.BudgetUnsatisfiableError,
            422,
            "budget_unsatisfiable",
            digits_unsatisfiable(1536, "1.5 KiB"),
        ),
        (
            lambda: dvn.infer("digits", x, budget="20ms,1743B"),
            errors.BudgetUnsatisfiableError,
            422,
            "budget_unsatisfiable",
            digits_unsatisfiable(1743, "1.7 KiB"),
        ),
        (
            lambda: dvn.export("digits", budget="1.5KiB", out_dir=tmp_path / "never"),
            errors.BudgetUnsatisfiableError,
            422,
            "budget_unsatisfiable",
            digits_unsatisfiable(1536, "1.5 KiB"),
        ),
        (
            lambda: dvn.infer("digits", x, level=5),
            errors.InvalidParameterError,
            422,
            "invalid_parameter",
            "level 5 is out of range for task 'digits': use 1..4",
        ),
        (
            lambda: dvn.infer("digits", x, level=0),
            errors.InvalidParameterError,
            422,
            "invalid_parameter",
            "level 0 is out of range for task 'digits': use 1..4",
        ),
        (
            lambda: dvn.export("shapes", level=9, out_dir=tmp_path / "never"),
            errors.InvalidParameterError,
            422,
            "invalid_parameter",
            "level 9 is out of range for task 'shapes': use 1..4",
        ),
        (
            lambda: dvn.infer("digits", x, top_k=0),
            errors.InvalidParameterError,
            422,
            "invalid_parameter",
            "top_k must be at least 1, got 0",
        ),
        (
            lambda: dvn.export("digits", budget="5ms", out_dir=tmp_path / "never"),
            errors.InvalidParameterError,
            422,
            "invalid_parameter",
            "export takes a memory budget only, e.g. ?budget=2MiB (or use "
            "/v1/models/digits/levels/{level}/export)",
        ),
        (
            lambda: dvn.infer("digits", rng_array(8, 1, 7, 7)),
            errors.InvalidInputError,
            400,
            "invalid_input",
            "task 'digits' takes one example of shape (1, 8, 8) or a batch (B, 1, 8, 8); "
            "got shape (1, 7, 7)",
        ),
        (
            lambda: dvn.infer("shapes", rng_array(9, 2, 1, 16, 16)),
            errors.InvalidInputError,
            400,
            "invalid_input",
            "task 'shapes' takes one example of shape (3, 16, 16) or a batch (B, 3, 16, 16); "
            "got shape (2, 1, 16, 16)",
        ),
        (
            lambda: dvn.infer("digits", np.full((1, 8, 8), np.nan, dtype=np.float32)),
            errors.InvalidInputError,
            400,
            "invalid_input",
            "inputs contain NaN or Inf (first at index (0, 0, 0, 0), after float32 "
            "conversion); send finite values",
        ),
    ]
    for call, cls, status, type_, message in cases:
        with pytest.raises(errors.DVNError) as info:
            await call()
        e = info.value
        assert type(e) is cls, (type_, e)
        assert (e.status, e.type, e.message, str(e)) == (status, type_, message, message)
        assert e.request_id is not None and len(e.request_id) == 32
        assert e.retry_after is None
    assert not (tmp_path / "never").exists()


async def test_api_keys(serve: ServeFactory, reference: Checkpoint) -> None:
    x = rng_array(10, 1, 8, 8)
    no_key = (
        "this server needs an API key: send 'Authorization: Bearer <key>' or 'X-API-Key: <key>'"
    )
    for api_key, cls, status, type_, message in [
        (None, errors.UnauthorizedError, 401, "unauthorized", no_key),
        ("wrong", errors.ForbiddenError, 403, "forbidden", "the API key is not valid for this server"),
    ]:  # fmt: skip
        s = await connect(serve, api_key=api_key, api_keys=["k"])
        async with s.dvn as dvn:
            for call in (dvn.infer("digits", x), dvn.models(), dvn.plan("digits")):
                with pytest.raises(cls) as info:
                    await call
                assert (info.value.status, info.value.type) == (status, type_)
                assert info.value.message == message
            # health probes are open unless protect_health is set
            assert await dvn.healthy() is True
            assert await dvn.ready() is True
    s = await connect(serve, api_key="k", api_keys=["k"])
    async with s.dvn as dvn:
        r = await dvn.infer("digits", x, level=2)
        assert r.level == 2
        check_result(reference, r, x[None], await dvn.models())


async def test_models_plan_and_probes(served: Served, reference: Checkpoint) -> None:
    dvn = served.dvn
    assert await dvn.healthy() is True
    assert await dvn.ready() is True

    models = await dvn.models()
    assert (models.name, models.version, models.device, models.num_units) == (
        "tiny",
        "0.0.1",
        "cpu",
        4,
    )
    assert models.sha256 == reference.manifest.weights_sha256
    assert [t.name for t in models.tasks] == ["digits", "shapes"]
    for info, (spec, sizes) in zip(
        models.tasks, [(DIGITS, DIGITS_BYTES), (SHAPES, SHAPES_BYTES)], strict=True
    ):
        assert info.classes == list(spec.classes)
        assert info.input_shape == list(spec.input_shape)
        prep = spec.preprocessing
        assert (info.preprocessing.color_mode, info.preprocessing.size) == (
            prep.color_mode,
            list(prep.size),
        )
        assert (info.preprocessing.mean, info.preprocessing.std) == (
            list(prep.mean),
            list(prep.std),
        )
        assert [lv.level for lv in info.levels] == [1, 2, 3, 4]
        assert [lv.units for lv in info.levels] == UNITS[info.name]
        assert info.unit_order == UNITS[info.name][-1]
        assert {lv.level: lv.param_bytes for lv in info.levels} == sizes
        assert [lv.param_bytes for lv in info.levels] == [4 * lv.params for lv in info.levels]
        assert [lv.accuracy for lv in info.levels] == [ACCURACY[lv] for lv in range(1, 5)]
        for lv in info.levels:
            assert lv.latency_ms and all(ms > 0 for ms in lv.latency_ms.values())
    assert models.task("shapes").name == "shapes"

    plan = await dvn.plan("digits")
    assert (plan.task, plan.level, plan.selection, plan.budget_met, plan.budget, plan.error) == (
        "digits",
        4,
        "default",
        None,
        None,
        None,
    )
    assert [lv.param_bytes for lv in plan.levels] == list(DIGITS_BYTES.values())
    assert [lv.accuracy for lv in plan.levels] == [0.6, 0.7, 0.8, 0.9]
    assert all(lv.fits_memory and lv.fits_latency for lv in plan.levels)

    budget = f"{SHAPES_BYTES[3] - 1}B"
    plan = await dvn.plan("shapes", budget=budget)
    assert (plan.level, plan.selection, plan.budget_met, plan.error) == (2, "budget", True, None)
    assert plan.budget is not None
    assert (plan.budget.spec, plan.budget.memory_bytes, plan.budget.latency_s) == (
        budget,
        SHAPES_BYTES[3] - 1,
        None,
    )
    assert [lv.fits_memory for lv in plan.levels] == [True, True, False, False]
    assert [lv.fits_latency for lv in plan.levels] == [True] * 4
    # the request gets the level the plan said
    r = await dvn.infer("shapes", rng_array(11, 3, 16, 16), budget=budget)
    assert (r.level, r.selection, r.budget_met) == (2, "budget", True)

    plan = await dvn.plan("digits", budget="1.5KiB")
    assert (plan.level, plan.selection, plan.budget_met) == (None, None, None)
    assert plan.error is not None
    assert (plan.error.type, plan.error.message) == (
        "budget_unsatisfiable",
        digits_unsatisfiable(1536, "1.5 KiB"),
    )
    assert [lv.fits_memory for lv in plan.levels] == [False] * 4


async def test_local_dvn_outputs_equal_the_servers(served: Served, tmp_path: Path) -> None:
    """An exported (task, level), run by LocalDVN, answers what the server answers at
    that pinned level, for the same inputs."""
    dvn = served.dvn
    models = await dvn.models()
    for task, level in [("digits", 1), ("digits", 3), ("shapes", 2), ("shapes", 4)]:
        path = await dvn.export(task, level, out_dir=tmp_path / f"{task}-{level}")
        assert path == tmp_path / f"{task}-{level}"
        assert sorted(p.name for p in path.iterdir()) == ["manifest.json", "weights.safetensors"]
        local = LocalDVN.load(path)
        info = models.task(task).levels[level - 1]
        assert (local.task, local.level, local.units) == (task, level, tuple(info.units))
        assert local.param_bytes == info.param_bytes
        assert local.classes == TASKS[task].classes
        assert local.input_shape == TASKS[task].input_shape
        x = rng_array(20 + level, 5, *TASKS[task].input_shape)
        server = await dvn.infer(task, x, level=level)
        mine = local.predict(x)
        assert len(mine) == len(server.predictions) == 5
        for got, want in zip(mine, server.predictions, strict=True):
            assert got.probabilities is not None and want.probabilities is not None
            np.testing.assert_allclose(got.probabilities, want.probabilities, rtol=0, atol=1e-5)
            assert (got.class_index, got.class_name) == (want.class_index, want.class_name)
            assert abs(got.probability - want.probability) <= 1e-5
        ranked = local.predict(x[0], top_k=2)[0]
        served_top = (await dvn.infer(task, x[0], level=level, top_k=2)).predictions[0]
        assert ranked.top_k is not None and served_top.top_k is not None
        assert [c.class_index for c in ranked.top_k] == [c.class_index for c in served_top.top_k]


@pytest.mark.parametrize(
    ("budget", "level"),
    [
        (f"{DIGITS_BYTES[1]}B", 1),
        (f"{DIGITS_BYTES[3] - 1}B", 2),
        (f"{DIGITS_BYTES[3]}B", 3),
        ("12.256kB", 3),
        ("1GiB", 4),
    ],
)
async def test_export_by_memory_budget_picks_the_largest_level_that_fits(
    served: Served, tmp_path: Path, budget: str, level: int
) -> None:
    dvn = served.dvn
    path = await dvn.export("digits", budget=budget, out_dir=tmp_path / "out")
    local = LocalDVN.load(path)
    assert (local.task, local.level, local.param_bytes) == ("digits", level, DIGITS_BYTES[level])
    x = rng_array(30, 4, 1, 8, 8)
    want = (await dvn.infer("digits", x, level=level)).predictions
    for got, ref in zip(local.predict(x), want, strict=True):
        assert ref.probabilities is not None and got.probabilities is not None
        np.testing.assert_allclose(got.probabilities, ref.probabilities, rtol=0, atol=1e-5)


def digits_requests(text: str) -> dict[tuple[str, str], float]:
    """``dvn_requests_total`` of task digits: (level, outcome) -> count."""
    found: dict[tuple[str, str], float] = {}
    for labels, value in series(parse_metrics(text), "dvn_requests_total").items():
        d = dict(labels)
        if d["task"] == "digits":
            found[(d["level"], d["outcome"])] = value
    return found


async def test_loadtest_accounting_matches_the_servers_metrics(serve: ServeFactory) -> None:
    """One-deep queues and one-example batches at a pinned level: some requests are shed
    with queue_full, and every request the load generator sent is counted once by the
    server."""
    http = await serve(max_queue_size=1, max_batch_size=1, max_batch_delay_ms=0)
    before = digits_requests((await http.get("/metrics")).text)
    config = LoadTestConfig(
        url="http://test",
        transport=httpx.ASGITransport(app=http.app),
        mode="closed",
        concurrency=8,
        duration=1.5,
        warmup=0.3,
        task_mix="digits:1",
        level=4,
        seed=3,
        timeout=10.0,
    )
    report = await arun_loadtest(config)
    after = digits_requests((await http.get("/metrics")).text)

    assert report.sent == report.ok + report.errors + report.timeouts
    assert report.sent > 0 and report.warmup_sent > 0 and report.ok > 0
    assert report.timeouts == 0 and report.not_sent == 0
    assert report.errors_by_type == {"queue_full": report.errors}
    assert report.errors > 0
    assert report.levels == {"digits": {4: report.ok}}
    assert report.budget_attainment == {}
    assert report.duration_s == 1.5
    assert report.achieved_rate == pytest.approx(report.ok / 1.5)
    assert report.offered_rate == pytest.approx(report.sent / 1.5)
    assert set(report.latency_ms) == {"p50", "p90", "p99", "p99.9", "max", "mean"}
    assert 0 < report.latency_ms["p50"] <= report.latency_ms["p99"] <= report.latency_ms["max"]
    assert report.config == {
        "url": "http://test",
        "mode": "closed",
        "concurrency": 8,
        "duration_s": 1.5,
        "warmup_s": 0.3,
        "budget_mix": "none:1",
        "task_mix": "digits:1",
        "level": 4,
        "on_miss": None,
        "seed": 3,
        "timeout_s": 10.0,
    }
    delta = {k: after[k] - before.get(k, 0.0) for k in after if after[k] != before.get(k, 0.0)}
    assert sum(delta.values()) == report.sent + report.warmup_sent
    # answered at level 4; shed before a level was queued (no level label)
    assert set(delta) <= {("4", "ok"), ("none", "rejected")}
    assert delta[("4", "ok")] >= report.ok
    assert delta[("none", "rejected")] >= report.errors
