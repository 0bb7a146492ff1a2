"""Stateful class stages and ``async def`` stages, on every backend.

What stages record travels through a file (``Journal``), so the same test
observes workers wherever the backend runs them: threads, processes or actors.
"""

from __future__ import annotations

import asyncio
import itertools
import time
import uuid
from typing import Any

import pytest
from helpers import Journal

from flowpipe import StageError, stage
from flowpipe._runtime.backends.process.backend import EXIT_WAIT
from flowpipe._runtime.remote.caller import STOP_GRACE

GATE_TIMEOUT = 10.0  # seconds a gate waits before failing the test (never reached when it works)


class Tracked:
    """A class stage that journals its construction and teardown, once per instance."""

    def __init__(self, journal: Journal, factor: int = 2) -> None:
        self.journal = journal
        self.factor = factor
        self.id = uuid.uuid4().hex
        journal.write(f"init {self.id}")

    def __call__(self, x: int) -> tuple[int, str]:
        return (x * self.factor, self.id)

    def close(self) -> None:
        self.journal.write(f"close {self.id}")


@pytest.mark.parametrize("workers", [1, 3])
def test_a_class_stage_is_built_once_per_worker_and_closed_once(
    backend: str, journal: Journal, workers: int
) -> None:
    out = stage(Tracked, workers=workers)(journal, factor=3).run(range(60), backend=backend)
    assert [y for y, _ in out] == [x * 3 for x in range(60)]
    inits, closes = journal.lines("init "), journal.lines("close ")
    assert len(inits) == workers
    assert sorted(closes) == sorted(inits)  # each instance closed exactly once
    assert {who for _, who in out} <= set(inits)


def test_a_class_stage_is_closed_when_the_run_is_left_early(backend: str, journal: Journal) -> None:
    configured = stage(Tracked, workers=2)(journal)
    with configured.iter(itertools.count(), backend=backend) as run:
        assert next(run)[0] == 0
    inits, closes = journal.lines("init "), journal.lines("close ")
    # A worker process still starting when the run is left may be ended before
    # it builds its instance; whatever was built is closed.
    assert len(inits) == 2 if backend == "thread" else 1 <= len(inits) <= 2
    assert sorted(closes) == sorted(inits)


def test_a_class_stage_is_closed_when_the_run_fails(backend: str, journal: Journal) -> None:
    class Failing(Tracked):
        def __call__(self, x: int) -> tuple[int, str]:
            if x == 5:
                raise RuntimeError("boom")
            return super().__call__(x)

    with pytest.raises(StageError):
        stage(Failing, workers=2)(journal).run(range(20), backend=backend)
    inits, closes = journal.lines("init "), journal.lines("close ")
    assert len(inits) == 2
    assert sorted(closes) == sorted(inits)


def test_an_error_in_close_fails_the_run_naming_the_stage(backend: str) -> None:
    class Flusher:
        def __call__(self, x: int) -> int:
            return x

        def close(self) -> None:
            raise OSError("disk full while flushing")

    with pytest.raises(StageError) as info:
        stage(Flusher, name="flusher")().run(range(10), backend=backend)
    assert info.value.stage == "flusher"
    assert info.value.index is None
    assert isinstance(info.value.__cause__, OSError)
    assert "disk full while flushing" in str(info.value)


def test_an_error_in_close_does_not_replace_the_runs_first_error(backend: str) -> None:
    class Picky:
        def __call__(self, x: int) -> int:
            if x == 3:
                raise ValueError("item 3 is bad")
            return x

        def close(self) -> None:
            raise RuntimeError("close failed")

    with pytest.raises(StageError) as info:
        stage(Picky, name="picky")().run(range(10), backend=backend)
    assert (info.value.index, info.value.item) == (3, 3)
    assert isinstance(info.value.__cause__, ValueError)


def test_a_slow_close_is_waited_for_when_the_run_ends(backend: str, journal: Journal) -> None:
    # A stage that flushes a file in close() must not be cut off at the end of a
    # run that went well, however long the flush takes: here longer than the
    # grace a worker process gets when a run is stopped.
    flush_s = max(EXIT_WAIT, STOP_GRACE) + 0.5

    class SlowFlush:
        def __call__(self, x: int) -> int:
            return x

        def close(self) -> None:
            time.sleep(flush_s)  # the work under test (a long flush), not a wait for anything
            journal.write("flushed")

    assert stage(SlowFlush)().run(range(5), backend=backend) == list(range(5))
    assert journal.lines() == ["flushed"]


def test_a_class_stage_without_close_runs(backend: str) -> None:
    @stage(workers=2)
    class Offset:
        def __init__(self, by: int = 1) -> None:
            self.by = by

        def __call__(self, x: int) -> int:
            return x + self.by

    configured: Any = Offset(by=5)
    assert configured.run(range(10), backend=backend) == list(range(5, 15))
    bare: Any = Offset
    assert (stage(lambda x: x) | bare).run(range(3), backend=backend) == [1, 2, 3]


