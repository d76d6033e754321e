"""The DVN forward: shapes, purity, concurrency, index-gather levels and its errors."""

from __future__ import annotations

import threading
from collections.abc import Callable

import pytest
import torch

from model_store.export import extract_level
from model_store.layers import UnitConv2d
from model_store.model import DVN
from model_store.tasks import Preprocessing, TaskSpec
from tests.model_store.conftest import COLOR, GRAY, SCRAMBLED, ModelFactory

# Inputs over 32 pixels a side take the stem's stride-2 path.
LARGE = TaskSpec(
    name="large",
    classes=("a", "b", "c", "d", "e"),
    input_shape=(3, 40, 36),
    preprocessing=Preprocessing("RGB", (40, 36), (0.0, 0.0, 0.0), (1.0, 1.0, 1.0)),
)
SMALL_ARCHS = ["resnet-tiny", "resnet-demo"]


@pytest.fixture(scope="module", params=SMALL_ARCHS)
def arch_model(request: pytest.FixtureRequest) -> DVN:
    from model_store.arch import DVNConfig, get_architecture

    torch.manual_seed(0)
    arch = str(request.param)
    cfg = DVNConfig.create(get_architecture(arch), [GRAY, COLOR, LARGE], arch_name=arch)
    return DVN(cfg).eval()


@pytest.mark.parametrize("level", [1, 2, 3, 4])
@pytest.mark.parametrize("spec", [GRAY, COLOR, LARGE], ids=lambda s: s.name)
def test_output_shape_and_finite(arch_model: DVN, spec: TaskSpec, level: int) -> None:
    x = torch.randn(3, *spec.input_shape)
    with torch.no_grad():
        out = arch_model(x, spec.name, level)
    assert out.shape == (3, spec.num_classes)
    assert torch.isfinite(out).all()


def test_task_by_index_equals_task_by_name(
    tiny_model: DVN, random_inputs: Callable[..., torch.Tensor]
) -> None:
    x = random_inputs(COLOR)
    with torch.no_grad():
        assert torch.equal(tiny_model(x, 1, 2), tiny_model(x, "color", 2))


def test_levels_differ(tiny_model: DVN, random_inputs: Callable[..., torch.Tensor]) -> None:
    x = random_inputs(GRAY)
    with torch.no_grad():
        outs = [tiny_model(x, "gray", level) for level in range(1, 5)]
    for a in range(4):
        for b in range(a + 1, 4):
            assert not torch.allclose(outs[a], outs[b])


def snapshot(model: DVN) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def test_eval_forward_changes_no_state(
    tiny_model: DVN,
    warm: Callable[[DVN], DVN],
    random_inputs: Callable[..., torch.Tensor],
) -> None:
    model = warm(tiny_model)
    before = snapshot(model)
    with torch.no_grad():
        for spec in (GRAY, COLOR):
            for level in range(1, 5):
                model(random_inputs(spec), spec.name, level)
    after = model.state_dict()
    assert before.keys() == after.keys()
    for key, value in before.items():
        assert torch.equal(value, after[key]), key
    assert not model.training


def test_train_forward_updates_only_its_own_levels_statistics(
    tiny_model: DVN, random_inputs: Callable[..., torch.Tensor]
) -> None:
    before = snapshot(tiny_model)
    tiny_model.train()
    with torch.no_grad():
        tiny_model(random_inputs(COLOR), "color", 2)
    changed = {k for k, v in tiny_model.state_dict().items() if not torch.equal(v, before[k])}
    # (task 1, level 2) is norm 1 * 4 + 2 - 1 = 5 of every LevelNorms.
    assert changed == {
        f"{layer}.norms.5.{stat}"
        for layer in (
            "stem_norms",
            "stages.0.0.norm1",
            "stages.0.0.norm2",
            "stages.1.0.norm1",
            "stages.1.0.norm2",
            "stages.1.0.norm_project",
        )
        for stat in ("running_mean", "running_var")
    }


def test_two_levels_at_once_equal_sequential_runs(
    tiny_model: DVN,
    warm: Callable[[DVN], DVN],
    random_inputs: Callable[..., torch.Tensor],
) -> None:
    model = warm(tiny_model)
    jobs = [("gray", 1, random_inputs(GRAY, 8)), ("color", 4, random_inputs(COLOR, 8))]
    with torch.no_grad():
        expected = [model(x, task, level) for task, level, x in jobs]
    results: dict[int, list[torch.Tensor]] = {0: [], 1: []}
    errors: list[BaseException] = []
    start = threading.Barrier(2)

    def run(i: int) -> None:
        task, level, x = jobs[i]
        try:
            start.wait()
            with torch.no_grad():
                for _ in range(15):
                    results[i].append(model(x, task, level))
        except BaseException as e:  # surfaced below: a thread's exception is otherwise lost
            errors.append(e)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(2)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert errors == []
    for i in range(2):
        assert len(results[i]) == 15
        for out in results[i]:
            torch.testing.assert_close(out, expected[i], rtol=0, atol=1e-6)


