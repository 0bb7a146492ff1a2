"""Faults: a generator's cleanup (``finally``, ``with``: a ``VideoCapture.release()``) runs
when its run ends early, before ``close()`` returns, on every backend; not at some later
garbage collection."""

from __future__ import annotations

import gc
import itertools
from collections.abc import Iterator

import pytest
from helpers import Journal

from flowpipe import stage


@pytest.fixture
def no_gc() -> Iterator[None]:
    """No collection of cycles while the test runs: cleanup must not depend on one."""
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


@pytest.mark.parametrize("how", ["close", "break", "garbage"])
def test_a_generator_stage_cleans_up_when_its_run_ends_early(
    backend: str, how: str, journal: Journal, no_gc: None
) -> None:
    def frames(video: str) -> Iterator[int]:
        journal.write("opened")
        try:
            yield from itertools.count()  # a camera: endless
        finally:
            journal.write("released")

    run = stage(frames, name="frames").iter(["cam"], backend=backend)
    if how == "close":
        next(run)
        run.close()
    elif how == "break":
        with run:
            for _ in run:
                break
    else:
        next(run)
        del run  # the last reference: the run closes as it goes
    assert journal.lines() == ["opened", "released"]


@pytest.mark.parametrize("how", ["close", "garbage"])
def test_a_source_stage_cleans_up_when_its_run_ends_early(
    backend: str, how: str, journal: Journal, no_gc: None
) -> None:
    @stage(name="camera")
    def camera() -> Iterator[int]:
        journal.write("opened")
        try:
            yield from itertools.count()
        finally:
            journal.write("released")

    @stage
    def double(x: int) -> int:
        return 2 * x

    run = (camera | double).iter(backend=backend)
    next(run)
    if how == "close":
        run.close()
    else:
        del run
    assert journal.lines() == ["opened", "released"]
