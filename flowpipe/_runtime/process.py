"""The process backend: each stage worker's calls run in a worker process of its own.

::

    this process                                              worker processes
    ────────────                                              ────────────────
    Channel ──take slice──► [worker thread: StageRun loop] ══socket══► child.serve: SliceCaller.call
                               reorder, emit, counters      ◄══════════  outputs (large buffers via /dev/shm)

Taking slices, ordering, windows, joins and backpressure run in this process,
in the same engine as the thread backend; only the stage's calls (and a class
stage's instance) live in the worker process. A worker thread here drives one
worker process: it sends a slice, waits for the outputs, and hands them on.

Workers are fresh interpreters started with ``subprocess`` (fork + exec, the
same safety as the ``spawn`` start method): nothing is ever forked from a
process that runs threads, CUDA initialises cleanly in a worker, and the
parent's ``__main__`` is never re-run. Stages travel with cloudpickle.

Crash safety: a worker process that dies makes its socket reach end-of-file
at once, which raises ``WorkerCrashed`` naming the stage (or, with
``retries``, re-runs the lost slice item by item on a fresh worker process).
Stopping a run tells idle worker processes to close (a class stage's
``close()`` runs) and exit; one still inside a call gets ``STOP_GRACE`` seconds
to finish it, then is killed. Each worker watches a lifeline pipe to this process and
exits on its own if this process dies.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from multiprocessing.connection import Connection
from typing import Any

import cloudpickle

from .._errors import StageError, WorkerCrashed
from .._observe.counters import WorkerCounters
from .._transport import wire
from .._transport.buffer import Aborted
from .base import Backend, Worker
from .engine import Caller, RunState, StageRun
from .policy import ErrorPolicy
from .thread import start_thread

logger = logging.getLogger("flowpipe")

PROCESS_SLICE_SECONDS = 0.005  # a round trip costs ~50 µs: give each slice more work
EXIT_WAIT = 1.0  # seconds a closing worker process gets before it is killed
STOP_GRACE = 0.5  # seconds a busy worker process gets to finish its call once a run stops
POLL = 0.1  # how often a waiting worker thread looks at the stop switch

_PACKAGE_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
_BOOT = (
    "import sys; sys.path.insert(0, {root!r}); "
    "from flowpipe._runtime.child import main; main({conn}, {lifeline})"
)


class WorkerDied(Exception):
    """The worker process went away mid-conversation."""


class RemoteFailure(Exception):
    """An exception from a worker process that could not itself be sent back."""


def _describe_exit(code: int | None) -> str:
    if code is None:
        return "still running"
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exit code {code}"


def _error_from_reply(reply: tuple[Any, ...], offset: int) -> StageError:
    """Rebuild a worker's error: the original exception as ``__cause__``, its traceback text."""
    _, label, index, item, exc_bytes, summary, text, what = reply
    cause: BaseException
    try:
        cause = cloudpickle.loads(exc_bytes) if exc_bytes is not None else RemoteFailure(summary)
    except Exception:  # the exception class cannot be rebuilt here: keep its text
        cause = RemoteFailure(summary)
    if what == "input":
        failure = RemoteFailure(f"an input could not be rebuilt in the worker process: {summary}")
        index, item = offset, None
    elif what == "output":
        failure = RemoteFailure(f"an output cannot be sent back from the worker process: {summary}")
    else:
        failure = cause
    if failure is not cause:
        failure.__cause__ = cause
    err = StageError(
        label, None if what == "start" else index, item, cause=failure, remote_traceback=text
    )
    err.__cause__ = failure
    return err


