"""The clients' view of ``/v1/models``, ``/plan`` and the health probes."""

from __future__ import annotations

from model_store.checkpoint import Checkpoint
from tests.clients.against_app.helpers import (
    DIGITS_BYTES,
    SHAPES_BYTES,
    UNITS,
    Served,
    digits_unsatisfiable,
    rng_array,
)
from tests.conftest import ACCURACY, DIGITS, SHAPES


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
