"""Faults: the caller's process is SIGKILLed while frames travel between two process stages.

Its workers must exit on their own, its fork server must go too, and nothing of
its runs may stay in ``/dev/shm``. The kill is a race by nature, so the stress
test repeats it: ``FLOWPIPE_STRESS_RUNS`` times (a few by default, 50 by hand).
Only segments named after processes these tests started are counted: other
flowpipe programs may use ``/dev/shm`` at the same time.
"""

from __future__ import annotations

import os
import select
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from helpers import alive

from flowpipe._runtime.backends.process import forkserver
from flowpipe._transport import wire

REPO = Path(__file__).resolve().parents[2]
STRESS_RUNS = int(os.environ.get("FLOWPIPE_STRESS_RUNS", "3"))

# Frames of 196 KB (shared memory) made by one process stage and marked by the
# next, endlessly; every worker notes its pid, the parent its own and its fork server's.
FRAMES_FOREVER = """
import itertools, os, time
import numpy as np
import flowpipe
from flowpipe._runtime.backends.process import forkserver

def note_pid():
    with open("pids.txt", "a") as f:
        f.write(f"{os.getpid()}\\n")

class Make:
    def __init__(self):
        note_pid()
    def __call__(self, i):
        return np.full((256, 256, 3), i % 251, np.uint8)

class Mark:
    def __init__(self):
        note_pid()
    def __call__(self, frame):
        time.sleep(0.002)
        frame[0, 0] = 1
        return frame

pipe = flowpipe.stage(Make, workers=2)() | flowpipe.stage(Mark, workers=2)()
for i, _ in enumerate(pipe.iter(itertools.count(), backend="process")):
    if i == 20:
        print("parent", os.getpid(), "server", forkserver.server_pid(), flush=True)
"""


def wait_gone(pids: list[int], seconds: float) -> list[int]:
    deadline = time.monotonic() + seconds
    while any(alive(p) for p in pids) and time.monotonic() < deadline:
        time.sleep(0.02)  # polling the OS: these processes are not ours to wait on
    return [p for p in pids if alive(p)]


def segments_of(pids: list[int]) -> list[str]:
    """Segments in /dev/shm named after one of ``pids`` (``fp<owner pid>_...``)."""
    prefixes = tuple(wire.owner_prefix(p) for p in pids)
    return sorted(n for n in os.listdir(wire.SHM_DIR) if n.startswith(prefixes))


def kill_mid_run(tmp_path: Path) -> tuple[list[str], list[int]]:
    """Run the frame pipeline in a script, SIGKILL it mid-run; return the segments
    of its processes and the processes still alive 8 s later (both cleaned up)."""
    script = tmp_path / "frames.py"
    script.write_text(textwrap.dedent(FRAMES_FOREVER))
    proc = subprocess.Popen(
        [sys.executable, str(script)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        cwd=tmp_path,
    )
    pids: list[int] = []
    try:
        assert proc.stdout is not None
        words = proc.stdout.readline().split()  # the pipeline is running
        assert words[:1] == ["parent"], proc.communicate()[1]
        pids = [int(words[1])] + ([int(words[3])] if words[3] != "None" else [])
        assert segments_of(pids[:1]), "no frame in flight"
    finally:
        proc.kill()
        proc.communicate(timeout=30)
    pids += [int(w) for w in (tmp_path / "pids.txt").read_text().split()]
    left_running = wait_gone(pids, 8.0)
    left = segments_of(pids)
    for pid in left_running:  # never leave an orphan behind, even when failing
        os.kill(pid, signal.SIGKILL)
    for name in left:
        wire.unlink(name)
    return left, left_running


@pytest.mark.stress
@pytest.mark.parametrize("attempt", range(STRESS_RUNS))
def test_a_parent_killed_with_frames_in_flight_leaves_no_segment_and_no_process(
    tmp_path: Path, attempt: int
) -> None:
    left, left_running = kill_mid_run(tmp_path)
    assert left_running == []
    assert left == []


@pytest.mark.parametrize("first", ["a worker's exit", "the connection's end"])
def test_the_fork_server_sweeps_whichever_sign_of_the_end_comes_first(first: str) -> None:
    """The traced cause of the leaks above, made deterministic. A dying caller's files
    close (its connection, its lifelines) before it stops being the server's
    parent, and its workers exit meanwhile: the server may see a worker's exit
    (and fail to report it) or the connection's end before its lifeline ends.
    Either way it must sweep the caller's segments."""
    server = forkserver.ForkServer()  # a server of this test's own
    ours, theirs = socket.socketpair()
    lifeline_r, lifeline_w = os.pipe()
    worker = server.fork(theirs.fileno(), lifeline_r)
    theirs.close()
    name = f"{wire.owner_prefix(os.getpid())}test_sweep"
    try:
        os.close(os.open(os.path.join(wire.SHM_DIR, name), os.O_CREAT | os.O_RDWR, 0o600))
        os.kill(server.proc.pid, signal.SIGSTOP)  # both events wait for one wake-up
        try:
            ours.close()  # the worker reads end-of-file and exits
            if first == "a worker's exit":
                ended, _, _ = select.select([worker.pidfd], [], [], 10.0)
                assert ended
            server.ctl.shutdown(socket.SHUT_RDWR)  # the caller's end is gone
        finally:
            os.kill(server.proc.pid, signal.SIGCONT)
        server.proc.wait(10.0)
        assert not os.path.exists(os.path.join(wire.SHM_DIR, name))
    finally:
        os.close(lifeline_r)
        os.close(lifeline_w)
        worker.release()
        server.close()
        wire.unlink(name)
