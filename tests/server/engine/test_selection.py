"""``select_level`` as a pure function (hand-made level tables), and the latency profile
and prediction that feed it."""

from __future__ import annotations

from collections.abc import Sequence

import pytest

from server.budget import Budget, parse_budget
from server.engine.profile import LatencyProfile, QueueState, predict_latency, profile_batch_sizes
from server.engine.selection import LevelOption, Selection, human_bytes, select_level
from server.errors import BudgetUnsatisfiable, DeadlineUnmeetable, QueueFull
from tests.server.messages import (
    BELOW_SMALLEST_LEVEL,
    NO_LEVEL_IN_TIME,
    PINNED_QUEUE_FULL,
    QUEUES_FULL,
)

MS = 1e-3
# Four levels with the sizes of a small DVN and accuracies rising with the level.
BYTES = (46_144, 178_072, 400_000, 710_000)
ACC = (0.6, 0.7, 0.8, 0.9)


def table(
    latency_ms: Sequence[float] = (1.0, 2.0, 4.0, 8.0),
    accuracy: Sequence[float | None] = ACC,
    full: Sequence[int] = (),
    param_bytes: Sequence[int] = BYTES,
) -> list[LevelOption]:
    return [
        LevelOption(
            level=i + 1,
            param_bytes=param_bytes[i],
            accuracy=accuracy[i],
            predicted_latency_s=latency_ms[i] * MS,
            queue_full=i + 1 in full,
        )
        for i in range(len(param_bytes))
    ]


def budget(spec: str) -> Budget:
    parsed = parse_budget(spec)
    assert parsed is not None
    return parsed


@pytest.mark.parametrize(
    ("options", "spec", "level", "reason"),
    [
        # No budget: the most accurate level.
        (table(), None, 4, "default"),
        (table(accuracy=(0.6, 0.7, 0.95, 0.9)), None, 3, "default"),
        # No accuracy recorded anywhere: the largest level.
        (table(accuracy=(None, None, None, None)), None, 4, "default"),
        (table(accuracy=(None, None, None, None)), "200000B", 2, "budget"),
        # Ties go to the larger level.
        (table(accuracy=(0.6, 0.8, 0.8, 0.7)), None, 3, "default"),
        (table(accuracy=(0.9, 0.9, 0.9, 0.9)), "500000B", 3, "budget"),
        # Memory: the most accurate level that fits (the limit itself fits).
        (table(), "178072B", 2, "budget"),
        (table(), "178071B", 1, "budget"),
        (table(), "2MiB", 4, "budget"),
        (table(), "400kB", 3, "budget"),
        (table(accuracy=(0.6, 0.95, 0.8, 0.9)), "2MiB", 2, "budget"),
        # Latency: the most accurate level predicted within it.
        (table(), "5ms", 3, "budget"),
        (table(), "8ms", 4, "budget"),
        (table(), "1ms", 1, "budget"),
        (table(latency_ms=(3, 6, 9, 12)), "5ms", 1, "budget"),
        # Both: every constraint must hold.
        (table(), "5ms,200kB", 2, "budget"),
        (table(), "200kB,5ms", 2, "budget"),
        # Latency no level meets, on_miss=degrade: the smallest level that fits in memory.
        (table(), "0.5ms", 1, "degraded"),
        (table(latency_ms=(9, 9, 9, 9)), "1ms,2MiB", 1, "degraded"),
        # A full queue: the next best level that fits, reason degraded.
        (table(full=(4,)), None, 3, "degraded"),
        (table(full=(3, 4)), None, 2, "degraded"),
        (table(full=(2,)), "200kB", 1, "degraded"),
        (table(full=(3,)), "5ms", 2, "degraded"),
        (table(full=(1,)), "0.5ms", 2, "degraded"),
        (table(full=(1, 2, 3)), None, 4, "default"),
    ],
)
def test_select(options: list[LevelOption], spec: str | None, level: int, reason: str) -> None:
    parsed = None if spec is None else budget(spec)
    chosen = select_level("digits", options, parsed)
    predicted = next(o.predicted_latency_s for o in options if o.level == level)
    assert chosen == Selection(level, reason, predicted)  # type: ignore[arg-type]


def test_order_of_options_does_not_matter() -> None:
    options = table()
    assert select_level("digits", list(reversed(options)), budget("5ms")).level == 3


