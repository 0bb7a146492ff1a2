"""Process backend only: edges between two process stages carry sealed bundles.

The parent forwards a worker's whole output slice to the next worker without
opening it (``flowpipe/_runtime/bundles.py``). These tests check which edges
bundle, and that item numbering, statistics, errors and crash retries still
count single items across such an edge.
"""

from __future__ import annotations

import os
import pickle
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from helpers import crash_once

from flowpipe import StageError, WorkerCrashed, merge, stage
from flowpipe._dsl.pipeline import Pipeline
from flowpipe._plan.compile import compile_plan
from flowpipe._plan.edges import plan_edges
from flowpipe._runtime.backends.base import load_backend

P = "process"


def inc(x: int) -> int:
    return x + 1


def double(x: int) -> int:
    return 2 * x


def bundled_edges(pipe: Pipeline[Any, Any]) -> dict[str, tuple[bool, bool]]:
    """``label -> (bundles_in, bundles_out)`` as a run of ``pipe`` is planned."""
    plan = compile_plan(pipe, P)
    plan = plan_edges(plan, {name: load_backend(name).capabilities for name in plan.backends})
    assert plan.edges is not None
    return {node.label: plan.edges.sealed(node.position) for node in plan.stages}


def test_a_chain_of_process_stages_bundles_every_inner_edge() -> None:
    edges = bundled_edges(stage(inc, name="a") | stage(inc, name="b") | stage(inc, name="c"))
    # the source feeds items to a; c hands items to the caller
    assert edges == {"a": (False, True), "b": (True, True), "c": (True, False)}


def test_edges_that_need_single_items_do_not_bundle() -> None:
    pipe = (
        stage(inc, name="a")
        | stage(inc, name="thread", backend="thread")
        | stage(inc, name="b")
        | stage(lambda xs: xs, name="batched", batch=4)
        | stage(inc, name="c")
        | stage(lambda w: w[0], name="windowed", window=2)
        | stage(inc, name="d")
        | stage(inc, name="dropping", overflow="drop_oldest", buffer=8)
    )
    # Into a thread, batch, window or dropping stage: items. Out of any process stage
    # (a batch or window stage too) into a plain process stage: bundles.
    assert bundled_edges(pipe) == {
        "a": (False, False),
        "thread": (False, False),
        "b": (False, False),
        "batched": (False, True),
        "c": (True, False),
        "windowed": (False, True),
        "d": (True, False),
        "dropping": (False, False),
    }


def test_edges_into_and_out_of_a_keyed_stage_carry_items() -> None:
    # Its router computes keys in the caller; its workers hand on each run's outputs.
    keyed = stage(inc, name="keyed", workers=2, key=lambda x: x % 2)
    pipe = stage(inc, name="a") | keyed | stage(inc, name="b") | stage(inc, name="c")
    assert bundled_edges(pipe) == {
        "a": (False, False),
        "keyed": (False, False),
        "b": (False, True),
        "c": (True, False),
    }
    assert (pipe.run(range(500), backend=P)) == [x + 4 for x in range(500)]


def test_a_fan_out_bundles_only_when_every_branch_can_take_bundles() -> None:
    both = bundled_edges(stage(inc, name="a") | (stage(inc, name="x"), stage(double, name="y")))
    # the branches bundle nothing out: a join zips single items
    assert both == {"a": (False, True), "x": (True, False), "y": (True, False)}
    mixed = stage(inc, name="a") | (stage(inc, name="x"), stage(double, name="t", backend="thread"))
    assert bundled_edges(mixed)["a"] == (False, False)
    assert bundled_edges(mixed)["x"] == (False, False)


def test_a_merge_bundles_only_when_every_writer_bundles() -> None:
    merged = (
        stage(inc, name="a")
        | merge(stage(inc, name="x"), stage(double, name="y"))
        | stage(inc, name="z")
    )
    edges = bundled_edges(merged)
    assert edges == {"a": (False, True), "x": (True, True), "y": (True, True), "z": (True, False)}
    spoiled = (
        stage(inc, name="a")
        | merge(stage(inc, name="x"), stage(double, name="t", backend="thread"))
        | stage(inc, name="z")
    )
    edges = bundled_edges(spoiled)
    # a feeds the thread branch too, and t writes items into z: no bundle anywhere
    assert not any(inp or out for inp, out in edges.values())


def test_bundled_edges_give_every_item_in_order_with_item_counts() -> None:
    pipe = stage(inc, name="a") | stage(double, name="b", workers=2) | stage(inc, name="c")
    with pipe.iter(range(5000), backend=P) as run:
        out = list(run)
    assert out == [2 * (x + 1) + 1 for x in range(5000)]
    for label in ("a", "b", "c"):
        assert run.stats[label].items_in == 5000
        assert run.stats[label].items_out == 5000


def explode(x: int) -> Any:
    yield from range(x % 3)


def test_generators_across_bundled_edges() -> None:
    pipe = stage(explode, name="g") | stage(inc, name="b") | stage(explode, name="h")
    expected = [z for x in range(300) for y in explode(x) for z in explode(y + 1)]
    assert pipe.run(range(300), backend=P) == expected


def fail_on_1234(x: int) -> int:
    if x == 1234:
        raise ValueError("bad item")
    return x


