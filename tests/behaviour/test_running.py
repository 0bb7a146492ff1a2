"""Running pipelines, on every backend: results, order, generators, batches, joins, merges.

Every test takes the ``backend`` fixture and passes it to ``run``/``iter``; stages
are defined inside the tests (closures travel to any backend with cloudpickle).
"""

from __future__ import annotations

import itertools
import random
import threading
import time
from collections import Counter
from collections.abc import Iterator
from typing import Any

from flowpipe import merge, stage

GATE_TIMEOUT = 10.0  # seconds a gate waits before failing the test


def test_run_returns_every_output_in_input_order(backend: str) -> None:
    pipe = stage(lambda x: x + 1) | stage(lambda x: x * 2)
    assert pipe.run(range(500), backend=backend) == [(x + 1) * 2 for x in range(500)]


def test_a_single_stage_runs_as_a_pipeline(backend: str) -> None:
    @stage
    def square(x: int) -> int:
        return x * x

    assert square.run([3, 1, 2], backend=backend) == [9, 1, 4]


def test_an_empty_source_gives_an_empty_list(backend: str) -> None:
    assert stage(lambda x: x).run([], backend=backend) == []
    assert stage(lambda x: x, workers=3).run(iter([]), backend=backend) == []


def test_any_iterable_is_a_source(backend: str) -> None:
    pipe = stage(lambda x: x * 10)
    assert pipe.run((1, 2), backend=backend) == [10, 20]
    assert pipe.run({5: "a"}, backend=backend) == [50]
    assert pipe.run((x for x in range(3)), backend=backend) == [0, 10, 20]
    assert pipe.run("ab", backend=backend) == ["a" * 10, "b" * 10]


def test_plain_callables_in_a_pipe_run(backend: str) -> None:
    pipe = stage(lambda x: x + 1) | abs | str
    assert pipe.run([-5, 3], backend=backend) == ["4", "4"]


def test_iter_streams_outputs_before_the_source_ends(backend: str) -> None:
    """The first outputs of an infinite source arrive: nothing waits for the end."""
    with stage(lambda x: x * 3).iter(itertools.count(), backend=backend) as run:
        assert [next(run) for _ in range(5)] == [0, 3, 6, 9, 12]


def test_iter_returns_the_same_outputs_as_run(backend: str) -> None:
    pipe = stage(lambda x: x - 1, workers=2) | stage(lambda x: x * x)
    with pipe.iter(range(300), backend=backend) as run:
        assert iter(run) is run
        streamed = list(run)
    assert streamed == pipe.run(range(300), backend=backend)


def test_an_iterable_on_the_left_binds_the_source(backend: str) -> None:
    pipe = stage(lambda x: x + 1) | stage(lambda x: -x)
    bound = [1, 2, 3] | pipe
    assert bound.run(backend=backend) == [-2, -3, -4]
    with bound.iter(backend=backend) as run:
        assert list(run) == [-2, -3, -4]
    assert list(range(4) | stage(lambda x: x * 2)) == [0, 2, 4, 6]
    seen = []
    for y in (x for x in "abc") | stage(str.upper):
        seen.append(y)
    assert seen == ["A", "B", "C"]


def test_a_bound_pipeline_runs_again_with_a_re_iterable_source(backend: str) -> None:
    bound = [1, 2] | stage(lambda x: x * 5)
    assert bound.run(backend=backend) == [5, 10]
    assert bound.run(backend=backend) == [5, 10]


def test_a_zero_argument_first_stage_is_the_source(backend: str) -> None:
    @stage
    def numbers() -> Iterator[int]:
        yield from range(5)

    assert (numbers | stage(lambda x: x * 2)).run(backend=backend) == [0, 2, 4, 6, 8]
    assert numbers.run(backend=backend) == [0, 1, 2, 3, 4]


def test_a_source_stage_may_return_a_list(backend: str) -> None:
    @stage
    def fixed() -> list[str]:
        return ["a", "b"]

    assert (fixed | stage(str.upper)).run(backend=backend) == ["A", "B"]


def test_an_infinite_source_stage_streams(backend: str) -> None:
    @stage
    def ticks() -> Iterator[int]:
        yield from itertools.count()

    with (ticks | stage(lambda x: x + 100, workers=2)).iter(backend=backend) as run:
        assert list(itertools.islice(run, 50)) == list(range(100, 150))


# -- order ----------------------------------------------------------------------------


def jittered(seed: int, n: int, scale: float = 0.002) -> list[float]:
    rng = random.Random(seed)
    return [rng.random() * scale for _ in range(n)]


