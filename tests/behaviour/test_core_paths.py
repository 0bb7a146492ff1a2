"""Core behaviour on every backend: order, fan-out, errors, early exit (lead's smoke suite)."""

from __future__ import annotations

import asyncio
import gc
import itertools
import random
from collections.abc import Iterator

import pytest

from flowpipe import StageError, merge, stage


def test_order_kept_with_workers_and_uneven_delays(backend: str) -> None:
    rng = random.Random(7)
    delays = [rng.random() / 2000 for _ in range(200)]

    @stage(workers=4)
    def jitter(i: int) -> int:
        import time

        time.sleep(delays[i])  # creates reordering pressure, not synchronisation
        return i * 2

    assert jitter.run(range(200), backend=backend) == [i * 2 for i in range(200)]


def test_generator_batch_join_and_merge(backend: str) -> None:
    @stage
    def spread(x: int) -> Iterator[int]:
        if x % 3:
            yield x
            yield -x

    @stage(batch=4)
    def double(xs: list[int]) -> list[int]:
        return [2 * x for x in xs]

    pipe = spread | double | (stage(lambda x: x + 1), stage(lambda x: x - 1))
    expected_in = [y for x in range(10) if x % 3 for y in (x, -x)]
    assert pipe.run(range(10), backend=backend) == [(2 * y + 1, 2 * y - 1) for y in expected_in]
    merged = (stage(lambda x: x) | merge(spread, double)).run(range(6), backend=backend)
    assert sorted(merged) == sorted(
        [y for x in range(6) if x % 3 for y in (x, -x)] + [2 * x for x in range(6)]
    )


def test_stage_error_names_stage_and_position(backend: str) -> None:
    @stage
    def fragile(x: int) -> int:
        if x == 5:
            raise KeyError("five")
        return x

    with pytest.raises(StageError) as info:
        fragile.run(range(10), backend=backend)
    assert info.value.stage == "fragile"
    assert info.value.index == 5
    assert isinstance(info.value.__cause__, KeyError)


def test_skip_is_counted(backend: str) -> None:
    @stage(on_error="skip")
    def odd_only(x: int) -> int:
        if x % 2 == 0:
            raise ValueError(x)
        return x

    with odd_only.iter(range(10), backend=backend) as run:
        assert list(run) == [1, 3, 5, 7, 9]
    assert run.stats["odd_only"].skipped == 5


def test_break_from_infinite_source_stops_everything(backend: str) -> None:
    pulled = itertools.count()

    def forever() -> Iterator[int]:
        for i in itertools.count():
            next(pulled)
            yield i

    for y in forever() | stage(lambda x: x * 2, workers=2):
        if y >= 20:
            break
    # the leak fixture checks every thread is gone; the source was read boundedly
    assert next(pulled) < 20_000


def test_garbage_collected_run_stops(backend: str) -> None:
    run = stage(lambda x: x).iter(itertools.count(), backend=backend)
    assert next(run) == 0
    del run
    gc.collect()


def test_async_stage_keeps_order(backend: str) -> None:
    @stage(workers=4)
    async def fetch(x: int) -> int:
        await asyncio.sleep((5 - x % 5) / 1000)
        return x + 100

    assert fetch.run(range(20), backend=backend) == [x + 100 for x in range(20)]


def test_first_stage_works_while_later_stages_start(
    backend: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The source is read, and the first stage called, before a later stage's workers
    have started: a slow start (threads, worker processes) overlaps the first work."""
    import threading

    from flowpipe._runtime.backends.base import load_backend

    called = threading.Event()
    waited: list[bool] = []
    cls = load_backend(backend)
    start_stage = cls.start_stage

    def start_after_first_call(self: object, stage_run: object) -> object:
        if stage_run.node.label == "last":  # type: ignore[attr-defined]
            waited.append(called.wait(10))  # before the fix: the source was not read yet
        return start_stage(self, stage_run)  # type: ignore[arg-type]

    monkeypatch.setattr(cls, "start_stage", start_after_first_call)

    def first(x: int) -> int:
        called.set()
        return x + 1

    pipe = stage(first, backend="thread") | stage(lambda x: x * 2, name="last")
    assert pipe.run(range(5), backend=backend) == [(x + 1) * 2 for x in range(5)]
    assert waited == [True]
