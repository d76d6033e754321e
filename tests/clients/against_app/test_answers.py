"""Every input kind answers what the model computes, and ``LocalDVN`` on an export
answers what the server does."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from clients.local import LocalDVN
from model_store.checkpoint import Checkpoint
from tests.clients.against_app.helpers import (
    DIGITS_BYTES,
    TASKS,
    Served,
    check_result,
    image_bytes,
    preprocess,
    rng_array,
)
from tests.conftest import SHAPES
from tests.server.helpers import expected_probs


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