def test_order_is_kept_with_workers_and_random_delays(backend: str) -> None:
    delays = jittered(1, 200)

    @stage(workers=4)
    def slow(i: int) -> int:
        time.sleep(delays[i])  # reordering pressure, not synchronisation
        return i * 3

    assert slow.run(range(200), backend=backend) == [i * 3 for i in range(200)]


def test_order_is_kept_through_several_parallel_stages(backend: str) -> None:
    first, second = jittered(2, 150, 0.001), jittered(3, 150, 0.001)

    @stage(workers=4)
    def a(i: int) -> int:
        time.sleep(first[i])
        return i

    @stage(workers=3)
    def b(i: int) -> tuple[int, int]:
        time.sleep(second[i])
        return (i, i * i)

    assert (a | b).run(range(150), backend=backend) == [(i, i * i) for i in range(150)]


def test_order_is_kept_for_a_generator_stage_with_workers(backend: str) -> None:
    delays = jittered(4, 100)

    @stage(workers=4)
    def repeat(i: int) -> Iterator[int]:
        time.sleep(delays[i])
        for _ in range(i % 3):
            yield i

    expected = [i for i in range(100) for _ in range(i % 3)]
    assert repeat.run(range(100), backend=backend) == expected


def test_unordered_gives_the_same_multiset(backend: str) -> None:
    delays = jittered(5, 200)

    @stage(workers=4, ordered=False)
    def slow(i: int) -> int:
        time.sleep(delays[i])
        return i * 2

    out = slow.run(range(200), backend=backend)
    assert Counter(out) == Counter(i * 2 for i in range(200))


def test_unordered_generator_gives_the_same_multiset(backend: str) -> None:
    @stage(workers=3, ordered=False)
    def pairs(i: int) -> Iterator[int]:
        yield i
        yield -i

    out = pairs.run(range(100), backend=backend)
    assert Counter(out) == Counter(y for i in range(100) for y in (i, -i))


# -- generators -------------------------------------------------------------------------


def test_a_generator_stage_gives_zero_to_n_outputs_per_input(backend: str) -> None:
    @stage
    def repeat(n: int) -> Iterator[int]:
        for _ in range(n):
            yield n

    assert repeat.run([0, 1, 3, 0, 2], backend=backend) == [1, 3, 3, 3, 2, 2]


