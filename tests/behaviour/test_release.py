"""A computed output waits only for earlier outputs, never for later items of its slice.

Cheap items are taken in slices of dozens; here item ``SLOW`` of such a slice
waits on a gate the test holds closed. The outputs before it must reach the
caller while it waits (``core/release.py``), on every backend.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterable
from pathlib import Path

import pytest
from conftest import BACKENDS
from helpers import GATE_TIMEOUT, FileGate

from flowpipe import stage

N = 100
SLOW = 40  # in the slice that starts at item 21 (slices of 1, 4, 16, then dozens)


def read_until(run: Iterable[int], count: int, got: list[int], enough: threading.Event) -> None:
    """Read ``count`` outputs of ``run`` into ``got``, then set ``enough``."""
    for y in run:
        got.append(y)
        if len(got) == count:
            enough.set()
            return


def read_while_held(run: Iterable[int], gate: FileGate) -> tuple[bool, list[int]]:
    """Read outputs of ``run`` while ``gate`` holds item ``SLOW`` back, then open it:
    whether the ``SLOW`` outputs before it came out meanwhile, and those read."""
    got: list[int] = []
    enough = threading.Event()
    reader = threading.Thread(target=read_until, args=(run, SLOW, got, enough))
    reader.start()
    try:
        released = enough.wait(GATE_TIMEOUT)
    finally:
        gate.open()
        reader.join(GATE_TIMEOUT)
    return released, got


def parity(x: int) -> int:
    return x % 2


@pytest.mark.parametrize(
    ("workers", "key"),
    # keyed: a worker calls several of its runs (one item each, even or odd) as one
    # slice; the outputs before the slow call leave, each run in its turn
    [(1, None), (2, None), (2, parity)],
    ids=["workers=1", "workers=2", "keyed"],
)
def test_outputs_before_a_slow_call_are_readable_while_it_runs(
    backend: str, workers: int, key: Callable[[int], int] | None, tmp_path: Path
) -> None:
    gate = FileGate(tmp_path / "gate")

    def work(x: int) -> int:
        if x == SLOW:
            assert gate.wait()
        return x * 10

    pipe = stage(work, workers=workers, key=key, name="work")
    with pipe.iter(range(N), backend=backend) as run:
        released, got = read_while_held(run, gate)
        assert released, f"only {len(got)} outputs came out while item {SLOW} was held"
        assert got == [x * 10 for x in range(SLOW)]
        assert list(run) == [x * 10 for x in range(SLOW, N)]
    assert run.stats["work"].items_out == N


@pytest.mark.parametrize("backend", [b for b in BACKENDS if b != "thread"])
def test_outputs_released_before_a_worker_died_are_not_given_twice(
    backend: str, tmp_path: Path
) -> None:
    gate = FileGate(tmp_path / "gate")
    marker = tmp_path / "crashed"

    def work(x: int) -> int:
        if x == SLOW:
            assert gate.wait()
            if not marker.exists():
                marker.write_text("once")
                os._exit(9)
        return x * 10

    pipe = stage(work, retries=1, name="work")
    with pipe.iter(range(N), backend=backend) as run:
        released, got = read_while_held(run, gate)
        assert released
        rest = list(run)
    assert got + rest == [x * 10 for x in range(N)]
