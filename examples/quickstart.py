"""flowpipe in one screen: plain functions, a lazy graph, a parallel run.

Run it: python examples/quickstart.py
"""

from __future__ import annotations

import time
from collections.abc import Iterator

from flowpipe import stage


@stage
def read(n: int) -> Iterator[int]:
    """A generator stage: one input, several outputs (like frames of a video)."""
    yield from range(n * 10, n * 10 + 10)


@stage(workers=4)
def slow_square(x: int) -> int:
    """An I/O-bound stage (the sleep stands for a network call): 4 run at once."""
    time.sleep(0.01)
    return x * x


@stage(batch=8)
def label(xs: list[int]) -> list[str]:
    """A batch stage: called with lists of up to 8 items, returns one output per input."""
    return [f"{x} is {'even' if x % 2 == 0 else 'odd'}" for x in xs]


def main() -> None:
    pipe = read | slow_square | (label, lambda x: x % 7)
    print("pipeline:", pipe)

    start = time.perf_counter()
    squares = [slow_square(x) for n in range(4) for x in read(n)]
    sequential = [(label([sq])[0], sq % 7) for sq in squares]
    loop_time = time.perf_counter() - start

    with pipe.iter(range(4)) as run:
        outputs = list(run)
    print(f"first outputs: {outputs[:3]}")
    print(run.stats)
    assert [o[0] for o in outputs] == [s[0] for s in sequential]
    print(f"sequential loop: {loop_time:.2f}s   flowpipe: {run.stats.elapsed_s:.2f}s")


if __name__ == "__main__":
    main()