def test_same_budget_picks_a_smaller_level_when_the_server_is_busy() -> None:
    profile = LatencyProfile(
        table={("digits", lv): {1: lv * 1.0 * MS, 8: lv * 2.0 * MS} for lv in (1, 2, 3, 4)}
    )

    def options(state: QueueState) -> list[LevelOption]:
        return [
            LevelOption(
                level=lv,
                param_bytes=BYTES[lv - 1],
                accuracy=ACC[lv - 1],
                predicted_latency_s=predict_latency(profile, state, ("digits", lv), 1, 8),
            )
            for lv in (1, 2, 3, 4)
        ]

    idle = QueueState(busy_remaining_s=0.0, queued={})
    assert select_level("digits", options(idle), budget("3.5ms")).level == 3
    # 1.4 ms of forward still running: level 2 (1.4 + 2 ms) is the largest that fits.
    running = QueueState(busy_remaining_s=1.4 * MS, queued={})
    assert select_level("digits", options(running), budget("3.5ms")).level == 2
    # Another task's backlog: 8 examples of shapes level 1 (2 ms) ahead of everything.
    profile.table[("shapes", 1)] = {1: 1.0 * MS, 8: 2.0 * MS}
    backlog = QueueState(busy_remaining_s=0.0, queued={("shapes", 1): 8})
    assert select_level("digits", options(backlog), budget("3.5ms")).level == 1
    busy = QueueState(busy_remaining_s=3.0 * MS, queued={("shapes", 1): 8})
    chosen = select_level("digits", options(busy), budget("3.5ms"))
    assert (chosen.level, chosen.reason) == (1, "degraded")
    with pytest.raises(DeadlineUnmeetable):
        select_level("digits", options(busy), budget("3.5ms"), on_miss="reject")


@pytest.mark.parametrize(
    ("spec", "budget_bytes", "budget_human"),
    [("40kB", 40000, "39.1 KiB"), ("46143B,1s", 46143, "45.1 KiB"), ("1B", 1, "1 B")],
)
def test_memory_below_the_smallest_level(spec: str, budget_bytes: int, budget_human: str) -> None:
    message = BELOW_SMALLEST_LEVEL.format(
        budget=budget_bytes, budget_human=budget_human, task="digits", level=1, needs=46144,
        needs_human="45.1 KiB",
    )  # fmt: skip
    for on_miss in ("degrade", "reject"):
        with pytest.raises(BudgetUnsatisfiable) as info:
            select_level("digits", table(), budget(spec), on_miss=on_miss)
        assert info.value.message == message
        assert (info.value.status, info.value.type) == (422, "budget_unsatisfiable")
        assert info.value.headers() == {}


def test_memory_message_names_the_smallest_level_even_when_it_is_not_level_1() -> None:
    options = table(param_bytes=(3_000_000, 2_000_000, 4_000_000, 5_000_000))
    with pytest.raises(BudgetUnsatisfiable) as info:
        select_level("shapes", options, budget("1MiB"))
    assert info.value.message == BELOW_SMALLEST_LEVEL.format(
        budget=1048576, budget_human="1.0 MiB", task="shapes", level=2, needs=2000000,
        needs_human="1.9 MiB",
    )  # fmt: skip


@pytest.mark.parametrize(
    ("latency_ms", "spec", "retry_after", "budget_ms", "fastest_ms"),
    [
        ((1.0, 2.0, 4.0, 8.0), "0.5ms", "1", "0.5", "1.0"),
        ((2500.0, 2600.0, 2700.0, 2800.0), "2s", "3", "2000", "2500.0"),
    ],
)
def test_reject_when_no_level_meets_the_latency(
    latency_ms: tuple[float, ...], spec: str, retry_after: str, budget_ms: str, fastest_ms: str
) -> None:
    with pytest.raises(DeadlineUnmeetable) as info:
        select_level("digits", table(latency_ms=latency_ms), budget(spec), on_miss="reject")
    assert info.value.message == NO_LEVEL_IN_TIME.format(
        task="digits", budget_ms=budget_ms, fastest_ms=fastest_ms
    )
    assert (info.value.status, info.value.type) == (503, "deadline_unmeetable")
    assert info.value.headers() == {"Retry-After": retry_after}


def test_reject_serves_a_level_that_meets_the_latency() -> None:
    chosen = select_level("digits", table(), budget("2ms"), on_miss="reject")
    assert (chosen.level, chosen.reason) == (2, "budget")


