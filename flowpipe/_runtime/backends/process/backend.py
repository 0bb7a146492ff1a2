"""The process backend: each stage worker's calls run in a worker process of its own.

::

    this process                                              worker processes
    ────────────                                              ────────────────
    Channel ──take slice──► [worker thread: WorkerLoop] ══CallSlice══► child.Worker: SliceServer.call
                               RemoteCaller: reorder,      ◄═SliceOutputs═  outputs (large buffers via /dev/shm)
                               emit, counters

Taking slices, ordering, windows, joins and backpressure run in this process,
in the same core as the thread backend; only the stage's calls (and a class
stage's instance) live in the worker process. A worker thread here drives one
worker process, with up to two slices in flight (``remote.caller.RemoteCaller``);
between two process stages the slices travel sealed, when the plan says so
(``_plan/edges.py``: this backend's capabilities include ``seals_slices``).

Workers are forked by the fork server (``forkserver``: a single-threaded
process that runs no user code: a fresh interpreter, or a copy of a caller
that runs one thread, ``callerfork``), or, where there is none, started as
fresh interpreters (``boot``): nothing is ever forked from a process that runs
threads, CUDA initialises cleanly in a worker, and the parent's ``__main__`` is
never re-run. Stages travel with cloudpickle.

Crash safety: a worker process that dies makes its socket reach end-of-file
at once, which raises ``WorkerCrashed`` naming the stage (or, with
``retries``, re-runs the lost slice item by item on a fresh worker process).
Stopping a run tells idle worker processes to close (a class stage's
``close()`` runs) and exit; one still inside a call gets ``remote.caller.STOP_GRACE`` seconds
to finish it, then is killed. Each worker watches a lifeline pipe to this process and
exits on its own if this process dies.
"""

from __future__ import annotations

import itertools
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter, deque
from typing import Any

from ...._errors import StageError
from ...._observe.counters import WorkerCounters
from ...._plan.edges import Capabilities
from ...._transport import recycle, wire
from ...._transport.buffer import payload_bytes
from ...._transport.conn import Connection
from ...core.loop import Caller, StageRun
from ...core.state import Opener, RunState, start_worker_threads
from ...remote.caller import REMOTE_DEPTH, RemoteCaller, RemoteWorker, wait_with_grace
from ...remote.errors import (
    WorkerDied,
    died_in_close,
    of_slice,
    stage_error,
    unsendable_error,
)
from ...remote.messages import (
    CallSlice,
    Close,
    Closed,
    Environment,
    Failure,
    LoadStage,
    More,
    Park,
    PartOutputs,
    Ready,
    Reply,
    Resume,
    SliceOutputs,
)
from ...remote.server import RemoteFailure
from ...remote.sources import shipped
from ..base import Backend, Worker
from . import boot, forkserver, stacks
from .gpus import DeviceDealer, gpus_per_worker

logger = logging.getLogger("flowpipe")

CHILD = "flowpipe._runtime.backends.process.child"  # a worker process's body: ``main``
PROCESS_SLICE_SECONDS = 0.05  # a slice costs the parent ~0.2 ms of CPU: give each more work
PROCESS_SLICE_BYTES = 8 << 20  # ... but at most this much of large buffers (one frame)
EXIT_WAIT = 1.0  # seconds a closing worker process gets before it is killed
# Seconds a run's end waits, at most, for its worker threads to have ended their
# worker processes before it sweeps the run's segments: each ends its own within
# STOP_GRACE + EXIT_WAIT once the run stops (it kills it then), unless it is
# inside an ``on_error`` callable of the user's.
SETTLE_TIMEOUT = 30.0
WHAT = "worker process"
_run_ids = itertools.count()


def _fork(
    conn_fd: int, lifeline_fd: int, env: dict[str, str] | None
) -> forkserver.ForkedProcess | None:
    """A worker forked by this process's fork server; ``None``: boot one instead."""
    server = forkserver.server()
    if server is None:
        return None
    try:
        return server.fork(conn_fd, lifeline_fd, env)
    except OSError:
        logger.warning("flowpipe: the fork server failed; starting workers as new interpreters")
        return None


def _describe_exit(code: int | None) -> str:
    if code is None:
        return "still running"
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exit code {code}"


