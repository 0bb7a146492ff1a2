"""Warm start: the first result of a run whose class stage loaded in an earlier run.

``python -m benchmarks.warm_start [--backend NAME ...] [--load S] [--repeat N]``

A pipeline ``parse | Model(keep_alive=True) | label`` whose model takes
``--load`` seconds (default 2) to build runs ``1 + repeat`` times over 20
items, in one interpreter, as a notebook cell run again does. Each row prints
the milliseconds from ``iter()`` to the first output: the first run (the model
loads), and the later runs (the kept worker serves them) as median and
min-max. Rows: only the model kept ("model": on the process backend the two
light stages start worker processes each run), every stage kept ("all"), and
nothing kept ("no", for comparison). Target
(issue 19): the later runs' first result within 50 ms.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Sequence
from typing import Any

import flowpipe
from flowpipe import stage

TARGET_MS = 50.0


class Model:
    """Stands in for a model whose weights take ``load`` seconds to read."""

    def __init__(self, load: float) -> None:
        time.sleep(load)
        self.scale = 3

    def __call__(self, x: int) -> int:
        return x * self.scale


@stage
def parse(x: int) -> int:
    return x + 1


@stage
def label(x: int) -> str:
    return f"#{x}"


def first_result_ms(pipe: Any, backend: str) -> float:
    t0 = time.perf_counter()
    run = pipe.iter(range(20), backend=backend)
    first = next(run)
    took = (time.perf_counter() - t0) * 1e3
    rest = list(run)
    assert [first, *rest] == [f"#{(x + 1) * 3}" for x in range(20)]
    return took


def row(backend: str, load: float, repeat: int, keep: str) -> str:
    light = keep == "all"  # the light stages kept too (else their workers start each run)
    model = stage(Model, keep_alive=keep != "no")(load)
    pipe = parse.with_options(keep_alive=light) | model | label.with_options(keep_alive=light)
    first = first_result_ms(pipe, backend)
    later = [first_result_ms(pipe, backend) for _ in range(repeat)]
    flowpipe.shutdown()
    med = statistics.median(later)
    verdict = ("met" if med <= TARGET_MS else "MISSED") if keep != "no" else "-"
    return (
        f"| {backend} | {keep} | {first:.0f} | {med:.1f} ({min(later):.1f}-{max(later):.1f}) "
        f"| {verdict} |"
    )


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.warm_start")
    parser.add_argument("--backend", action="append", help="thread, process, ray (repeatable)")
    parser.add_argument("--load", type=float, default=2.0, help="seconds the model takes to load")
    parser.add_argument("--repeat", type=int, default=5, help="later runs timed per row")
    args = parser.parse_args(argv)
    print(f"first result of a run, ms; model load {args.load:g} s; target {TARGET_MS:g} ms")
    print("| backend | kept | first run | later runs: median (min-max) | target |")
    print("|---|---|---|---|---|")
    for backend in args.backend or ["thread", "process"]:
        for keep in ("model", "all", "no"):
            print(row(backend, args.load, args.repeat, keep), flush=True)


if __name__ == "__main__":
    main()
