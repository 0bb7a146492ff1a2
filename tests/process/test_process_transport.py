"""Process backend only: how items travel (shared memory, two slices in flight)."""

from __future__ import annotations

import errno
import logging
import os
import pickle
import subprocess
import sys
import time
from typing import Any

import numpy as np
import pytest

from flowpipe import merge, stage
from flowpipe._transport import recycle, wire

P = "process"


def frames(n: int) -> list[np.ndarray]:
    return [np.full((256, 256, 3), i, dtype=np.uint8) for i in range(n)]


def test_a_large_output_reaches_the_parent_as_a_handle() -> None:
    big = np.arange(100_000, dtype=np.int64)
    packed = wire.pack_outputs([big, 5, "small"], "fptest_")
    try:
        assert type(packed[0]) is wire.Packed
        assert packed[0].nbytes == big.nbytes  # buffers are sized by what they hold
        assert packed[1:] == [5, "small"]
        (back,) = wire.unpack_items([packed[0]])
        assert np.array_equal(back, big)
    finally:
        del packed  # the parent owns the segment: dropping the handle unlinks it


def test_small_outputs_are_left_as_they_are() -> None:
    outputs = [1, (2, "x"), b"short"]
    assert wire.pack_outputs(outputs, "fptest_") is outputs


def test_frames_go_from_worker_to_worker_intact() -> None:
    @stage(workers=2)
    def brighten(f: np.ndarray) -> np.ndarray:
        return f + 1

    @stage
    def check(f: np.ndarray) -> tuple[int, int]:
        return int(f[0, 0, 0]), os.getpid()

    out = (brighten | brighten | check).run(frames(20), backend=P)
    assert [v for v, _ in out] == [i + 2 for i in range(20)]
    assert all(pid != os.getpid() for _, pid in out)


def test_a_handle_shared_by_two_branches_serves_both() -> None:
    double = stage(lambda f: f * 2, name="double")
    mean = stage(lambda f: float(f.mean()), name="mean")
    peak = stage(lambda f: int(f.max()), name="peak")
    pipe = double | (mean, peak)
    out = pipe.run(frames(10), backend=P)
    assert out == [(float(2 * i), 2 * i) for i in range(10)]


def test_handles_in_windows_merges_and_thread_stages() -> None:
    passthrough = stage(lambda f: f, name="pass")
    local = stage(lambda f: int(f[0, 0, 0]), name="local", backend="thread")

    @stage(window=3)
    def spread(window: tuple[Any, ...]) -> int:
        return int(window[-1][0, 0, 0]) - int(window[0][0, 0, 0])

    assert (passthrough | spread).run(frames(8), backend=P) == [2] * 6
    assert (passthrough | local).run(frames(5), backend=P) == [0, 1, 2, 3, 4]
    merged = passthrough | merge(stage(lambda f: int(f.sum() > 0)), local)
    assert sorted(merged.run(frames(4), backend=P)) == sorted([0, 1, 1, 1, 0, 1, 2, 3])


def test_leaving_early_with_handles_in_the_channels_leaves_no_segment() -> None:
    pipe = stage(lambda f: f + 1, workers=2) | stage(lambda f: f - 1)
    with pipe.iter(iter(frames(200)), backend=P) as run:
        first = next(run)
    assert int(first[0, 0, 0]) == 0
    # the autouse fixture checks /dev/shm and the child processes


def test_large_pickles_both_ways_with_two_slices_in_flight_do_not_deadlock() -> None:
    # Slices of many small strings make messages far larger than a socket's
    # buffer in both directions while the next slice is already being sent.
    words = [f"{i:01000d}" for i in range(10_000)]
    pipe = stage(lambda w: w + w, name="twice") | stage(lambda w: w[:1500], name="cut")
    out = pipe.run(words, backend=P)
    assert out == [(w + w)[:1500] for w in words]


def test_a_slow_stage_stopped_early_does_not_run_its_queued_slice() -> None:
    def slow(x: int) -> int:
        time.sleep(0.2)
        return x

    start = time.monotonic()
    with stage(slow, name="slow").iter(range(100), backend=P) as run:
        first = next(run)
    assert first == 0
    # Ended at once: neither the slice in the worker nor the one queued behind it
    # is waited for longer than the stop grace.
    assert time.monotonic() - start < 3.0


