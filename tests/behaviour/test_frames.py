"""Frames changed in place by the stage that receives them, on every backend.

A stage that marks a few rows of the frame it received and passes the same
array on is the common video stage (draw boxes, stamp a time). It must work
wherever the stage runs, and a frame fanned out to two branches must not be
changed under the other branch's feet where the branches run in processes
(docs/processes.md: each reader after a fan-out maps the frame copy-on-write).
On the thread backend both branches receive the same object, as Python passes it.
"""

from __future__ import annotations

import os

import numpy as np
import pytest
from helpers import Journal

from flowpipe import stage

SHAPE = (256, 256, 3)  # 192 KiB: its buffer travels through shared memory


def make(i: int) -> np.ndarray:
    return np.full(SHAPE, i % 251, np.uint8)


def mark_rows(frame: np.ndarray) -> np.ndarray:
    frame[:2] = 255  # the first rows, in place: the same array goes on
    return frame


def tally(frame: np.ndarray) -> tuple[int, int]:
    return int(frame[0, 0, 0]), int(frame[-1, -1, 2])


def test_a_stage_changes_a_received_frame_in_place_and_passes_it_on(backend: str) -> None:
    if backend == "ray":
        pytest.skip("Ray hands actors read-only arrays (docs/scaling-out.md): copy first")
    pipe = stage(make) | stage(mark_rows) | stage(tally)
    assert pipe.run(range(20), backend=backend) == [(255, i) for i in range(20)]


def stamp(frame: np.ndarray) -> np.ndarray:
    if not frame.flags.writeable:  # Ray: a read-only view of its object store
        frame = frame.copy()
    frame[0, 0] = 7
    return frame


def unchanged(frame: np.ndarray) -> np.ndarray:
    return frame


def corners(pair: tuple[np.ndarray, np.ndarray]) -> tuple[int, int]:
    stamped, other = pair
    return int(stamped[0, 0, 0]), int(other[0, 0, 0])


def test_branches_after_a_fan_out_change_their_own_copies(backend: str) -> None:
    # The join waits for both branches, so the stamp has happened by the time
    # the other branch's frame is read: a shared frame would show it.
    if backend == "thread":
        pytest.skip("threads: both branches get the same object (docs/processes.md)")
    pipe = stage(make) | (stage(stamp), stage(unchanged)) | stage(corners)
    assert pipe.run(range(12), backend=backend) == [(7, i) for i in range(12)]


def test_a_branch_changing_its_frame_leaves_a_parallel_reader_alone(backend: str) -> None:
    if backend == "thread":
        pytest.skip("threads: both branches get the same object (docs/processes.md)")
    pipe = stage(make) | (stage(stamp), stage(tally))
    out = pipe.run(range(12), backend=backend)
    assert [(int(a[0, 0, 0]), b) for a, b in out] == [(7, (i, i)) for i in range(12)]


def test_a_worker_that_dies_after_changing_a_frame_leaks_nothing(
    backend: str, journal: Journal
) -> None:
    if backend == "ray":
        pytest.skip("Ray hands actors read-only arrays (docs/scaling-out.md)")

    def mark_then_die_once(frame: np.ndarray) -> np.ndarray:
        frame[:2] = 255
        if backend == "process" and int(frame[-1, -1, 0]) == 3 and not journal.lines("died"):
            journal.write("died")
            os._exit(1)  # a crash after the edit: the retry gets the frame again
        return frame

    pipe = stage(make) | stage(mark_then_die_once, retries=1) | stage(tally)
    assert pipe.run(range(8), backend=backend) == [(255, i) for i in range(8)]
    assert journal.lines("died") == ([""] if backend == "process" else [])


def stamp_all(frames: list[np.ndarray]) -> list[np.ndarray]:
    return [stamp(f) for f in frames]


def unchanged_all(frames: list[np.ndarray]) -> list[np.ndarray]:
    return frames


def test_batch_branches_after_a_fan_out_change_their_own_copies(backend: str) -> None:
    # Batch stages take single items through the caller (no sealed slices): the
    # same handle waits in both branches' buffers.
    if backend == "thread":
        pytest.skip("threads: both branches get the same object (docs/processes.md)")
    branches = (stage(stamp_all, batch=2), stage(unchanged_all, batch=2))
    pipe = stage(make) | branches | stage(corners)
    assert pipe.run(range(12), backend=backend) == [(7, i) for i in range(12)]
