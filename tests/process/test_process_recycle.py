"""Process backend only: shared-memory segments are reused, never while something sees them.

A worker writes later outputs into segments it made before
(``flowpipe/_transport/recycle.py``). Each test keeps arrays over segments
somewhere — in a worker, in a thread stage, in the caller's hands — and checks
that no kept array ever changes, while enough frames go by that any premature
reuse would overwrite one.
"""

from __future__ import annotations

import gc
import weakref
from typing import Any

import numpy as np

from flowpipe import stage
from flowpipe._transport import recycle

P = "process"
SHAPE = (128, 256, 3)  # 96 KiB: large enough for shared memory


def make(i: int) -> np.ndarray:
    return np.full(SHAPE, i % 251, np.uint8)


def intact(frame: np.ndarray, i: int) -> bool:
    return bool((frame == i % 251).all())


class KeepLast:
    """A stage that keeps its last frames (a tracker's history), checking them each call."""

    def __init__(self) -> None:
        self.kept: list[tuple[int, np.ndarray]] = []

    def __call__(self, item: tuple[int, np.ndarray]) -> bool:
        self.kept = [*self.kept[-7:], item]
        return all(intact(f, i) for i, f in self.kept)


def numbered(i: int) -> tuple[int, np.ndarray]:
    return i, make(i)


def test_frames_a_worker_keeps_are_never_overwritten() -> None:
    ok = (stage(numbered) | stage(KeepLast)).run(range(300), backend=P)
    assert ok == [True] * 300


def test_frames_passed_on_in_place_and_kept_downstream_stay_intact() -> None:
    def mark(item: tuple[int, np.ndarray]) -> tuple[int, np.ndarray]:
        i, f = item
        f[0, 0, 0] = i % 251  # the same value: a write that must not disturb anything
        return i, f

    ok = (stage(numbered) | stage(mark) | stage(KeepLast, workers=2)).run(range(300), backend=P)
    assert ok == [True] * 300


def test_frames_kept_by_a_thread_stage_and_by_the_caller_stay_intact() -> None:
    kept: list[tuple[int, np.ndarray]] = []

    def keep(item: tuple[int, np.ndarray]) -> tuple[int, np.ndarray]:
        kept.append(item)
        return item

    out = (stage(numbered) | stage(keep, backend="thread")).run(range(200), backend=P)
    assert all(intact(f, i) for i, f in kept)
    assert all(intact(f, i) for i, f in out)
    assert len({id(f) for _, f in out}) == 200


def test_a_worker_reuses_its_segments_once_nothing_sees_them() -> None:
    frame_bytes = 720 * 1280 * 3

    class Make:  # reports how many frame segments its worker process has made so far
        def __init__(self) -> None:
            from flowpipe._transport import recycle

            self.made = 0
            lend = recycle.lend  # called for each new segment a worker sends out

            def counting(name: str, size: int) -> None:
                self.made += size == frame_bytes  # not the bundles' small pickle segments
                lend(name, size)

            recycle.lend = counting

        def __call__(self, i: int) -> tuple[np.ndarray, int]:
            return np.full((720, 1280, 3), i % 251, np.uint8), self.made

    made = (stage(Make) | stage(lambda t: t[1])).run(range(200), backend=P)
    # 200 frames of 2.7 MB went through the few segments in flight at once, not 200
    assert 1 <= max(made) <= 40


def test_the_worker_reports_mappings_it_keeps_and_those_it_drops() -> None:
    class Mapping:  # stands in for an mmap: anything a weak reference can follow
        pass

    kept, dropped = Mapping(), Mapping()
    recycle.track_mapping("seg_kept", kept)
    recycle.track_mapping("seg_gone", dropped)
    ref = weakref.ref(dropped)
    del dropped
    gc.collect()
    assert ref() is None
    assert recycle.report() == (["seg_kept"], [])  # a mapping gone before any report: nothing
    del kept
    gc.collect()
    assert recycle.report() == ([], ["seg_kept"])
    assert recycle.report() == ([], [])


def test_the_parent_gives_a_segment_back_to_its_maker_or_unlinks_it() -> None:
    maker = recycle.register_maker("fptest_4242")
    try:
        assert recycle.release("fptest_4242_7")
        assert not recycle.release("fptest_999_1")  # no such maker: the caller unlinks
        assert recycle.take_released(maker) == ["fptest_4242_7"]
        assert recycle.take_released(maker) == []
        assert recycle.release("fptest_4242_8")
    finally:
        left: Any = recycle.close_maker(maker)
    assert left == ["fptest_4242_8"]  # not given back: the caller unlinks it
    assert not recycle.release("fptest_4242_9")


def test_frames_sent_from_here_and_kept_by_a_worker_or_returned_stay_intact() -> None:
    items = ((i, make(i)) for i in range(300))  # made here, in the caller's process
    assert stage(KeepLast)().run(items, backend=P) == [True] * 300
    back = stage(lambda item: item).run(((i, make(i)) for i in range(200)), backend=P)
    assert all(intact(f, i) for i, f in back)
    assert [i for i, _ in back] == list(range(200))


def test_giving_back_from_a_finaliser_while_the_books_are_held_does_not_deadlock() -> None:
    # The garbage collector may finalise a handle (or an array's mapping) at any
    # allocation, also inside this bookkeeping; it must be able to re-enter it.
    from flowpipe._transport import wire

    with wire._owners_lock, recycle._makers_lock, recycle._pool_lock:
        wire.hold(["fptest_1_1"])
        wire.let_go(["fptest_1_1"])  # nothing sees it now: given back or unlinked
        recycle.give_back(["fptest_1_2"])
    assert "fptest_1_1" not in wire._owners


def segment_of(frame: np.ndarray) -> str:
    """In a worker: the parent's segment this frame is the whole mapping of ("": none)."""
    from flowpipe._transport import wire

    hit = wire._mapped.get(frame.__array_interface__["data"][0])
    return hit[0] if hit is not None and hit[1] == frame.nbytes else ""


def where_marked(frame: np.ndarray) -> tuple[np.ndarray, str]:
    frame[:2] = 255  # the first rows, in place
    return frame, segment_of(frame)


def where_received(item: tuple[np.ndarray, str]) -> tuple[str, str, int]:
    frame, marked_in = item
    return marked_in, segment_of(frame), int(frame[0, 0, 0])


def test_a_frame_changed_in_place_goes_on_in_the_segment_it_came_in() -> None:
    # Its only reader maps the frame shared: the change costs no copy, and the
    # next stage maps the very segment the frame arrived in.
    out = (stage(make) | stage(where_marked) | stage(where_received)).run(range(30), backend=P)
    assert [i for i, (a, b, v) in enumerate(out) if not (a != "" and a == b and v == 255)] == []