def test_a_generator_stage_filters(backend: str) -> None:
    @stage
    def evens(x: int) -> Iterator[int]:
        if x % 2 == 0:
            yield x

    pipe = evens | stage(lambda x: x // 2)
    assert pipe.run(range(20), backend=backend) == list(range(10))


def test_a_generator_that_yields_nothing_ends_the_run_empty(backend: str) -> None:
    @stage
    def nothing(x: int) -> Iterator[int]:
        yield from ()

    assert (nothing | stage(lambda x: x)).run(range(100), backend=backend) == []


def test_a_generator_stage_may_flat_map_many_outputs(backend: str) -> None:
    @stage
    def explode(n: int) -> Iterator[tuple[int, int]]:
        for k in range(n):
            yield (n, k)

    out = explode.run([3000, 2], backend=backend)
    assert out == [(3000, k) for k in range(3000)] + [(2, 0), (2, 1)]


# -- batches -----------------------------------------------------------------------------


def test_batch_calls_with_full_batches_and_a_partial_last_one(backend: str) -> None:
    @stage(batch=4)
    def sizes(xs: list[int]) -> list[tuple[int, int]]:
        return [(x, len(xs)) for x in xs]

    out = sizes.run(range(10), backend=backend)
    assert [x for x, _ in out] == list(range(10))
    assert [n for _, n in out] == [4] * 8 + [2] * 2


def test_batch_true_uses_the_default_size(backend: str) -> None:
    @stage(batch=True)
    def sizes(xs: list[int]) -> list[int]:
        return [len(xs)] * len(xs)

    size = sizes.options.batch
    assert size is not None
    n = 2 * size + 3
    assert sizes.run(range(n), backend=backend) == [size] * (2 * size) + [3] * 3


def test_batch_receives_a_list(backend: str) -> None:
    @stage(batch=3)
    def kinds(xs: list[int]) -> list[str]:
        return [type(xs).__name__] * len(xs)

    assert set(kinds.run(range(7), backend=backend)) == {"list"}


def test_batch_may_return_any_sequence_of_the_right_length(backend: str) -> None:
    @stage(batch=5)
    def as_tuple(xs: list[int]) -> tuple[int, ...]:
        return tuple(x + 1 for x in xs)

    assert as_tuple.run(range(12), backend=backend) == list(range(1, 13))


def test_batch_with_workers_keeps_order(backend: str) -> None:
    delays = jittered(6, 100)

    @stage(batch=4, workers=3)
    def slow(xs: list[int]) -> list[int]:
        time.sleep(delays[xs[0]])
        return [x * 7 for x in xs]

    assert slow.run(range(100), backend=backend) == [x * 7 for x in range(100)]


def test_batches_between_other_stages(backend: str) -> None:
    pipe = stage(lambda x: x + 1) | stage(lambda xs: [sum(xs)] * len(xs), batch=3)
    assert pipe.run(range(7), backend=backend) == [6, 6, 6, 15, 15, 15, 7]


def test_batch_timeout_sends_a_partial_batch_while_the_source_waits(backend: str) -> None:
    """The source holds its 4th item until three outputs arrived: only a timeout gets them out."""
    three_out = threading.Event()

    def trickle() -> Iterator[int]:
        yield from (1, 2, 3)
        if not three_out.wait(GATE_TIMEOUT):
            raise TimeoutError("the partial batch was never sent")
        yield 4

    @stage(batch=10, batch_timeout=0.05)
    def echo(xs: list[int]) -> list[int]:
        return xs

    got = []
    for y in echo.iter(trickle(), backend=backend):
        got.append(y)
        if len(got) == 3:
            three_out.set()
    assert got == [1, 2, 3, 4]


# -- windows -------------------------------------------------------------------------------


def test_a_window_stage_is_called_with_the_last_items(backend: str) -> None:
    @stage(window=3)
    def moving_sum(last3: tuple[int, ...]) -> int:
        return sum(last3)

    @stage(window=3)
    def shown(last3: tuple[int, ...]) -> tuple[int, ...]:
        return tuple(last3)

    assert moving_sum.run(range(6), backend=backend) == [3, 6, 9, 12]
    assert shown.run(range(5), backend=backend) == [(0, 1, 2), (1, 2, 3), (2, 3, 4)]


def test_a_window_with_a_stride(backend: str) -> None:
    @stage(window=3, stride=2)
    def shown(last3: tuple[int, ...]) -> tuple[int, ...]:
        return tuple(last3)

    assert shown.run(range(8), backend=backend) == [(0, 1, 2), (2, 3, 4), (4, 5, 6)]


# -- joins -----------------------------------------------------------------------------------


def test_a_tuple_of_branches_joins_each_items_results(backend: str) -> None:
    pipe = stage(lambda x: x + 1) | (stage(lambda x: x * 2), stage(lambda x: -x))
    assert pipe.run(range(5), backend=backend) == [((x + 1) * 2, -(x + 1)) for x in range(5)]


def test_the_stage_after_a_join_receives_the_tuple(backend: str) -> None:
    @stage
    def describe(pair: tuple[int, str]) -> str:
        return f"{pair[1]}={pair[0]}"

    pipe = (stage(lambda x: x * x), str) | describe
    assert pipe.run([2, 3], backend=backend) == ["2=4", "3=9"]


def test_a_dict_of_branches_gives_dicts(backend: str) -> None:
    pipe = stage(lambda x: x) | {"double": lambda x: 2 * x, "text": str}
    assert pipe.run([1, 2], backend=backend) == [
        {"double": 2, "text": "1"},
        {"double": 4, "text": "2"},
    ]


def test_a_branch_may_be_a_pipeline_with_workers_and_batches(backend: str) -> None:
    delays = jittered(7, 120, 0.001)

    @stage(workers=4)
    def slow(x: int) -> int:
        time.sleep(delays[x])
        return x

    batched = stage(lambda xs: [x * 10 for x in xs], batch=8)
    pipe = stage(lambda x: x) | (slow | batched, stage(lambda x: x + 1) | str)
    assert pipe.run(range(120), backend=backend) == [(x * 10, str(x + 1)) for x in range(120)]


def test_nested_joins(backend: str) -> None:
    pipe = stage(lambda x: x) | (stage(lambda x: x + 1), (str, stage(lambda x: x * x)))
    assert pipe.run([2, 3], backend=backend) == [(3, ("2", 4)), (4, ("3", 9))]


def test_a_join_after_a_generator_stage(backend: str) -> None:
    @stage
    def twice(x: int) -> Iterator[int]:
        yield x
        yield x + 100

    pipe = twice | (stage(lambda x: x), stage(lambda x: x % 2 == 0))
    out = pipe.run(range(4), backend=backend)
    assert out == [(y, y % 2 == 0) for x in range(4) for y in (x, x + 100)]


def test_a_join_at_the_start_of_a_pipeline(backend: str) -> None:
    pipe = (stage(lambda x: x + 1), stage(lambda x: x - 1)) | stage(lambda p: p[0] * p[1])
    assert pipe.run(range(5), backend=backend) == [(x + 1) * (x - 1) for x in range(5)]


# -- merges ------------------------------------------------------------------------------


def test_merge_gives_every_branch_output_as_a_separate_item(backend: str) -> None:
    @stage
    def tag_a(x: int) -> tuple[str, int]:
        return ("a", x)

    @stage
    def tag_b(x: int) -> Iterator[tuple[str, int]]:
        if x % 2:
            yield ("b", x)
            yield ("b", -x)

    out = (stage(lambda x: x) | merge(tag_a, tag_b)).run(range(50), backend=backend)
    expected = [("a", x) for x in range(50)] + [
        ("b", y) for x in range(50) if x % 2 for y in (x, -x)
    ]
    assert Counter(out) == Counter(expected)
    # each branch's outputs keep their order
    assert [v for t, v in out if t == "a"] == list(range(50))
    assert [v for t, v in out if t == "b"] == [y for x in range(50) if x % 2 for y in (x, -x)]


def test_merge_with_parallel_branches_keeps_each_branch_in_order(backend: str) -> None:
    delays = jittered(8, 100)

    @stage(workers=4)
    def slow(x: int) -> tuple[str, int]:
        time.sleep(delays[x])
        return ("slow", x)

    pipe = merge(slow, stage(lambda x: ("fast", x)) | stage(lambda p: p, workers=2))
    out = pipe.run(range(100), backend=backend)
    assert len(out) == 200
    assert [v for t, v in out if t == "slow"] == list(range(100))
    assert [v for t, v in out if t == "fast"] == list(range(100))


def test_merge_then_more_stages(backend: str) -> None:
    pipe = merge(stage(lambda x: x), stage(lambda x: x + 1000)) | stage(lambda x: x * 2)
    out = pipe.run(range(10), backend=backend)
    assert Counter(out) == Counter([x * 2 for x in range(10)] + [(x + 1000) * 2 for x in range(10)])


# -- stats --------------------------------------------------------------------------------


def test_stats_count_items_in_and_out_per_stage(backend: str) -> None:
    @stage
    def inc(x: int) -> int:
        return x + 1

    @stage(workers=2)
    def pairs(x: int) -> Iterator[int]:
        yield x
        yield x

    @stage
    def odd(x: int) -> Iterator[int]:
        if x % 2:
            yield x

    with (inc | pairs | odd).iter(range(10), backend=backend) as run:
        out = list(run)
    assert out == [y for x in range(1, 11) if x % 2 for y in (x, x)]
    stats = run.stats
    assert (stats["inc"].items_in, stats["inc"].items_out) == (10, 10)
    assert (stats["pairs"].items_in, stats["pairs"].items_out) == (10, 20)
    assert (stats["odd"].items_in, stats["odd"].items_out) == (20, 10)
    assert stats["pairs"].workers == 2
    assert all(s.skipped == 0 and s.errors == 0 and s.dropped == 0 for s in stats.stages)
    assert [s.name for s in stats.stages] == ["inc", "pairs", "odd"]


def test_stats_label_a_repeated_stage_uniquely(backend: str) -> None:
    @stage
    def inc(x: int) -> int:
        return x + 1

    with (inc | inc | (inc, stage(lambda x: x))).iter(range(4), backend=backend) as run:
        assert list(run) == [(x + 3, x + 2) for x in range(4)]
    names = [s.name for s in run.stats.stages]
    assert len(set(names)) == len(names)
    assert {"inc", "lambda"} <= set(names)
    assert sum(run.stats[n].items_in for n in names if n.startswith("inc")) == 12


def test_stats_print_as_a_table_naming_every_stage(backend: str) -> None:
    @stage
    def parse(x: int) -> int:
        return x

    @stage(batch=4)
    def embed(xs: list[int]) -> list[int]:
        return xs

    with (parse | embed).iter(range(20), backend=backend) as run:
        assert len(list(run)) == 20
    table = str(run.stats)
    assert "parse" in table
    assert "embed" in table
    assert run.stats["embed"].items_in == 20


def test_stats_name_the_source_stage(backend: str) -> None:
    @stage
    def numbers() -> Iterator[int]:
        yield from range(7)

    with (numbers | stage(lambda x: x, name="copy")).iter(backend=backend) as run:
        assert list(run) == list(range(7))
    assert run.stats["numbers"].items_out == 7
    assert run.stats["copy"].items_in == 7


def test_a_class_stage_reads_its_constructor_args_in_the_worker(backend: str) -> None:
    @stage(workers=2)
    class Threshold:
        def __init__(self, limit: int) -> None:
            self.limit = limit

        def __call__(self, x: int) -> bool:
            return x > self.limit

    configured: Any = Threshold(3)
    assert configured.run(range(6), backend=backend) == [False] * 4 + [True] * 2
