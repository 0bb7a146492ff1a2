"""A fork server: worker processes forked from a clean process instead of booted one by one.

Starting a worker as a fresh interpreter costs about 0.1 s of imports, and a
pipeline of four process stages starts four. So the first process run of a
program starts one *fork server* (a fresh interpreter, like a worker, or, where
the caller runs one thread, a copy of it: ``callerfork``), which imports what a worker needs
(``WARM_IMPORTS``), freezes it (``gc.freeze``: a worker's collector then never
writes to those objects, so their pages stay shared instead of being copied
into every worker) and then does nothing but fork workers on request,
single-threaded, so forking it is safe. A worker forked from it starts in a
few milliseconds. Python's own
``multiprocessing`` uses the same design (its default start method on Linux
since Python 3.14).

What a request carries, so that a worker starts as if the caller had started
it: the caller's working directory and environment (``CUDA_VISIBLE_DEVICES``
set just before a run counts), and the worker's two descriptors (its socket
and its lifeline), passed with ``SCM_RIGHTS``. The worker then gets the
caller's ``sys.path`` and the stage exactly as a booted one does
(``child.serve``). The server answers with the worker's pid and a pidfd for
it, so that the caller can signal exactly that process (never a reused pid),
and later with its exit status, once it has reaped it.

The server lives in a session of its own (Ctrl-C reaches only the caller),
exits when the caller dies or closes the connection (seen on the lifeline, the
connection or a reply that cannot be sent, whichever comes first; it first
waits for the workers to exit and sweeps the shared memory of the caller's
runs, which nobody else would), and after ``IDLE_EXIT`` seconds without
workers (the caller reaps it at once: no zombie is left). If it cannot be
started or dies, workers are booted as fresh interpreters instead.
"""

from __future__ import annotations

import gc
import importlib
import os
import pickle
import queue
import select
import signal
import socket
import struct
import subprocess
import threading
import time
from typing import NoReturn

from . import boot, callerfork

IDLE_EXIT = 60.0  # seconds without a worker after which the server exits
START_WAIT = 10.0  # seconds to wait for a fork to be reported
# What every worker imports, imported once in the server: a forked worker has it
# already (a stage arrives inside a plan node: the graph's modules too).
WARM_IMPORTS = (
    "_runtime.backends.process.child",
    "_runtime.remote.server",
    "_runtime.remote.messages",
    "_transport.wire",
    "_dsl.stage",
    "_plan.plan",
)
ORPHAN_WAIT = 3.0  # seconds the workers of a caller that died get to exit before the sweep
_REPLY = struct.Struct("!Bqq")  # kind, pid, exit code
_STARTED, _EXITED = 1, 2
UNKNOWN = 255  # the exit code of a worker whose server ended before reporting it


# -- the server ---------------------------------------------------------------------------


def serve(ctl_fd: int, lifeline_fd: int, idle_exit: float = IDLE_EXIT) -> None:
    """The fork server's body (``python -c``): warm up, then fork workers on request;
    exit after ``idle_exit`` seconds without workers (the caller's ``IDLE_EXIT``)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    for module in WARM_IMPORTS:
        importlib.import_module(f"flowpipe.{module}")
    # Nothing made so far is ever collected: out of the collector's sight, its
    # objects' pages stay shared with every worker instead of being copied into
    # each one the first time the worker's collector walks them.
    gc.collect()
    gc.freeze()

    ctl = socket.socket(fileno=ctl_fd)
    ctl_fd = ctl.fileno()
    owner = os.getppid()  # the caller: started us with subprocess
    workers: dict[int, int] = {}  # pidfd -> pid: readable once the worker has ended
    idle_since = time.monotonic()
    while True:
        timeout = None if workers else max(0.0, idle_since + idle_exit - time.monotonic())
        ready, _, _ = select.select([ctl_fd, lifeline_fd, *workers], [], [], timeout)
        for pidfd in [fd for fd in ready if fd in workers]:  # reap, and say so at once
            pid = workers.pop(pidfd)
            os.close(pidfd)
            _, status = os.waitpid(pid, 0)
            if not _reply(ctl, _EXITED, pid, os.waitstatus_to_exitcode(status)):
                _owner_gone(workers, owner)  # its lifeline may not have ended yet
            if not workers:
                idle_since = time.monotonic()
        if lifeline_fd in ready:
            _owner_gone(workers, owner)
        if ctl_fd in ready:
            message, fds, _, _ = socket.recv_fds(ctl, 1 << 20, 2)
            if not message:  # the caller closed the connection, or died (a dying
                _owner_gone(workers, owner)  # process closes its files, then is reparented)
            cwd, env = pickle.loads(message)
            pid = os.fork()
            if pid == 0:
                _become_worker(ctl, lifeline_fd, list(workers), fds, cwd, env)
            for fd in fds:
                os.close(fd)
            pidfd = os.pidfd_open(pid)
            workers[pidfd] = pid
            socket.send_fds(ctl, [_REPLY.pack(_STARTED, pid, 0)], [pidfd])
        elif not workers and not ready and time.monotonic() - idle_since >= idle_exit:
            os._exit(0)


def _serve_as_fork(ctl_fd: int, lifeline_fd: int) -> NoReturn:
    """The server's body in a copy of the caller (``callerfork``): with flowpipe's
    modules imported afresh, so that no run state of the caller's comes along."""
    module = importlib.import_module(__name__)  # afresh: ``callerfork`` forgot it
    module.serve(ctl_fd, lifeline_fd, IDLE_EXIT)
    os._exit(0)