def test_a_class_stage_keeps_state_across_items(backend: str) -> None:
    class RunningTotal:
        def __init__(self) -> None:
            self.total = 0

        def __call__(self, x: int) -> int:
            self.total += x
            return self.total

    assert stage(RunningTotal)().run(range(6), backend=backend) == [0, 1, 3, 6, 10, 15]


def test_a_generator_class_stage(backend: str, journal: Journal) -> None:
    class Splitter(Tracked):
        def __call__(self, x: int) -> Any:  # a generator method
            yield from [x] * (x % 3)

    out = stage(Splitter)(journal).run(range(9), backend=backend)
    assert out == [x for x in range(9) for _ in range(x % 3)]
    assert len(journal.lines("close ")) == 1


def test_a_batch_class_stage(backend: str) -> None:
    class Model:
        def __init__(self, scale: int) -> None:
            self.scale = scale

        def __call__(self, xs: list[int]) -> list[int]:
            return [x * self.scale for x in xs]

    out = stage(Model, batch=4, workers=2)(10).run(range(10), backend=backend)
    assert out == [x * 10 for x in range(10)]


# -- async stages ---------------------------------------------------------------------


@pytest.mark.parametrize("workers", [2, 4])
def test_an_async_stage_has_workers_items_in_flight(backend: str, workers: int) -> None:
    """Each call waits until ``workers`` calls are in flight: without overlap it times out."""
    state: dict[str, Any] = {"in_flight": 0, "peak": 0, "all_in": None}

    @stage(workers=workers)
    async def overlapping(x: int) -> tuple[int, int]:
        if state["all_in"] is None:
            state["all_in"] = asyncio.Event()
        state["in_flight"] += 1
        state["peak"] = max(state["peak"], state["in_flight"])
        if state["in_flight"] == workers:
            state["all_in"].set()
        try:
            await asyncio.wait_for(state["all_in"].wait(), GATE_TIMEOUT)
        finally:
            state["in_flight"] -= 1
        return (x, state["peak"])

    out = overlapping.run(range(5 * workers), backend=backend)
    assert [x for x, _ in out] == list(range(5 * workers))
    peaks = [p for _, p in out]
    assert max(peaks) == workers  # all were in flight at once ...
    assert all(p <= workers for p in peaks)  # ... and never more than ``workers``


def test_an_async_class_stage_overlaps_and_is_closed(backend: str, journal: Journal) -> None:
    class Client(Tracked):
        def __init__(self, journal: Journal) -> None:
            super().__init__(journal)
            self.in_flight = 0
            self.all_in: asyncio.Event | None = None

        async def __call__(self, x: int) -> int:  # type: ignore[override]
            if self.all_in is None:
                self.all_in = asyncio.Event()
            self.in_flight += 1
            if self.in_flight == 3:
                self.all_in.set()
            await asyncio.wait_for(self.all_in.wait(), GATE_TIMEOUT)
            return x * 2

    out = stage(Client, workers=3)(journal).run(range(9), backend=backend)
    assert out == [x * 2 for x in range(9)]
    assert len(journal.lines("init ")) == 1
    assert journal.lines("close ") == journal.lines("init ")


def test_an_async_stage_keeps_order_when_calls_finish_out_of_order(backend: str) -> None:
    events: dict[int, asyncio.Event] = {}

    @stage(workers=3)
    async def reverse_release(x: int) -> int:
        # within each group of three, the last item finishes first
        events.setdefault(x, asyncio.Event())
        if x % 3 != 2:
            await asyncio.wait_for(events[x].wait(), GATE_TIMEOUT)
        if x % 3 != 0:
            events.setdefault(x - 1, asyncio.Event()).set()
        return x

    assert reverse_release.run(range(12), backend=backend) == list(range(12))


def test_an_async_stage_unordered_gives_the_same_multiset(backend: str) -> None:
    @stage(workers=4, ordered=False)
    async def fetch(x: int) -> int:
        await asyncio.sleep((x % 4) / 2000)  # finishing order pressure, not synchronisation
        return x * 2

    assert sorted(fetch.run(range(40), backend=backend)) == [x * 2 for x in range(40)]


def test_an_async_stage_error_is_a_stage_error(backend: str) -> None:
    @stage(workers=2)
    async def fragile(x: int) -> int:
        if x == 3:
            raise LookupError("three")
        return x

    with pytest.raises(StageError) as info:
        fragile.run(range(10), backend=backend)
    assert info.value.stage == "fragile"
    assert info.value.index == 3
    assert isinstance(info.value.__cause__, LookupError)


def test_an_async_stage_skips_and_retries(backend: str) -> None:
    attempts: dict[int, int] = {}

    @stage(workers=2, retries=1, on_error="skip")
    async def flaky(x: int) -> int:
        attempts[x] = attempts.get(x, 0) + 1
        if x % 4 == 0:
            raise ValueError("always")
        if attempts[x] == 1 and x % 2:
            raise ValueError("first time only")
        return x

    with flaky.iter(range(12), backend=backend) as run:
        assert list(run) == [x for x in range(12) if x % 4]
    assert run.stats["flaky"].skipped == 3
