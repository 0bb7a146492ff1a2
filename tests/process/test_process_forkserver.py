"""Process backend only: workers forked from the fork server start as if booted by the caller."""

from __future__ import annotations

import os
import signal
from pathlib import Path
from typing import Any

import pytest

from flowpipe import WorkerCrashed, stage
from flowpipe._runtime.backends.process import backend as process
from flowpipe._runtime.backends.process import forkserver

P = "process"


def where(_: Any) -> tuple[str, str | None, int, int]:
    return os.getcwd(), os.environ.get("FLOWPIPE_TEST_MARK"), os.getpid(), os.getppid()


def test_a_forked_worker_sees_the_callers_directory_and_environment_of_now(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    stage(where).run([0], backend=P)  # the server runs from here on
    server = forkserver.server_pid()
    assert server is not None
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("FLOWPIPE_TEST_MARK", "set after the server started")
    ((cwd, mark, pid, ppid),) = stage(where).run([0], backend=P)
    assert cwd == str(tmp_path)
    assert mark == "set after the server started"
    assert pid != os.getpid()
    assert ppid == server  # forked by the server, not booted by us
    assert forkserver.server_pid() == server  # one server serves every run


def test_a_forked_worker_killed_by_a_signal_is_described_as_such() -> None:
    def die(x: int) -> int:
        os.kill(os.getpid(), signal.SIGKILL)
        return x

    with pytest.raises(WorkerCrashed) as info:
        stage(die, name="doomed").run([1], backend=P)
    assert "SIGKILL" in str(info.value)


def test_without_a_fork_server_workers_are_booted(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(forkserver, "server", lambda: None)
    ((_, _, pid, ppid),) = stage(where).run([0], backend=P)
    assert ppid == os.getpid()  # started by us, as a fresh interpreter
    assert pid != os.getpid()


def test_a_server_that_has_ended_is_replaced() -> None:
    stage(where).run([0], backend=P)
    old = forkserver.server_pid()
    forkserver.shutdown()
    assert forkserver.server_pid() is None
    ((_, _, _, ppid),) = stage(where).run([0], backend=P)
    assert ppid == forkserver.server_pid() != old


def test_the_fork_is_used_by_the_process_backend() -> None:
    assert process._fork is not None  # the backend asks the server first
    assert stage(lambda x: x * 2).run(range(5), backend=P) == [0, 2, 4, 6, 8]


def test_a_server_that_exits_when_idle_leaves_no_zombie(monkeypatch: pytest.MonkeyPatch) -> None:
    forkserver.shutdown()
    monkeypatch.setattr(forkserver, "IDLE_EXIT", 0.2)  # read when a server starts
    stage(where).run([0], backend=P)
    server = forkserver._server
    assert server is not None
    server._reader.join(10.0)  # the connection ends when the server exits
    assert not server._reader.is_alive()
    assert not server.alive
    assert not os.path.exists(f"/proc/{server.proc.pid}")  # reaped, not <defunct>
    forkserver.shutdown()
    assert stage(where).run([1], backend=P)[0][3] == forkserver.server_pid()  # a fresh one


def frozen_at_fork(_: Any) -> tuple[int, bool]:
    import gc
    import sys

    # The module a stage needs to arrive: imported by the server, and out of the
    # collector's sight (a frozen object is not among those it tracks).
    graph = vars(sys.modules["flowpipe._dsl.stage"])
    return gc.get_freeze_count(), all(o is not graph for o in gc.get_objects())


def test_a_forked_worker_shares_the_servers_imports_unwalked_by_its_collector() -> None:
    # Its collector never touches the server's objects, so their pages stay
    # shared with the server instead of being copied into every worker.
    stage(where).run([0], backend=P)
    ((frozen, graph_frozen),) = stage(frozen_at_fork).run([0], backend=P)
    assert frozen > 1000
    assert graph_frozen
