"""How many items a worker loop sends a worker process at once (``core.shaping.SliceSizer``).

A slice to a worker process holds up to ``PROCESS_SLICE_SECONDS`` of work, so
that the parent's cost per slice is small next to it, but only about
``PROCESS_SLICE_BYTES`` of large buffers in or out, so that frames go one or a
few at a time and the next stage starts on the first while later ones are made.
"""

from __future__ import annotations

import threading
from typing import Any, ClassVar

import numpy as np
import pytest

from flowpipe import stage
from flowpipe._runtime.backends.process.backend import PROCESS_SLICE_BYTES, PROCESS_SLICE_SECONDS
from flowpipe._runtime.core import loop as engine
from flowpipe._runtime.core.shaping import SliceSizer, slice_size
from flowpipe._transport.buffer import Channel

MB = 1 << 20


def grow(sizer: SliceSizer, seconds_per_item: float, bytes_per_item: int, rounds: int = 8) -> int:
    for _ in range(rounds):
        n = sizer.size
        sizer.update(n, n * seconds_per_item, n * bytes_per_item)
    return sizer.size


def test_the_sizer_aims_at_the_target_time_per_slice() -> None:
    sizer = SliceSizer(1024, target=0.05)
    assert grow(sizer, 0.001, 0) == 50  # 1 ms items: 50 to a slice
    assert grow(SliceSizer(1024, target=0.05), 1e-7, 0) == 1024  # cheap items: the cap


def test_the_sizer_grows_by_at_most_four_times_a_slice() -> None:
    sizer = SliceSizer(1024, target=0.05)
    sizes = []
    for _ in range(4):
        n = sizer.size
        sizer.update(n, n * 1e-6)
        sizes.append(sizer.size)
    assert sizes == [4, 16, 64, 256]


@pytest.mark.parametrize(
    ("item_bytes", "expected"), [(6 * MB, 1), (MB, 8), (64 << 10, 50), (0, 50)]
)
def test_a_byte_budget_bounds_slices_of_large_items(item_bytes: int, expected: int) -> None:
    sizer = SliceSizer(1024, target=0.05, byte_budget=8 * MB)
    assert grow(sizer, 0.001, item_bytes) == expected


def test_without_a_byte_budget_bytes_do_not_count() -> None:
    assert grow(SliceSizer(1024, target=0.05), 0.001, 6 * MB) == 50


def test_once_the_stream_ends_slices_halve_down_to_one_item() -> None:
    sizer = SliceSizer(1024, target=0.05)
    grow(sizer, 0.001, 0)  # 50 to a slice
    inp = Channel(None)
    inp.add_producer()
    inp.put_many(list(range(100)))
    assert slice_size(sizer, inp) == 50  # the stream goes on: the sizer decides
    inp.close()
    sizes = []
    while (got := inp.take(slice_size(sizer, inp))) is not None:
        sizes.append(len(got[2]))
    assert sizes == [50, 25, 13, 6, 3, 2, 1]  # the next stage is never left waiting long


class Recorded(SliceSizer):
    """A sizer that remembers every size it chose, per stage worker loop."""

    log: ClassVar[list[tuple[float, int | None, int, int]]] = []

    def update(self, n: int, seconds: float, nbytes: int = 0) -> None:
        super().update(n, seconds, nbytes)
        Recorded.log.append((self.target, self.byte_budget, nbytes, self.size))
        Recorded.taken.append(n)

    taken: ClassVar[list[int]] = []


def make_frame(x: int) -> Any:
    return np.full((1080, 1920, 3), x % 251, dtype=np.uint8)


def corner(frame: Any) -> int:
    return int(frame[0, 0, 0])


def test_process_stages_slice_frames_one_at_a_time(monkeypatch: pytest.MonkeyPatch) -> None:
    """A process stage that makes 6 MB frames, and one that reads them, are sent
    slices of one item: the budget sees the frames on the way out and in."""
    monkeypatch.setattr(engine, "SliceSizer", Recorded)
    Recorded.log = []
    out = (stage(make_frame) | stage(corner)).run(range(40), backend="process")
    assert out == [x % 251 for x in range(40)]
    process_updates = [u for u in Recorded.log if u[1] == PROCESS_SLICE_BYTES]
    assert process_updates, "no process worker loop sized its slices"
    assert all(target == PROCESS_SLICE_SECONDS for target, *_ in process_updates)
    assert all(nbytes >= 6_220_800 * 0.9 for *_, nbytes, _ in process_updates)
    assert all(size == 1 for *_, size in process_updates)


def test_thread_stages_have_no_byte_budget(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(engine, "SliceSizer", Recorded)
    Recorded.log = []
    out = (stage(make_frame) | stage(corner)).run(range(10))
    assert out == [x % 251 for x in range(10)]
    assert Recorded.log
    assert all(budget is None for _, budget, *_ in Recorded.log)


def test_the_last_slices_of_a_process_stage_shrink_to_one_item(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A cheap stage soon takes many items at once; once its input has
    ended, the rest goes out in halving slices, the very last of them one item.

    Whether the input has ended when a slice is taken is a race between the
    source's feeder and the worker loop, so the loop is held until the source
    has closed its channel (1_000 items fit in its buffer): every slice is then
    taken from an ended stream and is never larger than everything after it,
    plus one."""
    closed: set[int] = set()
    changed = threading.Condition()
    real_close, real_slice_size = Channel.close, slice_size

    def close(self: Channel) -> None:
        real_close(self)
        with changed:
            closed.add(id(self))
            changed.notify_all()

    def slice_size_once_ended(sizer: SliceSizer, inp: Channel) -> int:
        with changed:
            assert changed.wait_for(lambda: id(inp) in closed, timeout=30)
        assert inp.producers <= 0
        return real_slice_size(sizer, inp)

    monkeypatch.setattr(Channel, "close", close)
    monkeypatch.setattr(engine, "slice_size", slice_size_once_ended)
    monkeypatch.setattr(engine, "SliceSizer", Recorded)
    Recorded.taken = []
    out = stage(lambda x: x + 1).run(range(1000), backend="process")
    assert out == [x + 1 for x in range(1000)]
    taken = Recorded.taken
    assert sum(taken) == 1000
    assert max(taken) >= 64, taken  # the sizer's own size, timed, varies above this
    assert taken[-1] == 1, taken
    for k, n in enumerate(taken):
        assert n <= sum(taken[k + 1 :]) + 1, taken
