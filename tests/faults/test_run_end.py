"""Faults: a run's end under load. ``run()`` and ``close()`` return only after the run's
worker processes have exited and its shared-memory segments are gone, however long
the workers take to go: no time limit decides it.

Only segments named after this test process (``fp<pid>_``) are counted: other
flowpipe programs may use ``/dev/shm`` at the same time.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
from helpers import Journal, alive

from flowpipe import stage
from flowpipe._runtime.core import run as run_module

SHM_DIR = "/dev/shm"
BURNERS = 2  # busy-loop processes: the machine is loaded while the runs end
RUNS = 3


def segments() -> list[str]:
    prefix = f"fp{os.getpid()}_"
    return [n for n in os.listdir(SHM_DIR) if n.startswith(prefix)]


@pytest.fixture
def load() -> Iterator[None]:
    """CPU burners, started and ended here."""
    burners = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(BURNERS)]
    try:
        yield
    finally:
        for p in burners:
            p.kill()
        for p in burners:
            p.wait()


def frame_pipeline(journal: Journal) -> Any:
    def noted(f: np.ndarray) -> np.ndarray:
        journal.write(str(os.getpid()))  # which worker processes ran
        return f

    a = stage(lambda f: noted(f) + 1, name="a", workers=2)
    b = stage(lambda f: noted(f) * 2, name="b", workers=2)
    c = stage(lambda f: noted(f).copy(), name="c", workers=2)
    return a | b | c


def frames(n: int) -> Iterator[np.ndarray]:
    for i in range(n):
        yield np.full((240, 320, 3), i % 100, np.uint8)  # 225 KB: through shared memory


@pytest.mark.skipif(not os.path.isdir(SHM_DIR), reason="POSIX shared memory in /dev/shm")
@pytest.mark.parametrize("how", ["run", "close"])
def test_a_run_ends_with_its_workers_gone_and_no_segment_left_even_when_they_are_slow(
    how: str, journal: Journal, monkeypatch: pytest.MonkeyPatch, load: None
) -> None:
    # Workers that take longer to go than close() waits for threads stuck in a
    # call: under load every end looks like this. The run must wait for them.
    monkeypatch.setattr(run_module, "JOIN_TIMEOUT", 0.0)
    pipe = frame_pipeline(journal)
    for _ in range(RUNS):
        if how == "run":
            out = pipe.run(frames(12), backend="process")
            assert len(out) == 12
        else:
            run = pipe.iter(frames(1000), backend="process")
            next(run)
            run.close()
        assert segments() == []
        assert not [pid for pid in set(map(int, journal.lines())) if alive(pid)]
