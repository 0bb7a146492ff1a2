"""Property: any linear chain of pure stages gives what the plain sequential loop gives."""

from __future__ import annotations

from collections.abc import Callable
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