class WorkerProcess:
    """One worker process of one stage, and the conversation with it."""

    def __init__(self, label: str, state: RunState) -> None:
        self.label = label
        self.state = state
        self.prefix = state.prefix
        self.closed = False
        ours, theirs = socket.socketpair()
        lifeline_read, self._lifeline = os.pipe()
        try:
            self.proc = subprocess.Popen(
                [
                    sys.executable,
                    "-c",
                    _BOOT.format(root=_PACKAGE_ROOT, conn=theirs.fileno(), lifeline=lifeline_read),
                ],
                pass_fds=(theirs.fileno(), lifeline_read),
                stdin=subprocess.DEVNULL,  # output goes where the parent's goes; input is not theirs
                start_new_session=True,  # Ctrl-C in a terminal goes to the parent only
            )
        except BaseException:
            ours.close()
            os.close(self._lifeline)
            raise
        finally:
            theirs.close()
            os.close(lifeline_read)
        self.conn = Connection(ours.detach())

    def ask(self, message: Any, offset: int) -> Any:
        """Send ``message``; return the worker's reply (raise its error as ``StageError``)."""
        try:
            wire.send(self.conn, message, self.prefix)
        except wire.WireError as exc:
            raise self._unsendable(message, offset, exc) from None
        except OSError as exc:
            raise WorkerDied() from exc
        try:
            reply = self.receive()
        except (EOFError, OSError) as exc:
            raise WorkerDied() from exc
        except wire.WireError as exc:
            failure = RemoteFailure(
                f"an output of the worker process cannot be rebuilt here: {exc}"
            )
            failure.__cause__ = exc.__cause__
            err = StageError(self.label, offset, cause=failure)
            raise err from failure
        if reply[0] == "error":
            raise _error_from_reply(reply, offset)
        return reply

    def _unsendable(self, message: Any, offset: int, exc: wire.WireError) -> StageError:
        """Name the first input of a slice that cannot be pickled."""
        index, item = offset, None
        for k, x in enumerate(message[1] if message[0] == "call" else ()):
            try:
                cloudpickle.dumps(x)
            except Exception:
                index, item = offset + k, x
                break
        failure = RemoteFailure(f"an input cannot be sent to the worker process: {exc}")
        failure.__cause__ = exc.__cause__
        err = StageError(self.label, index, item, cause=failure)
        err.__cause__ = failure
        return err

    def receive(self) -> Any:
        """The next message; if the run stops meanwhile, the worker gets ``STOP_GRACE``
        seconds to answer (so a class stage's ``close()`` still runs), then is killed."""
        stop_seen: float | None = None
        while not self.conn.poll(POLL):
            if self.state.stopped:
                now = time.monotonic()
                if stop_seen is None:
                    stop_seen = now
                elif now - stop_seen > STOP_GRACE:
                    self.proc.kill()  # the socket reaches end-of-file: recv raises EOFError
                    stop_seen = float("inf")
        return wire.recv(self.conn)

    def exit_description(self) -> str:
        try:
            code = self.proc.wait(EXIT_WAIT)
        except subprocess.TimeoutExpired:
            code = None
        return _describe_exit(code)

    def close(self) -> None:
        """Ask the worker to finish (``close()`` of a class stage runs), then make sure it did."""
        if self.closed:
            return
        self.closed = True
        if self.proc.poll() is None:
            try:
                wire.send(self.conn, ("close",), None)
            except OSError:
                pass
        try:
            self.proc.wait(EXIT_WAIT)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.conn.close()
        os.close(self._lifeline)