@pytest.mark.parametrize(
    ("spec", "full", "latency_ms", "retry_after"),
    [
        (None, (1, 2, 3, 4), (1.0, 2.0, 4.0, 8.0), "1"),
        ("200kB", (1, 2), (1.0, 2.0, 4.0, 8.0), "1"),
        ("0.5ms", (1, 2, 3, 4), (1.0, 2.0, 4.0, 8.0), "1"),
        (None, (1, 2, 3, 4), (1200.0, 1300.0, 1400.0, 1500.0), "2"),
    ],
)
def test_queue_full_everywhere_the_budget_allows(
    spec: str | None, full: tuple[int, ...], latency_ms: tuple[float, ...], retry_after: str
) -> None:
    parsed = None if spec is None else budget(spec)
    with pytest.raises(QueueFull) as info:
        select_level("digits", table(latency_ms=latency_ms, full=full), parsed)
    assert info.value.message == QUEUES_FULL.format(task="digits")
    assert (info.value.status, info.value.type) == (429, "queue_full")
    assert info.value.headers() == {"Retry-After": retry_after}


@pytest.mark.parametrize("spec", [None, "1B", "0.1ms", "5ms,200kB"])
@pytest.mark.parametrize("pinned", [1, 2, 3, 4])
def test_pinned_is_served_as_asked(spec: str | None, pinned: int) -> None:
    parsed = None if spec is None else budget(spec)
    for on_miss in ("degrade", "reject"):
        chosen = select_level("digits", table(), parsed, pinned=pinned, on_miss=on_miss)
        assert chosen == Selection(pinned, "pinned", (1.0, 2.0, 4.0, 8.0)[pinned - 1] * MS)


def test_pinned_full_queue() -> None:
    with pytest.raises(QueueFull) as info:
        select_level("digits", table(latency_ms=(1, 1500, 4, 8), full=(2,)), None, pinned=2)
    assert info.value.message == PINNED_QUEUE_FULL.format(task="digits", level=2)
    assert info.value.headers() == {"Retry-After": "2"}
    # Another level's full queue does not matter to a pinned request.
    chosen = select_level("digits", table(full=(1, 3, 4)), None, pinned=2)
    assert (chosen.level, chosen.reason) == (2, "pinned")


@pytest.mark.parametrize(
    ("n", "text"),
    [(0, "0 B"), (1023, "1023 B"), (1024, "1.0 KiB"), (46_144, "45.1 KiB"),
     (2_097_152, "2.0 MiB"), (3 * 1024**3, "3.0 GiB"), (5 * 1024**4, "5.0 TiB"),
     (2048 * 1024**4, "2048.0 TiB")],
)  # fmt: skip
def test_human_bytes(n: int, text: str) -> None:
    assert human_bytes(n) == text


# -- the latency profile ------------------------------------------------------------------

KEY = ("digits", 2)


def profile_of(row: dict[int, float]) -> LatencyProfile:
    return LatencyProfile(table={KEY: dict(row)})


@pytest.mark.parametrize(
    ("batch", "seconds"),
    [
        (1, 0.001),  # measured
        (4, 0.002),
        (8, 0.004),
        (2, 0.001 + 0.001 / 3),  # linear between 1 and 4
        (3, 0.001 + 2 * 0.001 / 3),
        (6, 0.003),  # halfway between 4 and 8
        (16, 0.008),  # beyond: the per-example rate of the largest size
        (20, 0.010),
        (0, 0.001),  # below the smallest: the smallest's time
    ],
)
def test_forward_interpolates_and_extrapolates(batch: int, seconds: float) -> None:
    profile = profile_of({1: 0.001, 4: 0.002, 8: 0.004})
    assert profile.forward_s(KEY, batch) == pytest.approx(seconds, rel=1e-12)


def test_forward_of_an_unprofiled_level_is_zero() -> None:
    assert LatencyProfile().forward_s(KEY, 4) == 0.0
    assert profile_of({2: 0.003}).forward_s(("digits", 3), 1) == 0.0


def test_record_smooths_observations() -> None:
    profile = profile_of({1: 0.001})
    profile.record(KEY, 1, 0.003)  # 0.8 * 1 ms + 0.2 * 3 ms
    assert profile.table[KEY][1] == pytest.approx(0.0014, rel=1e-12)
    profile.record(KEY, 1, 0.0014)
    assert profile.table[KEY][1] == pytest.approx(0.0014, rel=1e-12)
    # a size never seen starts from the profile's estimate for it (1.4 ms * 3 / 1)
    profile.record(KEY, 3, 0.005)
    assert profile.table[KEY][3] == pytest.approx(0.8 * 0.0042 + 0.2 * 0.005, rel=1e-12)
    profile.record(("shapes", 1), 2, 0.004)  # a level never seen: taken as observed
    assert profile.table[("shapes", 1)] == {2: 0.004}
    snap = profile.snapshot()
    snap[KEY][1] = 99.0
    assert profile.table[KEY][1] == pytest.approx(0.0014, rel=1e-12)


