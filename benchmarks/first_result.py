"""First result of 3 thread (or process) stages over 10 items, in a fresh interpreter.

``python -m benchmarks.first_result [--repeat N] [--tree PATH ...] [--backend process]``

Rows: a hand-written queue chain, SPDL's ``PipelineBuilder`` (three ``pipe``
stages, input order, read under ``auto_stop``; when installed), flowpipe.
Each row starts a new interpreter per run and reports the milliseconds from
just after ``import flowpipe`` (or the peer's imports) to the first output,
and to the end of the run, as the median and min-max over the runs, with
bytecode caches written (a warm-up round first), as an installed program
runs. Rows are timed round-robin. ``--tree`` times flowpipe from other checkouts too (their
``flowpipe/`` first on ``PYTHONPATH``), so two revisions compare side by side
in one run. ``--backend process`` runs flowpipe's stages in processes (the
fork server started in the run) and, in place of the thread chain, a
hand-written chain of ``multiprocessing`` processes and queues (the default
start method).
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import statistics
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

FLOWPIPE = """
import time
import flowpipe
t0 = time.perf_counter()
inc = flowpipe.stage(lambda x: x + 1, name="a")
pipe = inc | flowpipe.stage(lambda x: x + 2, name="b") | flowpipe.stage(lambda x: x * 2, name="c")
run = pipe.iter(range(10), backend=BACKEND)
first = next(run)
t1 = time.perf_counter()
rest = list(run)
t2 = time.perf_counter()
assert [first, *rest] == [(x + 3) * 2 for x in range(10)]
print((t1 - t0) * 1e3, (t2 - t0) * 1e3)
"""

QUEUE_CHAIN = """
import queue, threading, time
t0 = time.perf_counter()
END = object()
def worker(fn, inp, out):
    while (x := inp.get()) is not END:
        out.put(fn(x))
    out.put(END)
qs = [queue.Queue(1024) for _ in range(4)]
for fn, a, b in zip((lambda x: x + 1, lambda x: x + 2, lambda x: x * 2), qs, qs[1:]):
    threading.Thread(target=worker, args=(fn, a, b), daemon=True).start()
def feed():
    for x in range(10):
        qs[0].put(x)
    qs[0].put(END)
threading.Thread(target=feed, daemon=True).start()
first = qs[-1].get()
t1 = time.perf_counter()
rest = []
while (x := qs[-1].get()) is not END:
    rest.append(x)
t2 = time.perf_counter()
assert [first, *rest] == [(x + 3) * 2 for x in range(10)]
print((t1 - t0) * 1e3, (t2 - t0) * 1e3)
"""

PROCESS_CHAIN = """
import multiprocessing as mp, time
def worker(k, inp, out):
    fn = (lambda x: x + 1, lambda x: x + 2, lambda x: x * 2)[k]
    while (x := inp.get()) is not None:
        out.put(fn(x))
    out.put(None)
if __name__ == "__main__":
    t0 = time.perf_counter()
    qs = [mp.Queue(1024) for _ in range(4)]
    procs = [mp.Process(target=worker, args=(k, qs[k], qs[k + 1])) for k in range(3)]
    for p in procs:
        p.start()
    for x in range(10):
        qs[0].put(x)
    qs[0].put(None)
    first = qs[-1].get()
    t1 = time.perf_counter()
    rest = []
    while (x := qs[-1].get()) is not None:
        rest.append(x)
    for p in procs:
        p.join()
    t2 = time.perf_counter()
    assert [first, *rest] == [(x + 3) * 2 for x in range(10)]
    print((t1 - t0) * 1e3, (t2 - t0) * 1e3)
"""


SPDL = """
import time
from spdl.pipeline import PipelineBuilder
t0 = time.perf_counter()
pipeline = (
    PipelineBuilder()
    .add_source(range(10))
    .pipe(lambda x: x + 1, output_order="input")
    .pipe(lambda x: x + 2, output_order="input")
    .pipe(lambda x: x * 2, output_order="input")
    .add_sink()
    .build(num_threads=3)
)
with pipeline.auto_stop():
    run = iter(pipeline)
    first = next(run)
    t1 = time.perf_counter()
    rest = list(run)
t2 = time.perf_counter()
assert [first, *rest] == [(x + 3) * 2 for x in range(10)]
print((t1 - t0) * 1e3, (t2 - t0) * 1e3)
"""


def once(code: str, tree: str | None) -> tuple[float, float]:
    env = dict(os.environ)
    # As installed programs run: with bytecode caches (the first, warm-up round writes them).
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    if tree is not None:
        env["PYTHONPATH"] = os.pathsep.join([tree, env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    # From the tree itself: ``python -c`` puts the working folder first on sys.path.
    where = tree if tree is not None else str(Path(__file__).resolve().parent.parent)
    done = subprocess.run(
        [sys.executable, "-c", code], env=env, cwd=where, capture_output=True, text=True, check=True
    )
    first, end = done.stdout.split()
    return float(first), float(end)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.first_result")
    parser.add_argument("--repeat", type=int, default=15)
    parser.add_argument("--tree", action="append", default=[], metavar="PATH")
    parser.add_argument("--backend", choices=("thread", "process"), default="thread")
    args = parser.parse_args(argv)
    flowpipe = f"BACKEND = {args.backend!r}\n{FLOWPIPE}"
    rows: dict[str, tuple[str, str | None]] = (
        {"queue chain (hand-written)": (QUEUE_CHAIN, None)}
        if args.backend == "thread"
        else {"mp.Queue chain (hand-written)": (PROCESS_CHAIN, None)}
    )
    if args.backend == "thread" and importlib.util.find_spec("spdl") is not None:
        rows["SPDL PipelineBuilder"] = (SPDL, None)  # the benchmarks extra
    rows["flowpipe (this checkout)"] = (flowpipe, None)
    for tree in args.tree:
        rows[f"flowpipe ({Path(tree).name})"] = (flowpipe, str(Path(tree).resolve()))
    times: dict[str, list[tuple[float, float]]] = {name: [] for name in rows}
    for code, tree in rows.values():  # warm-up: bytecode caches, the OS's file cache
        once(code, tree)
    for _ in range(args.repeat):
        for name, (code, tree) in rows.items():
            times[name].append(once(code, tree))
    print("| implementation | first result ms, median | min-max | end ms, median |")
    print("|---|---:|---:|---:|")
    for name, got in times.items():
        firsts, ends = [t[0] for t in got], [t[1] for t in got]
        print(
            f"| {name} | {statistics.median(firsts):.1f} | {min(firsts):.1f}-{max(firsts):.1f} "
            f"| {statistics.median(ends):.1f} |"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
