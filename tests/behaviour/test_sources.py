"""``flowpipe.sources``: several feeds read fairly, each with its own buffer and drops."""

from __future__ import annotations

import gc
import itertools
import threading
from collections.abc import Iterator
from typing import Any

import pytest
from helpers import GATE_TIMEOUT

import flowpipe
from flowpipe import Tagged, stage


@stage
def same(t: Tagged) -> Tagged:
    return t


class Endless:
    """An endless feed that notes when its generator's ``finally`` ran, and in which thread."""

    def __init__(self) -> None:
        self.closed = threading.Event()
        self.closed_in: str | None = None

    def __iter__(self) -> Iterator[int]:
        try:
            yield from itertools.count()
        finally:
            self.closed_in = threading.current_thread().name
            self.closed.set()


def test_a_lossless_fan_in_gives_every_item_of_every_feed_in_its_order(backend: str) -> None:
    feeds = flowpipe.sources({"a": range(40), "b": iter(range(25)), "c": []}, overflow="block")
    out = (feeds | same).run(backend=backend)
    for name, n in (("a", 40), ("b", 25)):
        mine = [t for t in out if t.source == name]
        assert [t.seq for t in mine] == list(range(n))
        assert [t.item for t in mine] == list(range(n))
    assert len(out) == 65
    assert feeds.dropped == {"a": 0, "b": 0, "c": 0}


def test_a_sequence_names_its_feeds_by_position() -> None:
    out = list(flowpipe.sources([[10], [20, 21]], overflow="block"))
    assert sorted(out) == [Tagged(0, 0, 10), Tagged(1, 0, 20), Tagged(1, 1, 21)]


def test_items_are_taken_round_robin_across_the_feeds_with_one_ready() -> None:
    ready = {name: threading.Event() for name in "abc"}

    def feed(name: str) -> Iterator[int]:
        yield 0
        yield 1
        ready[name].set()  # asked for a third: its buffer holds two
        yield from (2, 3)

    feeds = flowpipe.sources({name: feed(name) for name in "abc"}, buffer=2, overflow="block")
    it = iter(feeds)
    assert all(e.wait(GATE_TIMEOUT) for e in ready.values())
    first = [(t.source, t.seq) for t in itertools.islice(it, 6)]
    assert first == [("a", 0), ("b", 0), ("c", 0), ("a", 1), ("b", 1), ("c", 1)]
    rest = list(it)
    assert sorted((t.source, t.seq) for t in rest) == [(n, k) for n in "abc" for k in (2, 3)]


def test_a_full_buffer_drops_that_feeds_oldest_items_only() -> None:
    filled = threading.Event()

    def fast() -> Iterator[int]:
        yield from range(5)
        filled.set()  # its last item is in the buffer: the four before it were dropped

    feeds = flowpipe.sources({"fast": fast(), "other": [7]})
    it = iter(feeds)
    assert filled.wait(GATE_TIMEOUT)
    got = sorted(it)
    assert got == [Tagged("fast", 4, 4), Tagged("other", 0, 7)]  # the seq gap shows the drops
    assert feeds.dropped == {"fast": 4, "other": 0}


def test_drop_newest_keeps_the_first_items_of_a_feed() -> None:
    filled = threading.Event()

    def fast() -> Iterator[int]:
        yield from range(5)
        filled.set()

    feeds = flowpipe.sources([fast()], buffer=2, overflow="drop_newest")
    it = iter(feeds)
    assert filled.wait(GATE_TIMEOUT)
    assert [t.seq for t in it] == [0, 1]
    assert feeds.dropped == {0: 3}


def test_a_slow_pipeline_drops_the_fast_feeds_items_and_the_stats_count_them() -> None:
    fast_done = threading.Event()
    seen = [threading.Event() for _ in range(3)]

    def fast() -> Iterator[int]:
        yield from range(200)
        fast_done.set()

    def paced() -> Iterator[int]:  # its next item only once the pipeline saw the last one
        for k in range(3):
            yield k
            assert seen[k].wait(GATE_TIMEOUT)

    @stage(buffer=1)
    def look(t: Tagged) -> Tagged:
        assert fast_done.wait(GATE_TIMEOUT)
        if t.source == "paced":
            seen[t.seq].set()
        return t

    feeds = flowpipe.sources({"fast": fast(), "paced": paced()})
    run = (feeds | look).iter()
    out = list(run)
    assert [t.seq for t in out if t.source == "paced"] == [0, 1, 2]
    fast_seqs = [t.seq for t in out if t.source == "fast"]
    assert fast_seqs == sorted(fast_seqs)
    assert feeds.dropped["paced"] == 0
    assert feeds.dropped["fast"] > 0
    assert len(fast_seqs) + feeds.dropped["fast"] == 200
    row = run.stats.stages[0]
    assert (row.name, row.dropped, row.items_out) == ("sources", feeds.dropped["fast"], len(out))


def test_a_feed_that_ends_leaves_the_others_running() -> None:
    endless = Endless()
    feeds = flowpipe.sources({"short": [1, 2], "long": endless}, buffer=4, overflow="block")
    with (feeds | same).iter() as run:
        seen_long = 0
        for t in run:
            seen_long += t.source == "long"
            if seen_long == 50:
                break
    assert endless.closed.wait(GATE_TIMEOUT)


def test_a_feed_that_raises_ends_the_run_with_an_error_naming_the_feed() -> None:
    endless = Endless()

    def broken() -> Iterator[int]:
        yield 1
        raise ValueError("lens cap on")

    feeds = flowpipe.sources({"ok": endless, "cam3": broken()})
    with pytest.raises(flowpipe.StageError, match="cam3") as caught:
        (feeds | same).run()
    assert caught.value.stage == "source 'cam3'"
    assert isinstance(caught.value.__cause__, ValueError)
    assert endless.closed.wait(GATE_TIMEOUT)  # the other feed was stopped and closed


def test_closing_the_run_stops_every_feed_and_closes_its_generator(backend: str) -> None:
    cams = [Endless(), Endless()]
    run = (flowpipe.sources(cams) | same).iter(backend=backend)
    got = list(itertools.islice(run, 20))
    run.close()
    assert len(got) == 20
    for cam in cams:
        assert cam.closed.wait(GATE_TIMEOUT)
        assert cam.closed_in is not None
        assert cam.closed_in.startswith("flowpipe-feed-")


def test_a_run_left_to_the_garbage_collector_stops_the_feeds() -> None:
    cam = Endless()
    for _ in flowpipe.sources({"cam": cam}) | same:
        break
    gc.collect()
    assert cam.closed.wait(GATE_TIMEOUT)


def test_a_sources_object_is_read_once() -> None:
    feeds = flowpipe.sources([[1]])
    assert list(feeds) == [Tagged(0, 0, 1)]
    with pytest.raises(RuntimeError, match="read once"):
        iter(feeds)


@pytest.mark.parametrize(
    ("args", "kwargs", "error", "match"),
    [
        ((5,), {}, TypeError, "dict of name -> iterable"),
        (({},), {}, ValueError, "no feeds"),
        (({"cam": 3},), {}, TypeError, "feed 'cam' must be an iterable"),
        (([[1]],), {"buffer": 0}, ValueError, "buffer=0"),
        (([[1]],), {"buffer": True}, ValueError, "buffer=True"),
        (([[1]],), {"overflow": "newest"}, ValueError, "overflow='newest'"),
    ],
)
def test_bad_arguments_are_refused(
    args: tuple[Any, ...], kwargs: dict[str, Any], error: type[Exception], match: str
) -> None:
    with pytest.raises(error, match=match):
        flowpipe.sources(*args, **kwargs)
