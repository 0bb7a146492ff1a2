"""The registry of kept workers (``keep_alive=``): a run never takes back what it kept."""

from __future__ import annotations

from flowpipe import stage
from flowpipe._runtime.core import keep


def test_a_worker_kept_by_a_run_goes_to_the_next_run_only() -> None:
    node_stage = stage(lambda x: x, name="kept", keep_alive=5.0)
    key = ("thread", node_stage)
    this_run, next_run = object(), object()
    kept = keep.KeptCallable(lambda x: x)
    keep.give(key, kept, this_run)
    try:
        # Another worker of the same run (its stage's workers start while the first
        # ones may be done already) builds its own.
        assert keep.take(key, this_run) is None
        assert keep.take(key, next_run) is kept
        assert keep.take(key, next_run) is None  # taken: one caller's alone
    finally:
        keep.shutdown()


def test_a_kept_worker_goes_back_to_the_same_worker_slot() -> None:
    node_stage = stage(lambda x: x, name="slotted", keep_alive=5.0)
    key = ("thread", node_stage)
    last_run, next_run = object(), object()
    first, second = keep.KeptCallable(lambda x: x), keep.KeptCallable(lambda x: x)
    keep.give(key, first, last_run, 0)  # worker 0 ended first, then worker 1
    keep.give(key, second, last_run, 1)
    try:
        assert keep.take(key, next_run, 1) is second  # not the first one kept
        assert keep.take(key, next_run, 1) is first  # none of its slot left: any fits
        assert keep.take(key, next_run, 0) is None
    finally:
        keep.shutdown()