class WorkerProcess:
    """One worker process of one stage, and the conversation with it."""

    def __init__(
        self, label: str, state: RunState, prefix: str, env: dict[str, str] | None = None
    ) -> None:
        self.label = label
        self.state = state
        self.prefix = prefix
        self.closed = False
        # Its outputs each go to one reader only (no fan-out, no join after this
        # stage): that reader may change their arrays in place (``wire.hand_over``).
        self.sole_outputs = False

        def start(
            conn_fd: int, lifeline_fd: int, near: tuple[int, int]
        ) -> forkserver.ForkedProcess | subprocess.Popen[bytes]:
            return _fork(conn_fd, lifeline_fd, env) or boot.interpreter(
                f"from {CHILD} import main; main({conn_fd}, {lifeline_fd})",
                (conn_fd, lifeline_fd),
                env,
            )

        ours, self._lifeline, self.proc = boot.with_socket_and_lifeline(start)
        self.conn = Connection(ours.detach())
        self.maker = recycle.register_maker(recycle.pid_tag(self.prefix, self.proc.pid))
        self.held: Counter[str] = Counter()  # segments it reported keeping arrays over
        self.in_flight: deque[list[Any] | None] = deque()  # handles of slices not answered
        self.stacks = ""  # the file it writes its stacks to on request ("": none)

    @classmethod
    def start(
        cls,
        label: str,
        state: RunState,
        prefix: str,
        setup: tuple[bytes, bytes],
        env: dict[str, str] | None = None,
    ) -> WorkerProcess:
        """A worker process, started and holding the stage (built in it); ``WorkerDied``
        if it ends first, ``StageError`` if the stage cannot be rebuilt or built there.
        ``setup``: the ``LoadStage`` message, encoded; ``env``: variables set in the
        worker (``CUDA_VISIBLE_DEVICES``)."""
        worker = cls(label, state, prefix, env)
        try:
            if state.stacks is not None:  # the run watches for stalls: stacks on request
                worker.stacks = stacks.stacks_file(worker.proc.pid)
            wire.send(worker.conn, Environment(sys.path, sys.argv, worker.stacks), None)
            worker.conn.send_bytes(setup[0])
            worker.conn.send_bytes(setup[1])
            reply = worker.receive()
            if isinstance(reply, Failure):
                raise stage_error(reply, 0, WHAT, label)
        except (EOFError, OSError) as exc:
            how = worker.exit_description()
            worker.close()
            raise WorkerDied(f"the worker process died while starting ({how})") from exc
        except BaseException:
            worker.close()
            raise
        if state.stacks is not None:  # only now: it is ready for the signal
            state.stacks[id(worker)] = worker.read_stacks
        return worker

    def read_stacks(self) -> str:
        """Every thread's stack in the worker now (``faulthandler``'s text)."""
        what = f"worker process {self.proc.pid} of stage {self.label!r}"
        return stacks.read_stacks(self.proc.pid, self.stacks, what)

    def send(
        self,
        items: list[Any],
        offset: int,
        sealed: bool = False,
        skip: int = 0,
        parts: bool = False,
    ) -> None:
        """Send a slice; the worker reads every message as it comes (``child``), so
        this never waits for the worker to finish an earlier slice."""
        released = recycle.take_released(self.maker)
        handles = None
        if not sealed and items and payload_bytes(items[0]) >= wire.SHM_THRESHOLD:
            # Frames from this process go as handles to segments it reuses; the
            # handles live until the worker has answered for them.
            handles = wire.pack_outputs(items, self.prefix)
            # The copies made here are for this worker alone; a handle that was
            # already an item (a fan-out may have put it in another buffer too) is not.
            wire.hand_over([h for h, x in zip(handles, items) if h is not x])
        sent = items if sealed else handles or wire.mark_large(items)
        message = CallSlice(sent, offset, sealed, released, skip, parts)
        try:
            wire.send(self.conn, message, self.prefix)
            self.in_flight.append(handles)
        except BaseException as exc:
            for name in released:  # not given back: nobody will use them
                wire.unlink(name)
            if isinstance(exc, wire.WireError):
                err = unsendable_error(self.label, items, offset, exc, WHAT)
                raise err from err.__cause__  # the refusal, with pickle's error as its cause
            if isinstance(exc, OSError):
                raise WorkerDied() from exc
            raise

    def reply(self, offset: int, give_up_at: float | None = None) -> Reply:
        """The worker's reply for its oldest slice (its error raised as ``StageError``;
        ``remote.errors.Overdue`` if none came by ``give_up_at``)."""
        try:
            reply = self.receive(give_up_at)
        except (EOFError, OSError) as exc:
            raise WorkerDied() from exc
        except wire.WireError as exc:
            failure = RemoteFailure(  # which output of the slice: not known
                f"an output ({of_slice(offset)}) of the worker "
                f"process cannot be rebuilt here: {exc}"
            )
            failure.__cause__ = exc.__cause__
            err = StageError(self.label, None, cause=failure)
            raise err from failure
        if isinstance(reply, Failure):
            raise stage_error(reply, offset, WHAT)
        if not isinstance(reply, (PartOutputs, SliceOutputs)):  # it left its loop without
            raise WorkerDied()  # an answer (``Closed``: SystemExit in it)
        assert reply.report is not None
        held, dropped = reply.report
        wire.hold(held)  # arrays the worker keeps over shared memory
        self.held.update(held)
        wire.let_go(dropped)
        self.held.subtract(dropped)
        if isinstance(reply, SliceOutputs):
            self.in_flight.popleft()  # the handles this slice went as: seen (or kept) now
        if self.sole_outputs:
            wire.hand_over(reply.outputs)
        return reply

    def more(self) -> None:
        """Also gives back the segments nobody sees any more: a generator's slice may
        not end for a long time (a camera), and the worker reuses them meanwhile."""
        released = recycle.take_released(self.maker)
        try:
            wire.send(self.conn, More(released), None)
        except OSError:  # it ended: the next ``reply`` reads why (an error reply, or EOF)
            for name in released:
                wire.unlink(name)

    def receive(self, give_up_at: float | None = None) -> Any:
        """The next message; a worker still busy when the run stops is killed after a
        grace period (the socket then reaches end-of-file: ``recv`` raises EOFError)."""
        wait_with_grace(self.conn.poll, self.state, self.proc.kill, give_up_at)
        return wire.recv(self.conn)

    def park(self) -> bool:
        """Keep this worker for a later run (``keep_alive``): it forgets this run's
        segments (swept when the run ends), as ``close`` would, but keeps its stage."""
        if self.closed or self.in_flight or self.proc.poll() is not None:
            return False
        try:
            wire.send(self.conn, Park(), None)
            reply = self.receive()
        except (OSError, EOFError, wire.WireError):
            return False
        if not isinstance(reply, Ready):
            return False
        self._forget_segments()
        self.state = RunState()  # the run is over: closing it later is not a stopped run's
        return True

    def resume(self, label: str, state: RunState, prefix: str, seal: bool) -> None:
        """A kept worker serves a new run, under its names; ``WorkerDied`` if it died
        while kept (it is then replaced)."""
        self.label, self.state, self.prefix = label, state, prefix
        self.maker = recycle.register_maker(recycle.pid_tag(prefix, self.proc.pid))
        try:
            wire.send(self.conn, Resume(label, prefix, seal), None)
            reply = self.receive()
        except (EOFError, OSError) as exc:
            raise WorkerDied() from exc
        if isinstance(reply, Failure):
            raise stage_error(reply, 0, WHAT, label)
        if not isinstance(reply, Ready):
            raise WorkerDied()

    def _forget_segments(self) -> None:
        """Unlink what this worker made and was not given back; let go of its arrays."""
        for name in recycle.close_maker(self.maker):
            wire.unlink(name)
        wire.let_go(list(self.held.elements()))  # its arrays went with it
        self.held.clear()
        self.in_flight.clear()

    def kill(self) -> None:
        """End the worker inside a call (one past the stage's ``timeout``)."""
        self.proc.kill()
        try:
            self.proc.wait(EXIT_WAIT)
        except subprocess.TimeoutExpired:  # close() waits for it again
            pass

    def exit_description(self) -> str:
        try:
            code = self.proc.wait(EXIT_WAIT)
        except subprocess.TimeoutExpired:
            code = None
        return _describe_exit(code)

    def close(self) -> StageError | None:
        """Ask the worker to finish and wait for it: ``close()`` of a class stage runs
        as long as it takes (once the run stops: ``STOP_GRACE``, then it is killed).
        Returns the error ``close()`` raised, if any, or ``WorkerCrashed`` if the
        worker died in it while the run was going on to its end."""
        if self.closed:
            return None
        self.closed = True
        if self.stacks:
            if self.state.stacks is not None:
                self.state.stacks.pop(id(self), None)
            stacks.unlink(self.stacks)
        report: Failure | None = None
        died = False
        if self.proc.poll() is None:
            try:
                wire.send(self.conn, Close(), None)
                report = self._closed()
            except (OSError, EOFError):  # it ended (or was ended) first
                died = not self.state.stopped  # not killed by us: it died closing
        try:
            self.proc.wait(EXIT_WAIT)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        crash = died_in_close(self.label, WHAT, _describe_exit(self.proc.poll())) if died else None
        if isinstance(self.proc, forkserver.ForkedProcess):
            self.proc.release()
        self.conn.close()
        os.close(self._lifeline)
        self._forget_segments()
        return crash if report is None else stage_error(report, 0, WHAT)

    def _closed(self) -> Failure | None:
        """Read up to the worker's ``("closed", report)``; replies to slices the run no
        longer wants (it stopped) are passed over."""
        while True:
            try:
                message = self.receive()
            except wire.WireError:  # an abandoned slice's reply that cannot be rebuilt
                continue
            if isinstance(message, Closed):
                return message.failure