def _owner_gone(workers: dict[int, int], owner: int) -> NoReturn:
    """The caller died (killed, or it crashed) or closed the server: its workers see
    their lifelines end and exit; once they have, remove what the caller's runs left
    in shared memory, and exit. Whichever sign of it comes first (the lifeline, the
    connection, a reply that cannot be sent) leads here: none may skip the sweep."""
    from ...._transport import wire

    deadline = time.monotonic() + ORPHAN_WAIT
    while workers and time.monotonic() < deadline:
        ready, _, _ = select.select(list(workers), [], [], max(0.0, deadline - time.monotonic()))
        for pidfd in ready:
            pid = workers.pop(pidfd)
            os.close(pidfd)
            os.waitpid(pid, 0)
    wire.sweep(wire.owner_prefix(owner))
    os._exit(0)


def _reply(ctl: socket.socket, kind: int, pid: int, code: int) -> bool:
    """Tell the caller; False when it is gone (closed the connection, or died)."""
    try:
        ctl.send(_REPLY.pack(kind, pid, code))
    except OSError:
        return False
    return True


def _become_worker(
    ctl: socket.socket,
    lifeline_fd: int,
    pidfds: list[int],
    fds: list[int],
    cwd: str,
    env: dict[str, str],
) -> None:
    try:
        # The server's own descriptors go: its connection, its lifeline, its pidfds
        # of other workers. Any other is the caller's, open in a server that is a copy
        # of it (``callerfork``), and stays open, as in any fork: an object of the
        # caller's may still use it (a log file's handler).
        ctl.close()
        os.close(lifeline_fd)
        for pidfd in pidfds:
            os.close(pidfd)
        os.setsid()  # a session of its own, like a booted worker
        try:
            os.chdir(cwd)
        except OSError:
            pass
        os.environ.clear()
        os.environ.update(env)
        from .child import main

        main(fds[0], fds[1])  # never returns
    finally:
        os._exit(1)


# -- the caller's side ----------------------------------------------------------------------


class ForkedProcess:
    """A worker forked by the server, with the part of ``subprocess.Popen`` a
    ``WorkerProcess`` uses: ``pid``, ``poll``, ``wait``, ``kill``."""

    def __init__(self, server: ForkServer, pid: int, pidfd: int) -> None:
        self.server = server
        self.pid = pid
        self.pidfd = pidfd

    def poll(self) -> int | None:
        return self._code(0.0)

    def wait(self, timeout: float | None = None) -> int:
        code = self._code(timeout)
        if code is None:
            raise subprocess.TimeoutExpired("flowpipe worker", timeout or 0.0)
        return code

    def _code(self, timeout: float | None) -> int | None:
        code = self.server.exit_code(self.pid, timeout)
        if code is UNKNOWN and self.pidfd >= 0:  # the server is gone: ask the kernel
            ended, _, _ = select.select([self.pidfd], [], [], timeout)
            return UNKNOWN if ended else None
        return code

    def kill(self) -> None:
        try:
            signal.pidfd_send_signal(self.pidfd, signal.SIGKILL)
        except (ProcessLookupError, OSError):
            pass

    def release(self) -> None:
        if self.pidfd >= 0:
            os.close(self.pidfd)
            self.pidfd = -1
        self.server.forget(self.pid)


