"""How fast one pure-Python loop runs, against the state of the process's heap.

``python -m benchmarks.heap_state [--max-live N] [--calls K]``

The ``proc-cpu`` scenario's stage is ``for _ in range(80_000): pass``. Each
turn makes an int above 256 and frees the one before: a call is mostly the
small-object allocator (``_PyObject_Malloc``/``_Free``, ``perf record``), and
how fast that allocator serves a block depends on how full its current pool
is, which depends on whatever the process allocated before. This script runs
the same call in one process with 0, 1, ..., ``max-live`` extra small ints
kept alive, the median of ``calls`` calls each, and prints the spread: on a
2-core Linux VM the call took 799-1014 µs (median 821) depending on that
count alone. A worker process whose own hand-offs leave the heap in a slower
state runs the same stage slower, whoever's the worker is (``benchmarks/README.md``,
"Issue 21, one session later").
"""

from __future__ import annotations

import argparse
import statistics
import time

TURNS = 80_000  # as PROC_SPIN in process_scenarios.py


def one_call() -> float:
    """CPU microseconds of one call of the ``proc-cpu`` stage's loop."""
    start = time.thread_time_ns()
    for _ in range(TURNS):
        pass
    return (time.thread_time_ns() - start) / 1e3


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--max-live", type=int, default=130, help="most extra ints kept alive")
    parser.add_argument("--calls", type=int, default=15, help="calls timed per count")
    args = parser.parse_args()
    live: list[int] = []
    medians: dict[int, float] = {}
    for k in range(args.max_live + 1):
        medians[k] = statistics.median(one_call() for _ in range(args.calls))
        live.append(10**6 + k)  # one more 32-byte block in use
    values = sorted(medians.values())
    fastest = values[0]
    print(f"one call of `for _ in range({TURNS}): pass`, CPU, median of {args.calls} calls,")
    print(f"with 0..{args.max_live} extra small ints alive:")
    print(
        f"min {fastest:.0f} us, median {statistics.median(values):.0f} us, max {values[-1]:.0f} us"
    )
    slow = {k: v for k, v in medians.items() if v > fastest * 1.12}
    print(
        "counts at least 12% slower than the fastest:",
        slow and {k: round(v) for k, v in slow.items()},
    )


if __name__ == "__main__":
    main()
