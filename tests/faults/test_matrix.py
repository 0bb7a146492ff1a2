"""Faults of the matrix in ``docs/errors.md`` that no other test covered on every
backend they apply to: a class stage that fails or dies while it is built, a worker
that dies while it sends a large reply, and what cannot be pickled (input, output,
stage) on the backends that pickle.
"""

from __future__ import annotations

import importlib.util
import os
import threading
from typing import Any

import numpy as np
import pytest

from flowpipe import StageError, WorkerCrashed, stage

ELSEWHERE = ["process"]
if importlib.util.find_spec("ray") is not None:
    ELSEWHERE.append("ray")


class Refuses:
    """A class stage whose ``__init__`` raises."""

    def __init__(self) -> None:
        raise OSError("no camera")

    def __call__(self, x: int) -> int:
        return x


def test_a_class_stage_whose_init_raises_fails_the_run_naming_it(backend: str) -> None:
    with pytest.raises(StageError) as info:
        stage(Refuses, name="refuses")().run(range(5), backend=backend)
    assert info.value.stage == "refuses"
    assert isinstance(info.value.__cause__, OSError)
    assert "no camera" in str(info.value)


class DiesWhenBuilt:
    def __init__(self) -> None:
        os._exit(4)

    def __call__(self, x: int) -> int:
        return x


@pytest.mark.parametrize("backend", ELSEWHERE)
def test_a_worker_that_dies_in_init_fails_the_run_naming_the_stage(backend: str) -> None:
    with pytest.raises(WorkerCrashed) as info:
        stage(DiesWhenBuilt, name="fragile")().run(range(5), backend=backend)
    assert info.value.stage == "fragile"
    assert info.value.index is None  # no input was being called


def _exit_now() -> None:
    os._exit(5)


class KillsWhenPickled:
    """An output whose pickling ends the process: the worker dies in the middle of
    sending its reply, after the large output before it went to shared memory."""

    def __reduce__(self) -> Any:
        _exit_now()
        return (KillsWhenPickled, ())  # never reached


@pytest.mark.parametrize("backend", ELSEWHERE)
def test_a_worker_that_dies_while_sending_a_large_reply_fails_the_run(backend: str) -> None:
    def big(x: int) -> Any:
        frame = np.full((512, 512, 3), x, np.uint8)  # 768 KB: through shared memory
        return (frame, KillsWhenPickled()) if x == 3 else (frame, None)

    with pytest.raises(WorkerCrashed) as info:
        stage(big, name="big").run(range(6), backend=backend)
    assert (info.value.stage, info.value.index, info.value.item) == ("big", 3, 3)
    # The leak check of every test (conftest) finds no segment left behind.


@pytest.mark.parametrize("backend", ELSEWHERE)
def test_an_input_that_cannot_be_pickled_names_the_stage_and_position(backend: str) -> None:
    items: list[Any] = [1, 2, threading.Lock(), 4]
    with pytest.raises(StageError) as info:
        stage(lambda x: x, name="receiver").run(items, backend=backend)
    assert (info.value.stage, info.value.index) == ("receiver", 2)


@pytest.mark.parametrize("backend", ELSEWHERE)
def test_an_output_that_cannot_be_pickled_names_the_stage(backend: str) -> None:
    with pytest.raises(StageError) as info:
        stage(lambda x: threading.Lock(), name="locker").run([1, 2], backend=backend)
    assert info.value.stage == "locker"
    assert not isinstance(info.value, WorkerCrashed)


@pytest.mark.parametrize("backend", ELSEWHERE)
def test_a_stage_that_cannot_be_pickled_fails_at_start_naming_it(backend: str) -> None:
    lock = threading.Lock()

    def holds_a_lock(x: int) -> int:
        with lock:
            return x

    with pytest.raises(StageError) as info:
        stage(holds_a_lock, name="holder").run([1, 2], backend=backend)
    assert info.value.stage == "holder"
    assert "lock" in repr(info.value.__cause__).lower()


def test_every_test_the_fault_matrix_names_exists() -> None:
    """The matrix in ``docs/errors.md`` names tests: each must be there, by that name."""
    import re
    from pathlib import Path

    tests = Path(__file__).resolve().parents[1]
    page = (tests.parent / "docs" / "errors.md").read_text()
    matrix = page[page.index("## The fault matrix") :]
    named = 0
    for row in (line for line in matrix.splitlines() if line.startswith("| ")):
        current = ""  # ``::name`` alone names a test of the file named before it
        for path, name in re.findall(r"`([\w/]+\.py)?::(test_\w+)`", row):
            current = path or current
            assert current, f"{name}: no file named before it"
            source = (tests / current).read_text()
            assert re.search(rf"^def {name}\(", source, re.M), f"{current}::{name}"
            named += 1
    assert named >= 30