class ProcessBackend(Backend):
    name = "process"
    capabilities = Capabilities(
        in_caller=False, on_this_machine=True, returns_handles=True, seals_slices=True
    )

    def __init__(self, state: RunState) -> None:
        super().__init__(state)
        # Names of this run's shared-memory segments start with this; every run of
        # this process with ``owner_prefix()`` (what a sweep after a crash of this
        # process removes).
        self.prefix = f"{wire.owner_prefix(os.getpid())}{next(_run_ids)}_"
        self.sweeping = False
        self.gpus = DeviceDealer()
        self.threads: list[threading.Thread] = []  # the worker loops of this run's stages
        # Started now, before the run starts a thread: the caller may still be one
        # that the server can be forked from (``callerfork``), in a few milliseconds.
        forkserver.server()

    def open_handles(self) -> Opener:
        return wire.unpack_items

    def start_stage(self, stage_run: StageRun) -> list[Worker]:
        label, prefix, state = stage_run.node.label, self.prefix, self.state
        try:
            sources = shipped(stage_run.node.stage.target)  # for the worker's tracebacks
            load = LoadStage(label, stage_run.node, prefix, stage_run.sealed_out, sources)
            setup = wire.encode(load, None)
        except wire.WireError as exc:
            # Built once here, so that a stage cloudpickle cannot ship fails now, in
            # the caller, naming the stage.
            err = StageError(label, None, cause=exc.__cause__)
            raise err from exc.__cause__

        opts = stage_run.node.stage.options
        envs: list[dict[str, str] | None] = [None] * len(stage_run.counters)
        if per_worker := gpus_per_worker(opts.resources):  # each worker its own devices
            dealt = self.gpus.deal(label, per_worker, len(envs))
            envs = [{"CUDA_VISIBLE_DEVICES": devices} for devices in dealt]
        seal = stage_run.sealed_out
        sole = sole_reader(stage_run)

        def factory(wid: int, counters: WorkerCounters) -> Caller:
            def start_worker() -> RemoteWorker:
                worker = WorkerProcess.start(label, state, prefix, setup, envs[wid])
                worker.sole_outputs = sole
                return worker

            def resume(kept: WorkerProcess) -> None:  # kept from an earlier run (keep_alive)
                kept.resume(label, state, prefix, seal)
                kept.sole_outputs = sole

            return RemoteCaller(
                stage_run,
                counters,
                start_worker,
                what=WHAT,
                slice_target=PROCESS_SLICE_SECONDS,
                slice_bytes=PROCESS_SLICE_BYTES,
                # A generator's slice may never end (a camera): nothing may queue behind it.
                depth=1 if stage_run.streams else REMOTE_DEPTH,
                open_sealed=wire.unbundle,
                resume=resume,
                slot=wid,
            )

        stage_run.caller_factory = factory
        if not self.sweeping:  # once per run: one backend object serves one run
            self.sweeping = True
            recycle.adopt(prefix)  # frames sent from here go to segments reused here

            def sweep_segments() -> None:  # what a stopped or crashed run left in /dev/shm
                settle(self.threads)  # no worker process is left to make more
                recycle.forget(prefix)
                wire.sweep(prefix)

            state.cleanups.append(sweep_segments)
        threads = start_worker_threads(label, stage_run.run_worker, len(stage_run.counters))
        self.threads.extend(threads)
        return [*threads]


def sole_reader(stage_run: StageRun) -> bool:
    """Whether each output of the stage reaches one reader only: it goes into one channel
    (no fan-out or merge after it), and not a join's (a join's rows may fan out again)."""
    targets = stage_run.emitter.targets
    return len(targets) == 1 and targets[0].name != "join"


def settle(threads: list[threading.Thread]) -> None:
    """Wait until every worker thread has ended: each closes (or kills) its worker process
    and waits for it, so once they are gone no worker process of the run is left. A run's
    end waits for threads stuck in a call only so long (``core.run.JOIN_TIMEOUT``); these
    are not stuck, only slow under load, and the run's segments must outlive its workers."""
    deadline = time.monotonic() + SETTLE_TIMEOUT
    me = threading.current_thread()
    for thread in threads:
        if thread is not me:
            thread.join(max(0.0, deadline - time.monotonic()))
    left = sum(t.is_alive() and t is not me for t in threads)
    if left:
        logger.warning("flowpipe: %d worker thread(s) of a process stage still running", left)


backend_class = ProcessBackend
