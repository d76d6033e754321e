"""The one walk over a level (``DVN.active``): it yields exactly the layers the level uses,
with their channel sets; the four things that walk a level (forward, plan, costs, export)
agree with it; and the one level-range check refuses for all of them alike."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch
from torch import nn

from model_store.active import ActiveConv, ActiveLevel
from model_store.arch import DVNConfig, get_architecture
from model_store.costs import level_params, trunk_params
from model_store.export import extract_level
from model_store.inference import LevelPlan
from model_store.layers import Norm2d, UnitConv2d, count
from model_store.model import DVN
from tests.model_store.conftest import COLOR, GRAY, SCRAMBLED, ModelFactory

ORDERS = {"paper": None, "scrambled": SCRAMBLED}
PAIRS = [(t, level) for t in (0, 1) for level in (1, 2, 3, 4)]


@pytest.fixture(
    scope="module", params=[(a, o) for a in ("resnet-tiny", "resnet-demo") for o in ORDERS]
)
def model(request: pytest.FixtureRequest) -> DVN:
    arch, orders = request.param
    torch.manual_seed(0)
    cfg = DVNConfig.create(get_architecture(arch), [GRAY, COLOR], ORDERS[orders], arch)
    return DVN(cfg).eval()


def module_names(model: DVN) -> dict[int, str]:
    return {id(m): name for name, m in model.named_modules()}


def expected_layers(model: DVN, task: int, level: int) -> list[tuple[str, str]]:
    """(conv, norm) module names that ``(task, level)`` uses, written out from the
    architecture: the task's stem, then every block's conv1, conv2 and projection."""
    k = model.config.num_units
    norm = f"norms.{task * k + level - 1}"
    layers = [(f"stems.{task}", f"stem_norms.{norm}")]
    for s, blocks in enumerate(model.config.backbone.blocks):
        for b in range(blocks):
            prefix = f"stages.{s}.{b}"
            layers += [(f"{prefix}.conv1", f"{prefix}.norm1.{norm}")]
            layers += [(f"{prefix}.conv2", f"{prefix}.norm2.{norm}")]
            if isinstance(model.get_submodule(prefix).project, UnitConv2d):
                layers += [(f"{prefix}.project", f"{prefix}.norm_project.{norm}")]
    return layers


@pytest.mark.parametrize(("task", "level"), PAIRS)
def test_walk_yields_exactly_the_layers_of_the_level(model: DVN, task: int, level: int) -> None:
    active = model.active(task, level)
    names = module_names(model)
    walked = [(names[id(c.conv)], names[id(c.norm)]) for c in active.convs()]
    assert walked == expected_layers(model, task, level)
    assert names[id(active.head)] == f"heads.{task * 4 + level - 1}"
    assert (active.task, active.level) == (task, level)
    assert [c for b in active.blocks for c in b.convs()] == list(active.trunk())
    assert list(active.convs()) == [active.stem, *active.trunk()]


@pytest.mark.parametrize(("task", "level"), PAIRS)
def test_walk_channel_sets_are_the_levels_units(model: DVN, task: int, level: int) -> None:
    """Every convolution's rows are its stage's channels of the level's units, its columns
    the previous layer's (the stem's: every channel of the image)."""
    active = model.active(task, level)
    units = model.config.unit_set(task, level)
    widths = model.config.backbone.widths

    def channels(c: ActiveConv, dim: int) -> list[int] | None:
        sel = c.out if dim == 0 else c.inp
        if sel is None:
            return None
        full = torch.arange(c.conv.weight.shape[dim])
        return full[sel].tolist()

    assert channels(active.stem, 0) == units.channel_indices(widths[0])
    assert channels(active.stem, 1) is None
    prev = units.channel_indices(widths[0])
    for block in active.blocks:
        out = units.channel_indices(widths[block.stage])
        assert channels(block.conv1, 0) == out and channels(block.conv1, 1) == prev
        assert channels(block.conv2, 0) == out and channels(block.conv2, 1) == out
        if block.project is not None:
            assert channels(block.project, 0) == out and channels(block.project, 1) == prev
        prev = out
    for c in active.convs():
        w = c.weight()
        assert w.shape[:2] == (
            count(c.out, c.conv.weight.shape[0]),
            count(c.inp, c.conv.weight.shape[1]),
        )
        assert c.norm.weight.numel() == w.shape[0]
        assert c.params() == w.numel()


@pytest.mark.parametrize(("task", "level"), PAIRS)
def test_the_forward_runs_what_the_walk_yields(model: DVN, task: int, level: int) -> None:
    """Hooks on every convolution and norm: the forward runs the walk's layers, in its
    order, each once, at the walk's widths, and nothing else."""
    ran: list[tuple[nn.Module, int]] = []
    hooks = [
        m.register_forward_hook(lambda m, _, y: ran.append((m, y.shape[1])))
        for m in model.modules()
        if isinstance(m, UnitConv2d | Norm2d)
    ]
    try:
        with torch.no_grad():
            model(torch.zeros(1, *model.config.tasks[task].input_shape), task, level)
    finally:
        for h in hooks:
            h.remove()
    active = model.active(task, level)
    want = []
    for c in active.convs():
        want += [(c.conv, c.weight().shape[0]), (c.norm, c.weight().shape[0])]
    assert [(id(m), n) for m, n in ran] == [(id(m), n) for m, n in want]


