"""A generator stage's outputs leave while it runs, on every backend.

A stage like ``read(path)`` yields every frame of a video for one input; an
endless one (a camera) never returns. Its outputs must reach the next stage
as they come, with memory bounded by the buffers (SPEC §2, backpressure),
and retries must neither lose nor repeat what already left.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from pathlib import Path

from helpers import FileGate, Journal

from flowpipe import stage
from flowpipe._runtime.core.outflow import MAX_CHUNK, MAX_HELD

PROGRESS_EVERY = 1_000  # the generators below write their progress this often
# Outputs a generator may run ahead of the consumer: the buffers and the parts on
# their way (between worker processes, 16 bundles of one part each).
AHEAD_BOUND = 200_000
HELD_S = 5.0  # how long a generator waits for the test to see its output
LONG = 2 * MAX_HELD + 500  # outputs of one input: at least two parts leave before it ends
FAIL_AT = 2 * MAX_HELD + 100  # ... and before an error at this output


def test_an_endless_generator_delivers_its_outputs(backend: str) -> None:
    @stage
    def endless(start: int) -> Iterator[int]:
        yield from itertools.count(start)

    with endless.iter([5], backend=backend) as run:
        first = list(itertools.islice(run, 3))
    assert first == [5, 6, 7]


def test_a_long_generator_stays_a_bounded_distance_ahead(backend: str, journal: Journal) -> None:
    total = 2_000_000  # collected before the first output left, this would all be made

    @stage
    def many(n: int) -> Iterator[int]:
        for i in range(n):
            if i % PROGRESS_EVERY == 0:
                journal.write(str(i))
            yield i

    with (many | stage(lambda x: x)).iter([total], backend=backend) as run:
        taken = list(itertools.islice(run, 10))
        made = max(int(line) for line in journal.lines())
    assert taken == list(range(10))
    assert made < AHEAD_BOUND, f"the generator ran {made} outputs ahead of a consumer at 10"


def test_streamed_outputs_keep_input_order_across_workers(backend: str) -> None:
    @stage(workers=3)
    def frames(video: int) -> Iterator[tuple[int, int]]:
        for k in range(LONG):  # every input is handed on in parts
            yield (video, k)

    out = frames.run(range(6), backend=backend)
    assert out == [(v, k) for v in range(6) for k in range(LONG)]


def test_a_retried_generator_repeats_nothing_it_handed_on(backend: str) -> None:
    class Flaky:
        def __init__(self) -> None:
            self.failed = False

        def __call__(self, x: int) -> Iterator[tuple[int, int]]:
            for k in range(LONG):
                if x == 1 and k == FAIL_AT and not self.failed:  # parts have left by now
                    self.failed = True
                    raise ValueError("once")
                yield (x, k)

    with stage(retries=1)(Flaky)().iter(range(3), backend=backend) as run:
        out = list(run)
    assert out == [(x, k) for x in range(3) for k in range(LONG)]
    assert run.stats["Flaky"].retries == 1
    assert run.stats["Flaky"].items_out == 3 * LONG


def test_skip_keeps_what_a_failing_generator_handed_on(backend: str) -> None:
    @stage(on_error="skip")
    def upto(x: int) -> Iterator[tuple[int, int]]:
        for k in range(LONG):
            if x == 1 and k == FAIL_AT:
                raise ValueError(x)
            yield (x, k)

    with upto.iter(range(3), backend=backend) as run:
        out = list(run)
    failed = [k for x, k in out if x == 1]
    assert failed == list(range(len(failed)))  # a prefix of input 1's outputs, in order
    # What was handed on stays, the rest not: less than MAX_HELD outputs (and a
    # chunk) are held back at any time.
    assert FAIL_AT - MAX_HELD - MAX_CHUNK < len(failed) < FAIL_AT
    assert [o for o in out if o[0] != 1] == [(x, k) for x in (0, 2) for k in range(LONG)]
    assert run.stats["upto"].skipped == 1


def test_a_generator_that_is_slow_after_a_quick_input_is_not_held_back(
    backend: str, tmp_path: Path
) -> None:
    # Input 0 gives many outputs at once; input 1 gives one, then waits for the
    # test's gate. Its first output must arrive while it waits: the pull of a
    # chunk must not wait for outputs a slow generator has not made yet.
    gate = FileGate(tmp_path / "gate")

    @stage
    def feed(x: int) -> Iterator[tuple[int, int]]:
        if x == 0:
            yield from ((0, k) for k in range(5_000))
        else:
            yield (1, 0)
            if not gate.wait(HELD_S):  # (1, 0) was held back until this gives up
                yield (1, -1)
            yield (1, 1)

    with feed.iter([0, 1], backend=backend) as run:
        outputs = list(itertools.islice(run, 5_001))
        assert outputs[-1] == (1, 0)
        gate.open()
        assert list(run) == [(1, 1)]


def test_endless_generators_on_several_workers_all_deliver(backend: str) -> None:
    @stage(workers=3, ordered=False)
    def camera(name: str) -> Iterator[str]:
        while True:
            yield name

    with camera.iter(["a", "b", "c"], backend=backend) as run:
        seen = set()
        for name in run:
            seen.add(name)
            if len(seen) == 3:
                break
    assert seen == {"a", "b", "c"}


def test_an_on_error_handler_is_not_held_back_by_a_streaming_generator(
    backend: str, tmp_path: Path
) -> None:
    # Input 0 fails; input 1 streams and waits for the handler of input 0's error
    # (which opens the gate, in the caller's process) before it ends.
    gate = FileGate(tmp_path / "gate")

    def handler(item: int, exc: BaseException) -> None:
        gate.open()

    @stage(on_error=handler)
    def feed(x: int) -> Iterator[tuple[int, int]]:
        if x == 0:
            raise ValueError(x)
        yield (x, 0)
        if not gate.wait(HELD_S):  # the handler was held back until this gave up
            yield (x, -1)
        yield (x, 1)

    assert feed.run([0, 1], backend=backend) == [(1, 0), (1, 1)]
