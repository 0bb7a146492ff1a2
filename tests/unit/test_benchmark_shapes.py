"""The benchmark rows of the fan-out and batch scenarios, and SPDL's rows, give the
plain loop's output (issue 21). Correctness only: speed is never tested here."""

from __future__ import annotations

import importlib.util

import pytest

from benchmarks.peers import PEERS, prepare_flowpipe, prepare_loop
from benchmarks.scenarios import Scenario, build_scenarios, inc1, inc2, inc3, inc4

HAS_SPDL = importlib.util.find_spec("spdl") is not None


def small(name: str, n: int) -> Scenario:
    """A scenario of the quick run, cut to ``n`` items."""
    sc = next(s for s in build_scenarios(quick=True) if s.name == name)
    return Scenario(
        sc.name, sc.summary, n, sc.stages, sc.workers, sc.sleep_s, shape=sc.shape, batch=sc.batch
    )


def test_fanout_rows_join_each_item_pair() -> None:
    sc = small("fanout", 9)
    want = [2 * x for x in range(9)]  # d((b(x), c(x))) with every stage the identity: x + x
    assert prepare_loop(sc)() == want
    assert prepare_flowpipe(sc)() == want


def test_batch_rows_keep_a_last_short_batch() -> None:
    sc = small("batch", 40)  # one batch of 32, then one of 8
    want = [(x + 1) * 2 + 1 for x in range(40)]
    assert prepare_loop(sc)() == want
    assert prepare_flowpipe(sc)() == want


def test_rows_that_cannot_express_a_shape_are_not_timed_on_it() -> None:
    sc = small("fanout", 4)
    timed = {p.key for p in PEERS if p.applies_to(sc)}
    assert timed == {"loop", "spdl", "flowpipe", "flowpipe/gen"}


def test_fanout_ideal_fills_three_levels_and_batch_is_the_model_bound() -> None:
    fan, batch = small("fanout", 40), small("batch", 40)
    assert fan.ideal_seconds() == pytest.approx((40 / 4 + 2) * 0.002)
    assert batch.ideal_seconds() == pytest.approx(2 * 0.010)  # ceil(40 / 32) calls
    assert batch.ideal_seconds(0.0021) is None  # the real sleep is measured for 2 ms only


@pytest.mark.skipif(not HAS_SPDL, reason="spdl is in the benchmarks extra")
@pytest.mark.parametrize("name", ["trivial", "sleep-w4", "fanout", "batch"])
def test_spdl_rows_give_the_loops_output(name: str) -> None:
    sc = small(name, 40)
    spdl = next(p for p in PEERS if p.key == "spdl")
    assert spdl.prepare(sc)() == prepare_loop(sc)()


@pytest.mark.skipif(not HAS_SPDL, reason="spdl is in the benchmarks extra")
def test_spdl_process_pools_give_the_loops_output() -> None:
    from benchmarks.spdl_peers import process_stream

    stages = (inc1, inc2, inc3, inc4)
    assert list(process_stream(stages, 20)) == [x + 4 for x in range(20)]
