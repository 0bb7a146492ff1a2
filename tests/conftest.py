"""Suite-wide guards: every test must leave no thread, child process or shared-memory
segment behind; backends are a fixture."""

from __future__ import annotations

import gc
import importlib.util
import os
import signal
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers import Journal

from flowpipe._runtime.backends.process import forkserver

BACKENDS = ["thread", "process"]
if importlib.util.find_spec("ray") is not None:  # the extra flowpipe[ray] is installed
    BACKENDS.append("ray")
SHM_DIR = "/dev/shm"
SHM_PREFIX = f"fp{os.getpid()}_"  # flowpipe's segments of this test process's runs


@pytest.fixture
def journal(tmp_path: Path) -> Journal:
    """A file that stages append lines to, wherever they run."""
    return Journal(tmp_path / "journal.txt")


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    """The backend a behaviour test runs on: one run of the suite per backend."""
    return str(request.param)


@pytest.fixture(scope="session")
def ray_cluster() -> Iterator[None]:
    """A local Ray for the whole test session (2 CPUs), started on first use."""
    import ray

    ray.init(
        num_cpus=2,
        resources={"flowpipe_test": 2},  # a custom resource for the resources tests
        include_dashboard=False,
        log_to_driver=False,
    )
    yield
    from flowpipe._runtime.backends import ray as ray_backend

    ray_backend.pool.clear()
    ray.shutdown()


def uses_ray(request: pytest.FixtureRequest) -> bool:
    callspec = getattr(request.node, "callspec", None)
    return (callspec is not None and callspec.params.get("backend") == "ray") or (
        request.node.get_closest_marker("ray") is not None
    )


def child_pids() -> set[int]:
    """Live (not zombie) processes whose parent is this process (Linux ``/proc``).

    The fork server is this process's helper for the whole session, like
    ``multiprocessing``'s: not counted itself, but the workers it forked for
    this process are.
    """
    me = os.getpid()
    server = forkserver.server_pid()
    parents = {me} if server is None else {me, server}
    found: set[int] = set()
    if not os.path.isdir("/proc"):
        return found
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        state, ppid = fields[0], int(fields[1])
        if ppid in parents and state != "Z" and int(entry) != server:
            found.add(int(entry))
    return found


def python_threads() -> list[threading.Thread]:
    """Threads started from Python. Native threads that call into Python (Ray's
    core does) show up as dummy threads: not ours, and they cannot be joined."""
    return [
        t
        for t in threading.enumerate()
        if type(t).__name__ != "_DummyThread" and t.name != "flowpipe-forkserver"
    ]


def signal_handlers() -> dict[str, object]:
    """This process's handlers of Ctrl-C (the Ctrl-C tests need Python's own) and of a
    child's end. (SIGTERM is Ray's to set and reset, with its session.)"""
    return {sig.name: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGCHLD)}


def shm_segments() -> set[str]:
    if not os.path.isdir(SHM_DIR):
        return set()
    return {n for n in os.listdir(SHM_DIR) if n.startswith(SHM_PREFIX)}


@pytest.fixture(scope="session", autouse=True)
def python_handles_ctrl_c() -> Iterator[None]:
    """Python's own Ctrl-C handler for the whole session, however pytest was started.

    A shell without job control starts a background job (``cmd &``, a script's
    ``nohup ... &``) with SIGINT ignored, and Python then leaves it ignored: the
    tests of Ctrl-C would see no interrupt, nor would the programs they start.
    """
    before = signal.getsignal(signal.SIGINT)
    if before == signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, before)


@pytest.fixture(autouse=True)
def nothing_left_behind(request: pytest.FixtureRequest) -> Iterator[None]:
    """Fail any test that leaves a thread, a child process or a segment once it is over.

    Runs are expected to join their workers when they end or are closed; the
    grace period only covers a worker between its last statement and its exit.
    """
    if uses_ray(request):  # Ray's own processes and threads live for the whole session
        request.getfixturevalue("ray_cluster")
    threads_before = set(python_threads())
    children_before = child_pids()
    segments_before = shm_segments()
    handlers_before = signal_handlers()
    yield
    handlers = signal_handlers()
    assert handlers == handlers_before, (
        f"signal handlers changed by the test: {handlers_before} -> {handlers}"
    )
    gc.collect()  # a run dropped without close() is closed by its finaliser
    keep = sys.modules.get("flowpipe._runtime.core.keep")
    if keep is not None:  # workers kept for later runs (keep_alive=) end with the test
        keep.shutdown()
    deadline = time.monotonic() + 3.0
    for thread in set(python_threads()) - threads_before:
        thread.join(max(0.0, deadline - time.monotonic()))
    left = [t.name for t in set(python_threads()) - threads_before if t.is_alive()]
    while child_pids() - children_before and time.monotonic() < deadline:
        time.sleep(0.02)  # polling the OS: there is nothing to wait on
    children = child_pids() - children_before
    segments = shm_segments() - segments_before
    assert not left, f"threads left running after the test: {left}"
    assert not children, f"child processes left running after the test: {sorted(children)}"
    assert not segments, f"shared-memory segments left after the test: {sorted(segments)}"