def test_an_error_after_a_bundled_edge_names_the_input_by_its_number() -> None:
    with pytest.raises(StageError) as info:
        (stage(inc, name="a") | stage(fail_on_1234, name="b")).run(range(3000), backend=P)
    assert info.value.stage == "b"
    assert info.value.index == 1233  # b's 1234th input is a(1233) == 1234
    assert info.value.item == 1234
    assert isinstance(info.value.__cause__, ValueError)


def test_on_error_skip_after_a_bundled_edge() -> None:
    pipe = stage(inc, name="a") | stage(fail_on_1234, name="b", on_error="skip")
    with pipe.iter(range(3000), backend=P) as run:
        out = list(run)
    assert out == [x + 1 for x in range(3000) if x + 1 != 1234]
    assert run.stats["b"].skipped == 1


def test_a_crash_after_a_bundled_edge_is_retried_item_by_item(tmp_path: Path) -> None:
    fn = crash_once(tmp_path / "crashed", 777)
    pipe = stage(inc, name="a") | stage(fn, name="flaky", retries=1) | stage(inc, name="c")
    with pipe.iter(range(2000), backend=P) as run:
        out = list(run)
    assert out == [(x + 1) * 10 + 1 for x in range(2000)]  # nothing lost, nothing twice
    assert (tmp_path / "crashed").exists()
    assert run.stats["flaky"].retries >= 1


def test_a_crash_after_a_bundled_edge_without_retries_names_the_stage() -> None:
    def die(x: int) -> int:
        if x == 500:
            os._exit(3)
        return x

    with pytest.raises(WorkerCrashed) as info:
        (stage(inc, name="a") | stage(die, name="fragile")).run(range(2000), backend=P)
    assert info.value.stage == "fragile"


def make_frame(x: int) -> Any:
    return np.full((256, 256, 3), x % 251, np.uint8)


def checksum(f: Any) -> int:
    return int(f[0, 0, 0]) + int(f[-1, -1, -1])


def test_large_arrays_inside_bundles_cross_intact() -> None:
    pipe = stage(make_frame) | stage(lambda f: f + 1) | stage(checksum)
    assert pipe.run(range(60), backend=P) == [2 * ((x % 251) + 1) for x in range(60)]


@pytest.mark.parametrize("n", [3, 1000])
def test_a_bundle_travels_through_shared_memory(monkeypatch: pytest.MonkeyPatch, n: int) -> None:
    """Small or large, a bundle's pickle is in a segment: the parent passes on names."""
    from flowpipe._transport import recycle, wire

    words = [f"{i:0200d}" for i in range(n)]  # 600 B or 200 KB of pickle, no large buffer
    monkeypatch.setattr(wire, "IN_WORKER", True)  # bundles are sealed in a worker process
    sealed = wire.bundle(words, "fptest_")
    fields = (sealed.segments, sealed.payload, sealed.count)
    del sealed
    monkeypatch.setattr(wire, "IN_WORKER", False)
    handle = wire.Packed(*fields)
    assert handle.payload == b""  # what the parent forwards is names, not the pickle
    assert len(handle.segments) == 1
    ((_, size),) = handle.segments
    assert size == wire.size_class(size)  # one of the sizes that segments are reused at
    assert size >= len(pickle.dumps(words, protocol=5))
    assert handle.count == n
    assert handle.unpack() == words
    assert wire.unbundle([handle]) == words
    del handle
    recycle.forget("fptest_")  # what the worker lent: gone with the test's "run"
    assert not [s for s in os.listdir(wire.SHM_DIR) if s.startswith("fptest_")]


def test_size_classes_waste_at_most_an_eighth() -> None:
    from flowpipe._transport.wire import size_class

    assert size_class(1) == size_class(4096) == 4096
    for n in [4097, 5000, 65_537, 1_000_000, 123_456_789]:
        c = size_class(n)
        assert n <= c <= n * 9 // 8 + 1
    assert len({size_class(n) for n in range(8193, 16385)}) == 8


def test_long_strings_across_bundled_edges() -> None:
    words = [f"{i:0300d}" for i in range(5000)]
    pipe = stage(lambda w: w + "!", name="a") | stage(len, name="b")
    assert pipe.run(words, backend=P) == [301] * 5000


class _FakeBundle:
    def __init__(self, count: int, nbytes: int) -> None:
        self.count = count
        self.nbytes = nbytes


def test_a_bundled_buffer_holds_many_small_bundles_but_few_of_frames() -> None:
    from flowpipe._transport.buffer import AUTO_BYTES, Channel

    small = Channel(None, name="small")
    small.carry_bundles(16)
    small.add_producer()
    small.put_many([_FakeBundle(100, 0)])
    assert small.capacity == 16  # bundles of small items: BUNDLES_MIN
    frames = Channel(None, name="frames")
    frames.carry_bundles(16)
    frames.add_producer()
    frames.put_many([_FakeBundle(2, 2 * 6_220_800)])
    assert frames.capacity == AUTO_BYTES // (2 * 6_220_800)  # bounded by bytes, as threads are
    got = frames.take(8)
    assert got is not None
    assert got[1] == 0  # offsets count items ...
    frames.put_many([_FakeBundle(2, 2 * 6_220_800)])
    got = frames.take(8)
    assert got is not None
    assert got[1] == 2  # ... not bundles
