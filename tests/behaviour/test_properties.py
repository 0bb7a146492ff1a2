"""Property: any linear chain of pure stages gives what the plain sequential loop gives."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from flowpipe import stage

POOL: dict[str, Callable[[int], int]] = {
    "inc": lambda x: x + 1,
    "double": lambda x: x * 2,
    "minus3": lambda x: x - 3,
    "half": lambda x: x // 2,
    "square": lambda x: x * x,
    "neg": lambda x: -x,
    "mod7": lambda x: x % 7,
}

step = st.tuples(
    st.sampled_from(sorted(POOL)),
    st.integers(min_value=1, max_value=4),  # workers
    st.none() | st.integers(min_value=1, max_value=8),  # batch
)


def make_stage(name: str, workers: int, batch: int | None) -> Any:
    fn = POOL[name]
    if batch is None:
        return stage(fn, workers=workers, ordered=True, name=name)

    def mapped(xs: list[int]) -> list[int]:
        return [fn(x) for x in xs]

    return stage(mapped, workers=workers, batch=batch, ordered=True, name=name)


@pytest.mark.timeout(180)  # 30 runs; worker processes and actors start slower under load
@settings(
    max_examples=30,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(
    chain=st.lists(step, min_size=1, max_size=5),
    xs=st.lists(st.integers(min_value=-1000, max_value=1000), max_size=200),
)
def test_a_chain_of_pure_stages_equals_the_sequential_composition(
    backend: str, chain: list[tuple[str, int, int | None]], xs: list[int]
) -> None:
    pipe = make_stage(*chain[0])
    for spec in chain[1:]:
        pipe = pipe | make_stage(*spec)
    expected = list(xs)
    for name, _, _ in chain:
        expected = [POOL[name](x) for x in expected]
    assert pipe.run(xs, backend=backend) == expected


# -- the same with the shapes a stage can have, and calls that turn slow ------------------

SLOW_SECONDS = 0.008  # past the 5 ms after which a slice's earlier outputs leave early


def slow_now_and_then(fn: Callable[[int], int]) -> Callable[[int], int]:
    """``fn``, with a call that turns slow on about one input in 25: the outputs computed
    before it leave while it runs (``core/release.py``), on every backend."""

    def call(x: int) -> int:
        if x % 25 == 0:
            time.sleep(SLOW_SECONDS)  # the workload: a slow call, not a synchronisation
        return fn(x)

    return call


def key_of(x: int) -> int:
    return x % 3


def shaped_stage(name: str, workers: int, shape: str, batch: int, slow: bool) -> Any:
    fn = slow_now_and_then(POOL[name]) if slow else POOL[name]
    if shape == "batch":

        def mapped(xs: list[int]) -> list[int]:
            return [fn(x) for x in xs]

        return stage(mapped, workers=workers, batch=batch, name=name)
    if shape == "generator":

        def once(x: int) -> Iterator[int]:
            yield fn(x)

        return stage(once, workers=workers, name=name)
    key = key_of if shape == "keyed" else None
    return stage(fn, workers=workers, key=key, name=name)


shaped_step = st.tuples(
    st.sampled_from(sorted(POOL)),
    st.integers(min_value=1, max_value=3),  # workers
    st.sampled_from(["function", "keyed", "generator", "batch"]),
    st.integers(min_value=1, max_value=8),  # batch, for a batch stage
    st.booleans(),  # calls that turn slow now and then
)


@pytest.mark.timeout(240)  # 20 runs, some with slow calls
@settings(
    max_examples=20,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(
    chain=st.lists(shaped_step, min_size=1, max_size=4),
    xs=st.lists(st.integers(min_value=-1000, max_value=1000), max_size=300),
)
def test_keyed_generator_batch_and_slow_stages_equal_the_sequential_composition(
    backend: str, chain: list[tuple[str, int, str, int, bool]], xs: list[int]
) -> None:
    """Every output exactly once and in order, whatever the stages' shapes, and with
    calls that turn slow (outputs leave early) in keyed slices too."""
    pipe = shaped_stage(*chain[0])
    for spec in chain[1:]:
        pipe = pipe | shaped_stage(*spec)
    expected = list(xs)
    for name, *_ in chain:
        expected = [POOL[name](x) for x in expected]
    assert pipe.run(xs, backend=backend) == expected
