"""Mix parsing and input pools shared by the load generator and the locust file."""

from __future__ import annotations

import io
import random

import numpy as np
import pytest

from clients._workload import Mix, budget_param, input_pool, parse_mix


@pytest.mark.parametrize(
    ("text", "items", "weights"),
    [
        ("5ms:0.5,20ms:0.3,1MiB:0.2", ("5ms", "20ms", "1MiB"), (0.5, 0.3, 0.2)),
        ("digits:0.5, shapes:0.5", ("digits", "shapes"), (0.5, 0.5)),
        ("15ms+2MiB:1,none:3", ("15ms,2MiB", "none"), (1.0, 3.0)),
        ("15ms,2MiB:0.5,5ms:0.5", ("15ms,2MiB", "5ms"), (0.5, 0.5)),
        ("5ms", ("5ms",), (1.0,)),
        ("5ms:2,20ms", ("5ms", "20ms"), (2.0, 1.0)),
    ],
)
def test_parse_mix(text: str, items: tuple[str, ...], weights: tuple[float, ...]) -> None:
    mix = parse_mix(text)
    assert (mix.items, mix.weights) == (items, weights)


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("5ms:0.5,:0.5", "empty item"),
        ("5ms:-1", "must be positive"),
        ("5ms:0", "must be positive"),
        ("5ms:inf", "must be positive"),
        ("5ms:abc", "'abc' of '5ms' is not a number"),
        ("5ms:1,5ms:2", "names an item twice"),
    ],
)
def test_parse_mix_errors(text: str, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        parse_mix(text, what="budget mix")


def test_choose_follows_weights() -> None:
    mix = parse_mix("a:3,b:1")
    rng = random.Random(0)
    draws = [mix.choose(rng) for _ in range(4000)]
    assert draws.count("a") / len(draws) == pytest.approx(0.75, abs=0.03)
    assert mix.fractions() == {"a": 0.75, "b": 0.25}
    assert str(Mix.uniform(["x", "y"])) == "x:1,y:1"


def test_budget_param_and_pool() -> None:
    assert budget_param("none") is None and budget_param("15ms,2MiB") == "15ms,2MiB"
    pool = input_pool([3, 4, 5], 4, np.random.default_rng(0))
    arrays = [np.load(io.BytesIO(b), allow_pickle=False) for b in pool]
    assert len(pool) == 4 and len(set(pool)) == 4
    assert all(a.shape == (1, 3, 4, 5) and a.dtype == np.float32 for a in arrays)
