"""A generator stage's outputs leave while it runs, on every backend.

A stage like ``read(path)`` yields every frame of a video for one input; an
endless one (a camera) never returns. Its outputs must reach the next stage
as they come, with memory bounded by the buffers (SPEC §2, backpressure),
and retries must neither lose nor repeat what already left.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator

from helpers import Journal

from flowpipe import stage
from flowpipe._runtime.outflow import MAX_CHUNK, MAX_HELD

PROGRESS_EVERY = 1_000  # the generators below write their progress this often
# Outputs a generator may run ahead of the consumer: the buffers and the parts on
# their way (between worker processes, 16 bundles of one part each).
AHEAD_BOUND = 200_000
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