@pytest.mark.parametrize(("task", "level"), PAIRS)
def test_plan_costs_and_export_agree_with_the_walk(model: DVN, task: int, level: int) -> None:
    active = model.active(task, level)
    walked = list(active.convs())
    head = sum(p.numel() for p in active.head.parameters())
    params = sum(c.params() + c.norm.level_params() for c in walked) + head
    # costs
    assert level_params(model, task, level) == params
    assert trunk_params(model, task, level) == sum(c.params() for c in active.trunk())
    # plan: one folded convolution of the walk's shape for each convolution walked
    plan = LevelPlan.build(model, task, level)
    folded = [plan.stem]
    for b in plan.blocks:
        folded += [b.conv1, b.conv2] + ([b.project] if b.project is not None else [])
    assert [f.weight.shape for f in folded] == [c.weight().shape for c in walked]
    assert [(f.stride, f.padding) for f in folded] == [(c.stride, c.padding) for c in walked]
    # export: the walk's blocks copied out, stored numbers equal to the costs'
    sub = extract_level(model, task, level)
    sub_walked = list(sub.active(0, 1).convs())
    assert len(sub_walked) == len(walked)
    for c, s in zip(walked, sub_walked, strict=True):
        assert torch.equal(s.weight(), c.weight())
        assert torch.equal(s.norm.running_var, c.norm.running_var)
    assert sum(v.numel() for v in sub.state_dict().values()) == params


def test_walk_of_a_contiguous_level_holds_views_not_copies(make_model: ModelFactory) -> None:
    model = make_model()
    active = model.active(0, 2)
    assert isinstance(active, ActiveLevel)
    for c in active.convs():
        assert c.weight().untyped_storage().data_ptr() == c.conv.weight.untyped_storage().data_ptr()


@pytest.mark.parametrize("level", [0, 5, -1])
def test_one_level_check_refuses_alike_everywhere(make_model: ModelFactory, level: int) -> None:
    model = make_model()
    message = f"level {level} is outside 1..4"
    calls: list[Callable[[], object]] = [
        lambda: model.config.check_level(level),
        lambda: model.config.unit_set(0, level),
        lambda: model.active(0, level),
        lambda: model(torch.zeros(1, 1, 8, 8), 0, level),
        lambda: LevelPlan.build(model, 0, level),
        lambda: extract_level(model, 0, level),
        lambda: level_params(model, 0, level),
    ]
    for call in calls:
        with pytest.raises(ValueError) as info:
            call()
        assert str(info.value) == message


def test_check_level_passes_every_level(make_model: ModelFactory) -> None:
    model = make_model()
    assert [model.config.check_level(level) for level in range(1, 5)] == [1, 2, 3, 4]


def test_an_unknown_task_is_refused_before_the_level(make_model: ModelFactory) -> None:
    with pytest.raises(KeyError) as info:
        make_model().active("nope", 9)
    assert info.value.args[0] == "unknown task 'nope'; this model serves: gray, color"
