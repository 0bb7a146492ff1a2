"""The fork server forked from the caller itself, where that is safe and cheap.

A fresh interpreter takes about 65 ms to become a fork server (Python's start,
``site``, and the imports every worker needs), and the first result of a
program's first process run waited for it: 110 ms on a 2-core VM, against
15 ms for a hand-written ``multiprocessing`` chain, which forks the caller
(issue 21). Forking a process is safe when it runs one thread, and the fork
server is forked from a clean copy for that reason. So where the caller runs
no other thread either, its first process run forks the fork server from the
caller (a few milliseconds) instead of booting one.

When (``may_fork``): on Linux, from the main thread, when the kernel counts
one thread in the process (``/proc/self/task``: native threads that a library
started count too, such as OpenBLAS's, CUDA's or gRPC's), and when the
caller's resident memory is at most
``FORK_MAX_RSS``: the server keeps the pages it was forked with for as long as
it lives (``IDLE_EXIT`` after its last worker), even once the caller has
changed or freed them. Otherwise, and when ``FLOWPIPE_FRESH_WORKERS=1`` is
set, the server is a fresh interpreter.

What the copy does before it serves (``fork``):

- the caller's buffered standard output is flushed before the fork, so that
  nothing the caller printed is written again by a worker;
- the caller's objects are frozen (``gc.freeze``): the collector never walks
  them there, so their pages stay shared with the caller;
- flowpipe's own modules are forgotten and imported afresh by the server
  (``forget_package``), so no state of the caller's runs (free shared-memory
  segments, kept workers, the releaser) comes along;
- the caller's ends of the server's socket and lifeline are closed (the server
  must see them close when the caller goes); the caller's other descriptors
  stay open in the server and its workers, as in any fork, since an object of
  the caller's may still use one (a log file's handler): closing them under
  it would let it write to whatever the number means later;
- standard input is ``/dev/null``, it leads a session of its own (Ctrl-C
  reaches only the caller), and signal handlers set by Python code, the signal
  wakeup descriptor and ``faulthandler`` are reset.

A worker forked from such a server starts with the modules the caller had
imported (it need not import them), as they were at the fork; a worker of a
fresh server imports them itself. Either way ``__main__`` is never run again,
and the stage arrives pickled, so a stage sees the same thing in both.
"""

from __future__ import annotations

import gc
import os
import select
import signal
import subprocess
import sys
import threading
from collections.abc import Callable
from typing import NoReturn

from ...._observe.usage import resident_bytes

FORK_MAX_RSS = 512 << 20  # a caller larger than this is not copied (see above)
FRESH = "FLOWPIPE_FRESH_WORKERS"  # set to 1: always boot the fork server afresh
UNKNOWN = 255  # the exit code of a copy that something else reaped


def may_fork() -> bool:
    """Whether the fork server may be forked from this process now (see above)."""
    if os.environ.get(FRESH, "") not in ("", "0") or not hasattr(os, "pidfd_open"):
        return False
    if threading.current_thread() is not threading.main_thread():
        return False
    try:
        threads = len(os.listdir("/proc/self/task"))
    except OSError:
        return False
    rss = resident_bytes()
    return threads == 1 and rss is not None and rss <= FORK_MAX_RSS


def fork(
    body: Callable[[int, int], NoReturn], fds: tuple[int, int], near: tuple[int, int]
) -> Child:
    """A copy of this process that runs ``body(*fds)`` and exits; it never returns
    into the caller's code, whatever ``body`` does. ``near``: the caller's ends of
    the copy's socket and lifeline, closed in the copy."""
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (AttributeError, OSError, ValueError):  # replaced, closed, or None
            pass
    pid = os.fork()
    if pid == 0:
        try:
            _become_copy(near)
            body(*fds)
        except BaseException:  # the copy must not go on in the caller's code
            import traceback

            traceback.print_exc()  # the caller boots its workers instead (``_fork``)
        os._exit(1)
    return Child(pid)


def _become_copy(near: tuple[int, int]) -> None:
    gc.freeze()
    forget_package("flowpipe")
    import faulthandler

    if faulthandler.is_enabled():
        faulthandler.disable()
    for sig in signal.valid_signals():
        try:
            if callable(signal.getsignal(sig)):
                signal.signal(sig, signal.SIG_DFL)
        except (OSError, ValueError):
            pass
    signal.set_wakeup_fd(-1)
    for fd in near:  # the caller's ends: held here, the copy would never see them close
        os.close(fd)
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    os.close(devnull)
    os.setsid()


def forget_package(package: str) -> None:
    """Drop ``package`` and its submodules from ``sys.modules``: the next import of any
    of them runs it afresh."""
    for name in [m for m in sys.modules if m == package or m.startswith(package + ".")]:
        del sys.modules[name]


class Child:
    """A process forked here: the part of ``subprocess.Popen`` that ``ForkServer`` uses
    (``pid``, ``wait``, ``kill``). Its pid stays ours until it is reaped, here."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.returncode: int | None = None
        self._pidfd = os.pidfd_open(pid)  # readable once it has ended
        self._lock = threading.Lock()

    def poll(self) -> int | None:
        return self._reap(0.0)

    def wait(self, timeout: float | None = None) -> int:
        code = self._reap(timeout)
        if code is None:
            raise subprocess.TimeoutExpired("flowpipe fork server", timeout or 0.0)
        return code

    def _reap(self, timeout: float | None) -> int | None:
        if self.returncode is None:
            ended, _, _ = select.select([self._pidfd], [], [], timeout)
            if not ended:
                return None
        with self._lock:
            if self.returncode is None:
                try:
                    _, status = os.waitpid(self.pid, 0)
                    self.returncode = os.waitstatus_to_exitcode(status)
                except ChildProcessError:  # reaped by someone else's waitpid(-1)
                    self.returncode = UNKNOWN
            return self.returncode

    def kill(self) -> None:
        with self._lock:  # not reaped yet: the pid cannot have been reused
            if self.returncode is None:
                try:
                    os.kill(self.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass

    def __del__(self) -> None:
        os.close(self._pidfd)