class ForkServer:
    """The caller's connection to its fork server (one per process, started on first use)."""

    def __init__(self) -> None:
        copy = callerfork.may_fork()

        def start(
            ctl_fd: int, lifeline_fd: int, near: tuple[int, int]
        ) -> subprocess.Popen[bytes] | callerfork.Child:
            if copy:
                return callerfork.fork(_serve_as_fork, (ctl_fd, lifeline_fd), near)
            return boot.interpreter(
                f"from {__name__} import serve; serve({ctl_fd}, {lifeline_fd}, {IDLE_EXIT!r})",
                (ctl_fd, lifeline_fd),
            )

        ours, self._lifeline, self.proc = boot.with_socket_and_lifeline(
            start, socket.SOCK_SEQPACKET
        )
        self.ctl = ours
        self.owner = os.getpid()  # a process forked from the caller must start its own
        self.alive = True
        self._request = threading.Lock()  # one fork at a time: replies come in order
        self._started: queue.SimpleQueue[tuple[int, int] | None] = queue.SimpleQueue()
        self._exits: dict[int, int] = {}
        self._cond = threading.Condition()
        self._reader = threading.Thread(target=self._read, name="flowpipe-forkserver", daemon=True)
        self._reader.start()

    def _read(self) -> None:
        try:
            while True:
                message, fds, _, _ = socket.recv_fds(self.ctl, _REPLY.size, 1)
                if not message:
                    break
                kind, pid, code = _REPLY.unpack(message)
                if kind == _STARTED:
                    self._started.put((pid, fds[0]))
                else:
                    with self._cond:
                        self._exits[pid] = code
                        self._cond.notify_all()
        except OSError:
            pass
        with self._cond:
            self.alive = False
            self._cond.notify_all()
        self._started.put(None)
        # The server has ended (its idle exit, or it died): reap it now, or it stays
        # a zombie child of this process until the next process run replaces it.
        self.proc.wait()

    def fork(
        self, conn_fd: int, lifeline_fd: int, env: dict[str, str] | None = None
    ) -> ForkedProcess:
        """A worker running ``child.main`` on these descriptors, with the caller's
        environment and ``env`` over it; ``OSError`` if the server cannot make one."""
        request = pickle.dumps((os.getcwd(), {**os.environ, **(env or {})}))
        with self._request:
            if not self.alive:
                raise OSError("the fork server has ended")
            socket.send_fds(self.ctl, [request], [conn_fd, lifeline_fd])
            try:
                started = self._started.get(timeout=START_WAIT)
            except queue.Empty:
                started = None
            if started is None:
                raise OSError("the fork server did not start a worker")
        pid, pidfd = started
        return ForkedProcess(self, pid, pidfd)

    def exit_code(self, pid: int, timeout: float | None) -> int | None:
        """The worker's exit code once the server has reaped it (``None``: not yet)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            while pid not in self._exits:
                if not self.alive:
                    return UNKNOWN  # the server is gone, and with it the status
                wait = None if deadline is None else deadline - time.monotonic()
                if wait is not None and wait <= 0:
                    return None
                self._cond.wait(wait)
            return self._exits[pid]

    def forget(self, pid: int) -> None:
        with self._cond:
            self._exits.pop(pid, None)

    def close(self, wait: bool = True) -> None:
        """End the server: it waits for the workers it forked to exit (``ORPHAN_WAIT``
        at most), sweeps this process's segments from ``/dev/shm`` and exits.
        ``wait=False`` (at exit) leaves it to do that while this process ends: its
        workers exit only then, once their lifelines close."""
        self.alive = False
        try:
            self.ctl.close()
        except OSError:
            pass
        os.close(self._lifeline)
        if not wait:
            return
        try:
            self.proc.wait(1.0)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


_server: ForkServer | None = None
_server_lock = threading.Lock()


def server() -> ForkServer | None:
    """This process's fork server, started on first use; ``None`` where there is none
    (not Linux, or it could not start), and workers are booted instead."""
    global _server
    if not hasattr(os, "pidfd_open") or not hasattr(socket, "send_fds"):
        return None
    with _server_lock:
        if _server is not None and _server.owner != os.getpid():
            _server = None  # inherited through a fork of the caller: its parent's, not ours
        if _server is not None and not _server.alive:
            _server.close()
            _server = None
        if _server is None:
            try:
                _server = ForkServer()
            except OSError:
                return None
            import atexit

            # Not waited for at exit: a run still open (never closed, its Run kept
            # alive by a traceback) has workers that exit only once we are gone,
            # and the server sweeps what they leave after that.
            atexit.register(shutdown, wait=False)
        return _server


def shutdown(wait: bool = True) -> None:
    """End the fork server (at exit; also for tests)."""
    global _server
    with _server_lock:
        if _server is not None:
            _server.close(wait)
            _server = None


def server_pid() -> int | None:
    """The fork server's pid, if one runs (its workers are its children, not ours)."""
    s = _server
    return s.proc.pid if s is not None else None
