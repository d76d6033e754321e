"""LevelPlan: the served forward of one (task, level) gives the model's logits, for
contiguous and index-gather levels, every architecture, and leaves the model untouched."""

from __future__ import annotations

import pytest
import torch

from model_store.inference import LevelPlan
from tests.model_store.conftest import COLOR, GRAY, SCRAMBLED, ModelFactory, warm_norms


@pytest.mark.parametrize("arch", ["resnet-tiny", "resnet-demo"])
@pytest.mark.parametrize("orders", [None, SCRAMBLED], ids=["contiguous", "scrambled"])
def test_plan_gives_the_models_logits(
    make_model: ModelFactory, arch: str, orders: tuple[tuple[int, ...], ...] | None
) -> None:
    model = warm_norms(make_model(arch=arch, orders=orders))
    for t, spec in enumerate((GRAY, COLOR)):
        x = torch.randn(5, *spec.input_shape, generator=torch.Generator().manual_seed(t))
        for level in range(1, model.config.num_levels + 1):
            plan = LevelPlan.build(model, t, level)
            with torch.inference_mode():
                want, got = model(x, t, level), plan(x)
            assert got.shape == (5, spec.num_classes)
            torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)


def test_plan_holds_only_its_levels_weights(make_model: ModelFactory) -> None:
    model = make_model(arch="resnet-demo")
    weights = {n: p for n, p in model.state_dict().items()}
    small, top = LevelPlan.build(model, 0, 1), LevelPlan.build(model, "gray", 4)
    assert 0 < small.nbytes < top.nbytes
    # the model is unchanged: same tensors, same values
    for name, tensor in model.state_dict().items():
        assert torch.equal(tensor, weights[name]), name
    # and the plan's tensors are copies, not views that would follow the model's weights
    assert small.stem.weight.data_ptr() != model.stems[0].weight.data_ptr()


def test_plan_is_a_snapshot(make_model: ModelFactory) -> None:
    model = make_model()
    x = torch.randn(2, *GRAY.input_shape)
    plan = LevelPlan.build(model, 0, 2)
    with torch.inference_mode():
        before = plan(x)
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(2.0)
    with torch.inference_mode():
        torch.testing.assert_close(plan(x), before)


def test_plan_refuses_unknown_task_and_level(make_model: ModelFactory) -> None:
    model = make_model()
    with pytest.raises(ValueError, match=r"level 5 is outside 1\.\.4"):
        LevelPlan.build(model, 0, 5)
    with pytest.raises(KeyError):
        LevelPlan.build(model, "nope", 1)