class ProcessCaller:
    """Calls one stage worker's slices in a worker process; replaces it when it dies."""

    slice_target = PROCESS_SLICE_SECONDS

    def __init__(
        self, stage_run: StageRun, setup: tuple[bytes, bytes], counters: WorkerCounters
    ) -> None:
        self.stage_run = stage_run
        self.state: RunState = stage_run.state
        self.label = stage_run.node.label
        self.setup = setup
        self.counters = counters
        opts = stage_run.node.stage.options
        self.policy = ErrorPolicy(self.label, opts.retries, opts.on_error, counters)
        self.lock = threading.Lock()
        self.worker: WorkerProcess | None = None
        self.worker = self._start()

    def _start(self) -> WorkerProcess:
        if self.state.stopped:
            raise Aborted
        worker = WorkerProcess(self.label, self.state)
        with self.lock:
            self.worker = worker
        try:
            wire.send(worker.conn, sys.path, None)
            worker.conn.send_bytes(self.setup[0])
            worker.conn.send_bytes(self.setup[1])
            reply = worker.receive()
            if reply[0] == "error":
                raise _error_from_reply(reply, 0)
        except (EOFError, OSError) as exc:
            self._drop(worker)
            if self.state.stopped:
                raise Aborted from None
            died = WorkerDied(
                f"the worker process died while starting ({worker.exit_description()})"
            )
            raise self._crashed(None, None, died) from exc
        except BaseException:
            self._drop(worker)
            raise
        return worker

    def _drop(self, worker: WorkerProcess) -> None:
        with self.lock:
            if self.worker is worker:
                self.worker = None
        worker.close()

    def _replace(self) -> WorkerProcess:
        old = self.worker
        if old is not None:
            old.close()
        return self._start()

    def call(self, items: list[Any], offset: int) -> list[Any]:
        assert self.worker is not None
        try:
            return self._outputs(self.worker.ask(("call", wire.mark_large(items), offset), offset))
        except WorkerDied:
            if self.state.stopped:
                raise Aborted from None
            crash = self._crash(offset, len(items))
        # The whole slice was lost with the worker: nothing of it came out yet.
        worker = self._replace()
        if self.policy.retries == 0 and self.policy.handler == "raise":
            raise self._crashed(offset, items[0] if len(items) == 1 else items, crash)
        logger.warning("stage %r: %s; going on with a fresh worker process", self.label, crash)
        self.counters.errors += 1
        if self.policy.retries:
            self.counters.retries += 1  # the slice runs again, one item at a time
        out: list[Any] = []
        for k, item in enumerate(items):  # one at a time, to find the item that kills workers
            attempt = 1
            while True:
                try:
                    message = ("call", wire.mark_large([item]), offset + k)
                    out.extend(self._outputs(worker.ask(message, offset + k)))
                    break
                except WorkerDied:
                    if self.state.stopped:
                        raise Aborted from None
                    crash = self._crash(offset + k, 1)
                    worker = self._replace()
                    try:
                        again = self.policy.should_retry([item], offset + k, crash, attempt)
                    except StageError:
                        raise self._crashed(offset + k, item, crash) from None
                    if not again:
                        break
                    attempt += 1
        return out

    def _crash(self, offset: int, n: int) -> WorkerDied:
        assert self.worker is not None
        how = self.worker.exit_description()
        span = f"input #{offset}" if n == 1 else f"inputs #{offset}-#{offset + n - 1}"
        return WorkerDied(f"the worker process died ({how}) while working on {span}")

    def _crashed(self, index: int | None, item: Any, crash: WorkerDied) -> WorkerCrashed:
        err = WorkerCrashed(self.label, index, item, cause=crash)
        err.__cause__ = crash
        return err

    def _outputs(self, reply: tuple[Any, ...]) -> list[Any]:
        _, outputs, errors, retries, skipped = reply
        self.counters.errors += errors
        self.counters.retries += retries
        self.counters.skipped += skipped
        return outputs  # type: ignore[no-any-return]

    def close(self) -> None:
        with self.lock:
            worker, self.worker = self.worker, None
        if worker is not None:
            worker.close()


class ProcessBackend(Backend):
    name = "process"

    def start_stage(self, stage_run: StageRun) -> list[Worker]:
        label = stage_run.node.label
        try:
            stage_bytes = wire.encode((label, stage_run.node, stage_run.state.prefix), None)
        except wire.WireError as exc:
            err = StageError(label, None, cause=exc.__cause__)
            raise err from exc.__cause__
        # The message that carries the stage, built once here so that a stage
        # cloudpickle cannot ship fails now, in the caller, naming the stage.
        setup = stage_bytes

        def factory(wid: int, counters: WorkerCounters) -> Caller:
            return ProcessCaller(stage_run, setup, counters)

        stage_run.caller_factory = factory
        state = stage_run.state
        if not any(getattr(c, "__name__", "") == "sweep_segments" for c in state.cleanups):

            def sweep_segments() -> None:  # what a stopped or crashed run left in /dev/shm
                wire.sweep(state.prefix)

            state.cleanups.append(sweep_segments)
        return [
            start_thread(f"{label}-{wid}", stage_run.run_worker, wid)
            for wid in range(len(stage_run.counters))
        ]


backend_class = ProcessBackend