def test_an_array_passed_on_names_its_segment_again_instead_of_a_copy(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    frame = np.full((256, 256, 3), 7, np.uint8)
    (handle,) = wire.pack_outputs([frame], "fptest_")  # what the parent holds
    wire.hand_over([handle])  # for one reader only (no fan-out)
    name = handle.segments[0][0]
    monkeypatch.setattr(wire, "IN_WORKER", True)  # now play the next worker
    arrived = handle.unpack()
    arrived[0, 0, 0] = 9  # changed in place, then passed on
    made = [wire.pack_outputs([arrived], "fptest_")[0], wire.bundle([arrived, 1], "fptest_")]
    copied = wire.pack_outputs([arrived + 1], "fptest_")[0]  # a new array is copied
    sent = [(m.segments, m.payload, m.count) for m in [*made, copied]]
    del made, copied, arrived
    monkeypatch.setattr(wire, "IN_WORKER", False)  # back in the parent, the replies arrive
    again, bundled, copy = (wire.Packed(*fields) for fields in sent)
    assert again.segments == [(name, frame.nbytes)]  # named, not copied
    assert bundled.segments[0] == (name, frame.nbytes)  # then the bundle's pickle
    assert copy.segments[0][0] != name
    path = os.path.join(wire.SHM_DIR, name)
    del handle, copy  # the segment stays while any handle names it ...
    assert int(again.unpack()[0, 0, 0]) == 9
    assert bundled.unpack()[1] == 1
    del again
    assert os.path.exists(path)
    del bundled  # ... and goes with the last one
    assert not os.path.exists(path)
    recycle.forget("fptest_")  # the bundle's pickle segment, "lent" by the playing worker


def test_an_array_of_a_fan_out_is_changed_copy_on_write_and_goes_on_as_a_copy(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    frame = np.full((256, 256, 3), 7, np.uint8)
    (handle,) = wire.pack_outputs([frame], "fptest_")  # not handed over: two readers
    name = handle.segments[0][0]
    monkeypatch.setattr(wire, "IN_WORKER", True)  # play one of the two next workers
    arrived, other = handle.unpack(), handle.unpack()
    arrived[0, 0, 0] = 9  # its own page now: the segment and the other reader keep 7
    assert int(other[0, 0, 0]) == 7
    (made,) = wire.pack_outputs([arrived], "fptest_")
    sent = (made.segments, made.payload, made.count)
    del made, arrived, other
    monkeypatch.setattr(wire, "IN_WORKER", False)
    copy = wire.Packed(*sent)
    assert copy.segments[0][0] != name  # a copy: the change is not in the shared segment
    assert int(copy.unpack()[0, 0, 0]) == 9
    assert int(handle.unpack()[0, 0, 0]) == 7
    del copy, handle
    recycle.forget("fptest_")  # the copy's segment, "lent" by the playing worker


def test_frames_changed_in_place_along_a_chain_arrive_intact() -> None:
    def make(i: int) -> np.ndarray:
        return np.full((360, 640, 3), i % 200, np.uint8)

    def mark(f: np.ndarray) -> np.ndarray:
        f[0, 0, 0] += 1
        return f

    local = stage(lambda f: (int(f[0, 0, 0]), int(f[-1, -1, -1])), name="local", backend="thread")
    pipe = stage(make) | stage(mark, name="m1") | stage(mark, name="m2", workers=2) | local
    assert pipe.run(range(60), backend=P) == [((i % 200) + 2, i % 200) for i in range(60)]
    fanned = stage(make) | (stage(mark, name="m1"), stage(lambda f: int(f[1, 1, 1]), name="peek"))
    out = fanned.run(range(20), backend=P)
    assert [int(f[0, 0, 0]) for f, _ in out] == [(i % 200) + 1 for i in range(20)]
    assert [p for _, p in out] == [i % 200 for i in range(20)]


def test_a_full_shared_memory_sends_buffers_in_band(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    # A full /dev/shm (a container's default 64 MB) refuses the write: the buffer
    # must then travel in the pickle, never through a mapping (which would die
    # of SIGBUS), and no segment may be left behind.
    def full(fd: int, data: Any) -> int:
        raise OSError(errno.ENOSPC, "No space left on device")

    big = np.arange(100_000, dtype=np.int64)
    monkeypatch.setattr(wire, "_no_room_told", False)
    monkeypatch.setattr(os, "write", full)
    with caplog.at_level(logging.WARNING, logger="flowpipe"):
        header, payload = wire.encode([big], "fptest_")
        packed = wire.bundle([big, "small"], "fptest_")
    monkeypatch.undo()
    assert list(wire.segment_names(header)) == []
    assert len(payload) > big.nbytes  # the array is in the pickle
    assert np.array_equal(wire.decode(header, payload)[0], big)
    assert packed.segments == []  # the bundle's pickle stayed in band
    assert packed.payload
    back = packed.unpack()
    assert np.array_equal(back[0], big)
    assert back[1] == "small"
    assert [r.getMessage().count("is full") for r in caplog.records] == [1]  # told once


def test_frames_cross_a_small_shared_memory_intact() -> None:
    # A real 16 MB /dev/shm in a private mount namespace (needs the right to make
    # one: root on Linux); frames of 6 MB fill it at once.
    probe = subprocess.run(
        ["unshare", "-m", "sh", "-c", "mount -t tmpfs -o size=16m tmpfs /dev/shm"],
        capture_output=True,
    )
    if probe.returncode != 0:
        pytest.skip("cannot mount a private /dev/shm here")
    script = (
        "import numpy as np\n"
        "from flowpipe import stage\n"
        "frames = [np.full((1080, 1920, 3), i, dtype=np.uint8) for i in range(12)]\n"
        "out = (stage(lambda f: f + 1, workers=2) | stage(lambda f: int(f[5, 5, 0])))"
        ".run(frames, backend='process')\n"
        "assert out == list(range(1, 13)), out\n"
        "import os; print(len(os.listdir('/dev/shm')))\n"
    )
    done = subprocess.run(
        [
            "unshare",
            "-m",
            "sh",
            "-c",
            f'mount -t tmpfs -o size=16m tmpfs /dev/shm && exec "{sys.executable}" -c "$0"',
            script,
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split() == ["0"]  # nothing left in that /dev/shm


def test_a_large_memoryview_keeps_its_format_and_shape() -> None:
    floats = np.arange(100_000, dtype=np.float32)
    pixels = np.arange(300 * 400 * 3, dtype=np.uint8).reshape(300, 400, 3)

    def view(k: int) -> memoryview:
        return floats.data if k == 0 else pixels.data  # memoryviews of the arrays

    flat, image = stage(view).run([0, 1], backend=P)
    assert (flat.format, flat.shape) == ("f", (100_000,))
    assert flat[12_345] == 12_345.0
    assert (image.format, image.shape) == ("B", (300, 400, 3))
    assert image.tobytes() == pixels.tobytes()


def test_a_worker_pickles_by_reference_first_and_falls_back_to_cloudpickle_for_good(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    class Local:  # pickled by value only: a class the receiver cannot import
        def __init__(self, n: int) -> None:
            self.n = n

    monkeypatch.setattr(wire, "IN_WORKER", True)  # play a worker
    monkeypatch.setattr(wire, "_plain", True)
    frame = np.full((256, 256, 3), 3, np.uint8)
    header, payload = wire.encode([frame, 1], "fptest_", reuse=True)
    plain_first = wire._plain  # the standard pickler did it
    first = wire.Packed(pickle.loads(header), payload)
    header, payload = wire.encode([frame, Local(5)], "fptest_", reuse=True)
    assert (plain_first, wire._plain) == (True, False)  # refused: cloudpickle from now on
    second = wire.Packed(pickle.loads(header), payload)
    lent = {name for name in recycle._lent if name.startswith("fptest_")}
    assert lent == {name for name, _ in first.segments + second.segments}  # none astray
    monkeypatch.setattr(wire, "IN_WORKER", False)  # the caller opens them
    (f1, one), (f2, local) = first.unpack(), second.unpack()
    assert (int(f1[0, 0, 0]), one, int(f2[0, 0, 0]), local.n) == (3, 1, 3, 5)
    del first, second, f1, f2
    recycle.forget("fptest_")  # what the playing worker lent or kept


def test_outputs_only_cloudpickle_can_ship_arrive_with_their_frames() -> None:
    def tagged(i: int) -> Any:
        class Tag:  # defined in the worker's call: only cloudpickle ships it
            def __init__(self) -> None:
                self.i = i

        return np.full((128, 256, 3), i, np.uint8), Tag()

    out = (stage(tagged) | stage(lambda t: t)).run(range(20), backend=P)
    assert [(int(f[0, 0, 0]), tag.i) for f, tag in out] == [(i, i) for i in range(20)]
