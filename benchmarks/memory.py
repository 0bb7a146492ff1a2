"""Peak memory of 200_000 small items through 3 process stages, each run a fresh program.

``python -m benchmarks.memory [--repeat N] [--items N] [--tree PATH ...]``

Each run is a new interpreter (``python -c``) that pushes ``range(N)`` through
three ``x + 1`` stages in processes and keeps the output list, as a script
would. This process samples, every ``SAMPLE_S``, the memory of that program's
whole process tree (the program, flowpipe's fork server and workers, or the
chain's processes and ``multiprocessing``'s resource tracker) until it exits:

- **RSS**: the sum of the resident set sizes; a page shared by several
  processes (a forked worker's pages it has not written) counts once per
  process;
- **PSS**: the sum of the proportional set sizes (``/proc/PID/smaps_rollup``):
  a shared page is split between the processes that map it, so the sum is the
  memory the program's tree really holds.

Rows run round-robin; medians and min-max over the runs. ``--tree`` times
flowpipe from other checkouts too (their ``flowpipe/`` first on
``PYTHONPATH``), so two revisions compare side by side in one run. Linux only.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from .process_scenarios import process_tree, rss

SAMPLE_S = 0.01

FLOWPIPE = """
import sys
from flowpipe import stage
n = int(sys.argv[1])
pipe = stage(lambda x: x + 1) | stage(lambda x: x + 1) | stage(lambda x: x + 1)
out = pipe.run(range(n), backend="process")
assert out[-1] == n + 2
"""

QUEUE_CHAIN = """
import sys
from benchmarks.process_peers import mp_queue_chain
from benchmarks.scenarios import inc1, inc2, inc3
if __name__ == "__main__":
    n = int(sys.argv[1])
    out = list(mp_queue_chain((inc1, inc2, inc3), n, 1024))
    assert out[-1] == n + 2
"""


def pss(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            for line in f:
                if line.startswith("Pss:"):
                    return int(line.split()[1]) * 1024
    except (OSError, IndexError, ValueError):
        pass
    return 0


def once(code: str, tree: str | None, items: int) -> tuple[int, int]:
    """Peak RSS and peak PSS (bytes) of one run's process tree."""
    env = dict(os.environ)
    here = str(Path(__file__).resolve().parent.parent)
    paths = [p for p in (tree, here, env.get("PYTHONPATH")) if p]
    env["PYTHONPATH"] = os.pathsep.join(paths)
    proc = subprocess.Popen([sys.executable, "-c", code, str(items)], env=env, cwd=here)
    peak_rss = peak_pss = 0
    while proc.poll() is None:
        pids = process_tree(proc.pid)
        peak_rss = max(peak_rss, sum(rss(p) for p in pids))
        peak_pss = max(peak_pss, sum(pss(p) for p in pids))
        time.sleep(SAMPLE_S)  # a sampling interval, not a synchronisation
    if proc.returncode != 0:
        raise SystemExit(f"a run failed (exit code {proc.returncode})")
    return peak_rss, peak_pss


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.memory")
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--items", type=int, default=200_000)
    parser.add_argument("--tree", action="append", default=[], metavar="PATH")
    args = parser.parse_args(argv)
    rows: dict[str, tuple[str, str | None]] = {"mp.Queue chain": (QUEUE_CHAIN, None)}
    rows["flowpipe process (this checkout)"] = (FLOWPIPE, None)
    for tree in args.tree:
        rows[f"flowpipe process ({Path(tree).name})"] = (FLOWPIPE, str(Path(tree).resolve()))
    got: dict[str, list[tuple[int, int]]] = {name: [] for name in rows}
    for _ in range(args.repeat):
        for name, (code, tree) in rows.items():
            got[name].append(once(code, tree, args.items))
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    print(
        f"{args.items:_} items, 3 process stages, {args.repeat} runs; load average at the end: {load}"
    )
    print()
    print(
        "| implementation | peak RSS MB, median | min-max | vs chain "
        "| peak PSS MB, median | min-max | vs chain |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|")
    chain_rss = statistics.median(r for r, _ in got["mp.Queue chain"])
    chain_pss = statistics.median(p for _, p in got["mp.Queue chain"])
    for name, runs in got.items():
        r, p = [x / 2**20 for x, _ in runs], [y / 2**20 for _, y in runs]
        mr, mp = statistics.median(r), statistics.median(p)
        print(
            f"| {name} | {mr:.0f} | {min(r):.0f}-{max(r):.0f} | {mr * 2**20 / chain_rss:.2f}x "
            f"| {mp:.0f} | {min(p):.0f}-{max(p):.0f} | {mp * 2**20 / chain_pss:.2f}x |"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
