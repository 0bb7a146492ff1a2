"""How long a computed output waits before the caller gets it (issue 19 item 4).

``python -m benchmarks.release [--backend thread process ray] [--slow S] [--repeat N] [--after N]``

One stage over ``range(204)``: items 0-199 are cheap (they return at once),
items 200-203 sleep ``--slow`` seconds each (default 1). Each output carries
``time.perf_counter()`` taken when it was computed (a system-wide clock on
Linux, so worker processes and Ray actors on this machine share it); the
caller notes when it got each output. Reported per backend: how late output
#199 reached the caller (median and max over the runs), and the largest such
wait among outputs 0-199. The target is 20 ms on every backend.
"""

from __future__ import annotations

import argparse
import statistics
import time
from typing import Any

from flowpipe import stage

FAST = 200
SLOW_ITEMS = 4


def one_run(backend: str, slow: float, after: int = 0) -> tuple[float, float]:
    """(wait of #199, the largest wait of #0-#199), in seconds."""

    def work(x: int) -> tuple[int, float]:
        if FAST <= x < FAST + SLOW_ITEMS:
            time.sleep(slow)
        return x, time.perf_counter()

    late: dict[int, float] = {}
    items = range(FAST + SLOW_ITEMS + after)
    with stage(work, name="work").iter(items, backend=backend) as run:
        for x, computed in run:
            late[x] = time.perf_counter() - computed
    return late[FAST - 1], max(late[k] for k in range(FAST))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backend", nargs="+", default=["thread", "process"])
    parser.add_argument("--slow", type=float, default=1.0)
    parser.add_argument("--repeat", type=int, default=3)
    # Cheap items after the slow ones: then #199 and #200 are not in the halving tail of
    # a finite input (slices of 102, 51, 25, ... items), which often cuts them apart.
    parser.add_argument("--after", type=int, default=0)
    args = parser.parse_args(argv)
    if "ray" in args.backend:
        import ray

        ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    rows: dict[str, list[tuple[float, float]]] = {b: [] for b in args.backend}
    for _ in range(args.repeat):
        for backend in args.backend:  # round-robin
            rows[backend].append(one_run(backend, args.slow, args.after))
    then = f", then {args.after} cheap" if args.after else ""
    print(f"items 0-{FAST - 1} cheap, {FAST}-{FAST + SLOW_ITEMS - 1} sleep {args.slow:g} s{then}")
    print(f"{'backend':>8} {'#199 median':>12} {'#199 max':>10} {'worst of 0-199':>15}")
    for backend, got in rows.items():
        waits: list[Any] = [w for w, _ in got]
        worst = max(m for _, m in got)
        print(
            f"{backend:>8} {statistics.median(waits) * 1e3:>10.1f}ms "
            f"{max(waits) * 1e3:>8.1f}ms {worst * 1e3:>13.1f}ms"
        )


if __name__ == "__main__":
    main()