def test_scrambled_order_uses_index_gather_and_equals_its_export(
    make_model: ModelFactory,
    warm: Callable[[DVN], DVN],
    random_inputs: Callable[..., torch.Tensor],
) -> None:
    model = warm(make_model(orders=SCRAMBLED))
    gathered = {(0, 2), (1, 2), (1, 3)}  # gray level 3 is {0, 1, 2}: a slice
    for t, spec in enumerate((GRAY, COLOR)):
        for level in range(1, 5):
            sets = model.channel_sets(t, level)
            if (t, level) in gathered:
                assert all(isinstance(s, torch.Tensor) for s in sets)
            else:
                assert all(isinstance(s, slice) for s in sets)
            x = random_inputs(spec)
            with torch.no_grad():
                got = model(x, t, level)
                want = extract_level(model, t, level)(x, 0, 1)
            torch.testing.assert_close(got, want, rtol=0, atol=1e-5)
    idx = model.channel_sets(0, 2)[1]
    assert isinstance(idx, torch.Tensor)
    assert idx.tolist() == [0, 1, 2, 3, 8, 9, 10, 11]  # units 0 and 2 of 16 channels


def permute_units(weight: torch.Tensor, dim: int, perm: list[int], k: int) -> torch.Tensor:
    group = weight.shape[dim] // k
    index = torch.tensor([p * group + c for p in perm for c in range(group)])
    return weight.index_select(dim, index)


def test_gathered_level_equals_the_same_units_laid_out_contiguously(
    make_model: ModelFactory,
    warm: Callable[[DVN], DVN],
    random_inputs: Callable[..., torch.Tensor],
) -> None:
    """Level 2 of order (0, 2, 1, 3) holds units {0, 2} (gathered). Swap units 1 and 2 in
    every trunk weight of a copy whose order is (0, 1, 2, 3): its level 2 (a contiguous
    slice over units {0, 1}) must compute exactly the same."""
    scrambled = warm(make_model(orders=[(0, 2, 1, 3)], tasks=[GRAY]))
    plain = make_model(orders=[(0, 1, 2, 3)], tasks=[GRAY], seed=5)
    perm = [0, 2, 1, 3]  # plain unit u is scrambled unit perm[u]
    state = scrambled.state_dict()
    convs = {n for n, m in scrambled.named_modules() if isinstance(m, UnitConv2d)}
    moved = {}
    for key, value in state.items():
        module = key.rsplit(".", 1)[0]
        if module in convs:
            w = permute_units(value, 0, perm, 4)
            if not module.startswith("stems."):  # a stem's input is the image, not units
                w = permute_units(w, 1, perm, 4)
            moved[key] = w
        else:
            moved[key] = value  # per-level norms and heads: already in level channel order
    plain.load_state_dict(moved)
    plain.eval()
    assert isinstance(scrambled.channel_sets(0, 2)[0], torch.Tensor)
    assert isinstance(plain.channel_sets(0, 2)[0], slice)
    x = random_inputs(GRAY)
    with torch.no_grad():
        for level in (1, 2):
            torch.testing.assert_close(
                plain(x, 0, level), scrambled(x, 0, level), rtol=0, atol=1e-5
            )


@pytest.mark.parametrize(
    ("task", "shape", "message"),
    [
        ("gray", (2, 3, 8, 8), "task 'gray' takes inputs of shape (B, 1, 8, 8), got (2, 3, 8, 8)"),
        ("gray", (1, 8, 8), "task 'gray' takes inputs of shape (B, 1, 8, 8), got (1, 8, 8)"),
        ("gray", (2, 1, 8, 9), "task 'gray' takes inputs of shape (B, 1, 8, 8), got (2, 1, 8, 9)"),
        (
            "color",
            (1, 1, 8, 8),
            "task 'color' takes inputs of shape (B, 3, 16, 16), got (1, 1, 8, 8)",
        ),
    ],
)
def test_wrong_input_shape(
    tiny_model: DVN, task: str, shape: tuple[int, ...], message: str
) -> None:
    with pytest.raises(ValueError) as info:
        tiny_model(torch.zeros(shape), task, 1)
    assert str(info.value) == message


def test_unknown_task_lists_the_tasks(tiny_model: DVN) -> None:
    with pytest.raises(KeyError) as info:
        tiny_model(torch.zeros(1, 1, 8, 8), "digits", 1)
    assert info.value.args[0] == "unknown task 'digits'; this model serves: gray, color"


@pytest.mark.parametrize("level", [0, 5])
def test_level_outside_the_range(tiny_model: DVN, level: int) -> None:
    with pytest.raises(ValueError) as info:
        tiny_model(torch.zeros(1, 1, 8, 8), "gray", level)
    assert str(info.value) == f"level {level} is outside 1..4"