def test_one_outlier_moves_the_estimate_a_bounded_step() -> None:
    profile = profile_of({1: 0.001, 32: 0.008})
    profile.record(KEY, 32, 0.377)  # a preempted forward: counted as 4 x 8 ms at most
    assert profile.table[KEY][32] == pytest.approx(0.8 * 0.008 + 0.2 * 0.032, rel=1e-12)
    profile.record(KEY, 32, 0.0)  # and as a quarter at least
    assert profile.table[KEY][32] == pytest.approx(0.8 * 0.0128 + 0.2 * 0.0032, rel=1e-12)
    profile.record(KEY, 19, 0.377)  # a new size: from the interpolated estimate, bounded
    start = 0.001 + (19 - 1) / 31 * (0.01088 - 0.001)
    assert profile.table[KEY][19] == pytest.approx(0.8 * start + 0.2 * 4 * start, rel=1e-9)
    for _ in range(30):  # a lasting slowdown is still followed
        profile.record(KEY, 1, 0.010)
    assert profile.table[KEY][1] == pytest.approx(0.010, rel=1e-2)


def test_record_with_other_smoothing() -> None:
    profile = LatencyProfile(table={KEY: {1: 0.010}}, smoothing=0.5)
    profile.record(KEY, 1, 0.020)
    assert profile.table[KEY][1] == pytest.approx(0.015, rel=1e-12)


@pytest.mark.parametrize(
    ("examples", "max_batch", "seconds"),
    [(0, 8, 0.0), (1, 8, 0.001), (8, 8, 0.004), (20, 8, 2 * 0.004 + 0.002), (16, 8, 0.008),
     (9, 4, 2 * 0.002 + 0.001)],
)  # fmt: skip
def test_work_in_batches(examples: int, max_batch: int, seconds: float) -> None:
    profile = profile_of({1: 0.001, 4: 0.002, 8: 0.004})
    assert profile.work_s(KEY, examples, max_batch) == pytest.approx(seconds, rel=1e-12)


def test_predict_latency_counts_everything_ahead() -> None:
    other = ("shapes", 1)
    profile = LatencyProfile(
        table={KEY: {1: 0.001, 4: 0.002, 8: 0.004}, other: {1: 0.010, 8: 0.020}}
    )
    idle = QueueState(0.0, {})
    assert predict_latency(profile, idle, KEY, 1, 8) == pytest.approx(0.001)
    assert predict_latency(profile, idle, KEY, 1, 8, overhead_s=0.0005) == pytest.approx(0.0015)
    # The forward running now.
    assert predict_latency(profile, QueueState(0.003, {}), KEY, 1, 8) == pytest.approx(0.004)
    # Its own queue's backlog: 3 queued + this 1 = one forward of 4.
    assert predict_latency(profile, QueueState(0.0, {KEY: 3}), KEY, 1, 8) == pytest.approx(0.002)
    # Own backlog past max_batch: 8 + 4 -> a forward of 8 and one of 4.
    assert predict_latency(profile, QueueState(0.0, {KEY: 11}), KEY, 1, 8) == pytest.approx(0.006)
    # Another queue's backlog (one executor serves all): 16 examples -> 2 forwards of 8.
    assert predict_latency(profile, QueueState(0.0, {other: 16}), KEY, 1, 8) == pytest.approx(0.041)
    # Everything together, and empty queues count for nothing.
    state = QueueState(0.002, {KEY: 3, other: 1, ("shapes", 2): 0})
    assert predict_latency(profile, state, KEY, 1, 8, 0.0005) == pytest.approx(
        0.0005 + 0.002 + 0.010 + 0.002
    )
    # A bigger request costs more.
    assert predict_latency(profile, idle, KEY, 8, 8) == pytest.approx(0.004)


@pytest.mark.parametrize(
    ("max_batch", "sizes"),
    [(1, [1]), (2, [1, 2]), (6, [1, 2, 4, 6]), (8, [1, 2, 4, 8]), (32, [1, 2, 4, 8, 16, 32]),
     (33, [1, 2, 4, 8, 16, 32, 33])],
)  # fmt: skip
def test_profile_batch_sizes(max_batch: int, sizes: list[int]) -> None:
    assert profile_batch_sizes(max_batch) == sizes
