"""Keyed stages (``key=``): speed-up over keys, and the per-item cost when keys interleave.

``python -m benchmarks.keyed [--backend thread|process] [--repeat N] [--quick]``

Two measurements, each the median (min-max) over ``--repeat`` runs, printed
as Markdown:

- **sleep**: 4 cameras in round robin, each call sleeps 2 ms, one keyed stage
  on 1 and on 4 workers (the target is a speed-up of at least 3.5x), and the
  same stage on 4 workers without ``key=``, for what the machine allows.
- **trivial**: 4 cameras in round robin (each item a run of its own, the worst
  case for the router), a keyed ``x + 1`` stage on 4 workers, next to the same
  stage without ``key=``: items per second and microseconds per item.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable, Sequence

from flowpipe import stage

CAMERAS = 4
SLEEP = 0.002


def camera_of(item: tuple[int, int]) -> int:
    return item[0]


def sleepy(item: tuple[int, int]) -> tuple[int, int]:
    time.sleep(SLEEP)
    return item


def plus_one(item: tuple[int, int]) -> tuple[int, int]:
    return (item[0], item[1] + 1)


def frames(n: int) -> list[tuple[int, int]]:
    return [(i % CAMERAS, i) for i in range(n)]


def timed(run: Callable[[], object], repeat: int) -> list[float]:
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        run()
        times.append(time.perf_counter() - t0)
    return times


def row(name: str, n: int, times: list[float], base: float | None = None) -> str:
    med = statistics.median(times)
    ratio = f"{base / med:.2f}x" if base is not None else ""
    return (
        f"| {name} | {n / med:,.0f} ({n / max(times):,.0f}-{n / min(times):,.0f}) "
        f"| {med * 1e6 / n:.2f} | {ratio} |"
    )


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.keyed")
    parser.add_argument("--backend", default="thread")
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args(argv)
    backend, repeat = args.backend, 1 if args.quick else args.repeat
    n_sleep, n_trivial = (80, 5_000) if args.quick else (1_000, 100_000)

    print(f"backend={backend}, {CAMERAS} cameras in round robin\n")
    print("| run | items/s (min-max) | us/item | speed-up |\n|---|---|---|---|")
    items = frames(n_sleep)
    one = timed(lambda: stage(sleepy, key=camera_of).run(items, backend=backend), repeat)
    four = timed(
        lambda: stage(sleepy, workers=4, key=camera_of).run(items, backend=backend), repeat
    )
    unkeyed = timed(lambda: stage(sleepy, workers=4).run(items, backend=backend), repeat)
    base = statistics.median(one)
    print(row(f"sleep 2 ms, key=, workers=1 ({n_sleep})", n_sleep, one))
    print(row(f"sleep 2 ms, key=, workers=4 ({n_sleep})", n_sleep, four, base))
    print(row(f"sleep 2 ms, no key, workers=4 ({n_sleep})", n_sleep, unkeyed, base))

    items = frames(n_trivial)
    plain = timed(lambda: stage(plus_one, workers=4).run(items, backend=backend), repeat)
    keyed = timed(
        lambda: stage(plus_one, workers=4, key=camera_of).run(items, backend=backend), repeat
    )
    print(row(f"x + 1, workers=4 ({n_trivial})", n_trivial, plain))
    print(row(f"x + 1, workers=4, key= ({n_trivial})", n_trivial, keyed, statistics.median(plain)))


if __name__ == "__main__":
    main()
