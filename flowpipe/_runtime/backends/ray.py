"""The Ray backend: each stage worker's calls run in a Ray actor.

::

    this process (the Ray driver)                             Ray actors (anywhere in the cluster)
    ─────────────────────────────                             ────────────────────────────────────
    Channel ──take slice──► [worker thread: StageRun loop] ──call.remote(items)──► StageActor: SliceServer.call
                               reorder, emit, counters      ◄── ray.get ─────────  outputs (object store)
                                                            ◄── parts ───────────  call_parts (``ray_parts``)

The same split as the process backend: taking slices, ordering, windows,
joins, backpressure (``RAY_DEPTH`` slices in flight per actor) and stats run
here, in the shared core; the stage's calls (and a class stage's instance,
built once per actor) run in the actor, through ``remote.server.SliceServer``;
a dead actor is handled by ``remote.caller.RemoteCaller`` (``WorkerCrashed``, or
retries on a fresh actor). Items and outputs travel through Ray's object
store, so large NumPy arrays are not copied through pickle.

Ray is imported only when a run uses this backend. It connects to a Ray that
is already initialised (``ray.init(address=...)`` by the user, or the
``RAY_ADDRESS`` environment variable), or starts a local one.
"""

from __future__ import annotations

import atexit
import logging
import queue
import sys
import threading
import time
from collections import deque
from collections.abc import Iterator
from typing import Any

from ..._errors import StageError, StageOptionError
from ..._observe.counters import WorkerCounters
from ..._plan.edges import Capabilities
from ..._transport import wire
from ..._transport.buffer import Aborted, payload_bytes
from ..core.loop import Caller, StageRun, streams_outputs
from ..core.state import Opener, RunState, start_worker_threads
from ..remote.caller import RemoteCaller, RemoteWorker, wait_with_grace
from ..remote.errors import WorkerDied, died_in_close, stage_error, unsendable_error
from ..remote.messages import Failure, PartOutputs, Ready, Reply, SliceOutputs
from ..remote.server import SliceServer, failure
from ..remote.sources import register, shipped
from .base import Backend, Worker
from .ray_parts import CallingThread, Parts
from .ray_setup import (
    actor_options,
    check_resources,
    connect,
    dumps_for_ray,
    import_ray,
    node_lost,
)

logger = logging.getLogger("flowpipe")

RAY_SLICE_SECONDS = 0.01  # a remote call costs ~0.3 ms: give each slice more work
RAY_SLICE_BYTES: int | None = 8 << 20  # ... but at most this much of large buffers
RAY_DEPTH = 2  # slices in flight per actor (3 or 4 measured no faster on frames)
WHAT = "Ray actor"
START_TRIES = 3  # new actors tried in turn when each dies before it is up (a lost node)


class RayHandle:
    """A large output left in Ray's object store: the caller forwards the reference.

    The reference is owned by the caller's process (an object the actor's
    ``call`` yielded), so the value outlives the actor that made it; the next
    actor reads it from the object store itself, and the caller maps it only
    where it needs the value (``unpack``: a read-only, zero-copy view).
    """

    __slots__ = ("index", "nbytes", "ref")

    def __init__(self, ref: Any, nbytes: int, index: int) -> None:
        self.ref = ref  # the list of a slice's large outputs
        self.index = index  # this output's place in it
        self.nbytes = nbytes  # for buffer sizing

    def unpack(self) -> Any:
        return import_ray().get(self.ref)[self.index]


wire.register_handle(RayHandle)


class _Slot:
    """Where a handle's value goes back into a slice, in the actor (``lift_handles``)."""

    __slots__ = ("index", "k")

    def __init__(self, k: int, index: int) -> None:
        self.k = k
        self.index = index

    def __reduce__(self) -> tuple[Any, ...]:
        return (_Slot, (self.k, self.index))


def lift_handles(items: list[Any]) -> tuple[list[Any], list[Any]]:
    """``items`` with each ``RayHandle`` (also as a field of a tuple item) replaced by
    a ``_Slot``, and the references, to pass as arguments of the call."""
    refs: list[Any] = []
    places: dict[Any, int] = {}

    def lift(x: Any) -> Any:
        t = type(x)  # pyright: ignore[reportUnknownVariableType]
        if t is RayHandle:
            k = places.get(x.ref)
            if k is None:
                k = places[x.ref] = len(refs)
                refs.append(x.ref)
            return _Slot(k, x.index)
        if t is tuple and any(type(f) is RayHandle for f in x):
            return tuple(lift(f) for f in x)  # pyright: ignore[reportUnknownVariableType]
        return x

    if not any(type(x) in (RayHandle, tuple) for x in items):
        return items, refs
    return [lift(x) for x in items], refs


def _fill(x: Any, values: tuple[Any, ...]) -> Any:
    t = type(x)  # pyright: ignore[reportUnknownVariableType]
    if t is _Slot:
        return values[x.k][x.index]
    if t is tuple:
        return tuple(_fill(f, values) for f in x)  # pyright: ignore[reportUnknownVariableType]
    return x


class _StageActor:
    """The body of every flowpipe actor: a ``SliceServer`` built in the actor.

    ``call`` returns two objects: the reply, and the list of the slice's
    outputs of ``SHM_THRESHOLD`` bytes or more. The caller owns both as task
    returns (they outlive this actor), reads only the reply, and passes the
    list's reference on (``RayHandle``) without downloading it unless it needs
    a value.
    """

    def __init__(self) -> None:
        self.server: SliceServer | None = None
        self.streams = False  # a generator stage: its slices run in a thread, in parts
        self.calling: CallingThread | None = None  # runs the slices of ``call_parts``
        # A streaming slice's answers: PartOutputs..., then SliceOutputs. One at a time,
        # so the generator waits while a part is on its way (backpressure).
        self.replies: queue.Queue[PartOutputs | SliceOutputs | Failure] = queue.Queue(maxsize=1)
        self.slice: threading.Thread | None = None
        self.stopping = threading.Event()

    def ready(self) -> bool:
        """Answers once the actor is up (before any of the stage's code runs in it)."""
        return True

    def setup(self, path: list[str], stage_bytes: bytes) -> Ready | Failure:
        for entry in path:  # the driver's import path, so its modules resolve here too
            if entry not in sys.path:
                sys.path.append(entry)
        label = "?"
        try:
            label, node, sources = import_ray().cloudpickle.loads(stage_bytes)
            register(sources)  # tracebacks name the user's file and line
            self.server = SliceServer(label, node)
            self.streams = streams_outputs(node)
        except BaseException as exc:
            return failure(label, None, None, exc, "start")
        return Ready()

    def resume(self, label: str) -> Ready:
        """Kept from an earlier run (``keep_alive``): serve a run that calls the stage ``label``."""
        assert self.server is not None
        self.server.relabel(label)
        return Ready()

    def call(self, items: list[Any], offset: int, skip: int, *values: Any) -> tuple[Any, Any]:
        """The reply, and the list of the slice's large outputs (two objects: Ray keeps
        the list in its object store, owned by the caller, which takes only the reply).

        ``values``: what the slice's handles refer to, passed as arguments of
        their own so that Ray fetches them before the call starts (while the
        actor still works on the slice before) instead of during it.
        """
        assert self.server is not None
        items = self._open(items, values)
        if not self.streams:
            return self._split(self.server.call(items, offset, None, skip))
        # A generator stage: the slice runs in a thread that hands its outputs over in
        # parts; this call returns the first reply, ``more`` each next one (the
        # caller keeps one slice in flight to this actor, so none overlap).
        self.slice = threading.Thread(target=self._stream, args=(items, offset, skip))
        self.slice.start()
        return self.more()

    def call_parts(self, items: list[Any], offset: int, *values: Any) -> Iterator[Any]:
        """A function stage's slice answered in parts: a streaming call (``ray_parts``)."""
        assert self.server is not None
        calling = self.calling = self.calling or CallingThread()
        yield from calling.answers(self.server, self._open(items, values), offset, self._split)

    def _open(self, items: list[Any], values: tuple[Any, ...]) -> list[Any]:
        return wire.unpack_items([_fill(x, values) for x in items] if values else items)

    def more(self) -> tuple[Any, Any]:
        """The next reply of the streaming slice: a part, or its last reply."""
        return self._split(self.replies.get())

    def _stream(self, items: list[Any], offset: int, skip: int) -> None:
        assert self.server is not None
        try:
            reply = self.server.call(items, offset, self._part, skip)
        except Aborted:  # the run stopped while a part waited
            return
        self._put(reply)

    def _part(self, outputs: list[Any]) -> None:
        assert self.server is not None
        self._put(self.server.part_outputs(outputs))

    def _put(self, reply: PartOutputs | SliceOutputs | Failure) -> None:
        while not self.stopping.is_set():
            try:
                self.replies.put(reply, timeout=0.1)
                return
            except queue.Full:
                pass
        raise Aborted

    def _split(self, reply: PartOutputs | SliceOutputs | Failure) -> tuple[Any, Any]:
        if isinstance(reply, Failure):
            return reply, None
        outputs = reply.outputs
        sizes = [payload_bytes(x) for x in outputs]
        kept = [k for k, size in enumerate(sizes) if size >= wire.SHM_THRESHOLD]
        large = [outputs[k] for k in kept]
        for k in kept:
            outputs[k] = None  # stays in the object store, in the second object
        return reply._replace(kept=[(k, sizes[k]) for k in kept]), large

    def close(self) -> Failure | None:
        """Run the stage's ``close()``; a ``Failure`` if it raised."""
        if self.slice is not None:  # a streaming slice still running: stop it first
            self.stopping.set()
            self.slice.join()
            self.slice = None
            self.stopping.clear()
            while not self.replies.empty():
                self.replies.get_nowait()
        calling, self.calling = self.calling, None
        if calling is not None:
            calling.close()
        server, self.server = self.server, None
        if server is not None:
            try:
                server.close()
            except BaseException as exc:
                return failure(server.label, None, None, exc, "close")
        return None


_actor_class: Any = None

POOL_MAX_IDLE = 16  # idle actors kept for the next run
POOL_IDLE_SECONDS = 60.0  # an actor idle longer than this is ended


class ActorPool:
    """Idle actors of finished runs, reused by the next run instead of starting new ones.

    Starting an actor starts a Python process in the cluster (about a second);
    reusing one costs a call. Only actors that reserve nothing are kept (one
    holding a GPU would keep it from others), each is emptied first (the
    stage's ``close()`` ran and its instance is gone; the next run builds its
    own), and the pool ends what it keeps after ``POOL_IDLE_SECONDS`` unused,
    beyond ``POOL_MAX_IDLE``, and when this process exits.
    """

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.idle: list[tuple[float, Any, Any]] = []  # (since, ray module, actor)
        self.registered = False

    def take(self) -> Any:
        now = time.monotonic()
        with self.lock:
            stale = [e for e in self.idle if now - e[0] > POOL_IDLE_SECONDS]
            self.idle = [e for e in self.idle if now - e[0] <= POOL_IDLE_SECONDS]
            actor = self.idle.pop()[2] if self.idle else None
        for _, ray, old in stale:
            _kill(ray, old)
        return actor

    def give(self, ray: Any, actor: Any) -> None:
        with self.lock:
            if not self.registered:
                atexit.register(self.clear)
                self.registered = True
            if len(self.idle) < POOL_MAX_IDLE:
                self.idle.append((time.monotonic(), ray, actor))
                return
        _kill(ray, actor)

    def clear(self) -> None:
        with self.lock:
            idle, self.idle = self.idle, []
        for _, ray, actor in idle:
            _kill(ray, actor)


def _kill(ray: Any, actor: Any) -> None:
    try:
        ray.kill(actor, no_restart=True)
    except Exception:  # already gone, or Ray already shut down
        pass


pool = ActorPool()


def actor_class(ray: Any) -> Any:
    global _actor_class
    if _actor_class is None:
        _actor_class = ray.remote(max_restarts=0, max_task_retries=0)(_StageActor)
    return _actor_class


class RayWorker:
    """One actor of one stage, and the calls to it."""

    def __init__(self, ray: Any, actor: Any, label: str, state: RunState, poolable: bool) -> None:
        self.ray = ray
        self.actor = actor
        self.label = label
        self.state = state
        self.poolable = poolable
        self.streams = False  # a generator stage (its actor streams every slice itself)
        self.died: str | None = None
        self.calls: deque[tuple[Any, Any] | Parts] = deque()  # (reply, large outputs) not read

    @classmethod
    def start(
        cls, ray: Any, label: str, state: RunState, options: dict[str, Any], stage_bytes: bytes
    ) -> RayWorker:
        poolable = options == {"num_cpus": 0.0}
        reused = pool.take() if poolable else None
        if reused is not None:
            try:
                return cls._setup(ray, reused, label, state, poolable, stage_bytes)
            except WorkerDied:  # it died while idle (or Ray restarted): start a new one
                pass
        tries = START_TRIES
        while True:
            try:  # a lost node may have held the only place it fits: it would wait forever
                check_resources(ray, label, options)
            except StageOptionError as gone:
                raise WorkerDied(
                    f"no node of the Ray cluster can take it any more ({gone})"
                ) from gone
            actor = actor_class(ray).options(**options).remote()
            fresh = cls(ray, actor, label, state, poolable)
            try:
                fresh._wait(actor.ready.remote())
            except WorkerDied:
                # It died before any of the stage's code ran: Ray placed it on a node
                # that was lost (and not yet known to be), or could not start it.
                fresh.close()
                tries -= 1
                if not tries:
                    raise
                logger.warning("stage %r: a new %s died starting; starting another", label, WHAT)
                continue
            return cls._setup(ray, actor, label, state, poolable, stage_bytes)

    @classmethod
    def _setup(
        cls, ray: Any, actor: Any, label: str, state: RunState, poolable: bool, stage_bytes: bytes
    ) -> RayWorker:
        worker = cls(ray, actor, label, state, poolable)
        try:
            reply = worker._wait(actor.setup.remote(list(sys.path), stage_bytes))
        except BaseException:
            worker.close()
            raise
        if isinstance(reply, Failure):
            worker.close()
            raise stage_error(reply, 0, WHAT, label)
        return worker

    def send(
        self,
        items: list[Any],
        offset: int,
        sealed: bool = False,
        skip: int = 0,
        parts: bool = False,
    ) -> None:
        # ``sealed`` is never set here: Ray's capabilities do not seal slices.
        items, refs = lift_handles(items)
        try:
            if parts and not self.streams and not skip:  # outputs may leave before it ends
                call = self.actor.call_parts.options(num_returns="streaming")
                self.calls.append(Parts(call.remote(items, offset, *refs)))
            else:
                call = self.actor.call.options(num_returns=2)
                self.calls.append(call.remote(items, offset, skip, *refs))
        except Exception as exc:  # an item Ray cannot serialise
            err = unsendable_error(self.label, items, offset, exc, WHAT)
            raise err from err.__cause__  # the refusal, with pickle's error as its cause

    def reply(self, offset: int, give_up_at: float | None = None) -> Reply:
        call = self.calls[0]  # an actor runs its calls in order
        reply: Reply | Failure
        if isinstance(call, Parts):
            reply, large_ref = call.next_answer(self.ray, lambda r, g: self._wait(r, give_up_at, g))
        else:
            reply, large_ref = self._wait(call[0], give_up_at), call[1]
        if not isinstance(call, Parts) or not isinstance(reply, PartOutputs):
            self.calls.popleft()  # a streaming call stays first until its last answer
        if isinstance(reply, Failure):
            raise stage_error(reply, offset, WHAT)
        if reply.kept:  # large outputs: a reference owned here, values left in the object store
            outputs = reply.outputs
            for j, (k, size) in enumerate(reply.kept):
                outputs[k] = RayHandle(large_ref, size, j)
        return reply

    def _wait(self, ref: Any, give_up_at: float | None = None, get: Any = None) -> Any:
        """The result of ``ref`` (or ``get()`` once it is ready); once the run stops, the actor
        gets ``remote.caller.STOP_GRACE`` seconds, then is killed. A dead actor raises
        ``WorkerDied``; none by ``give_up_at``, ``remote.errors.Overdue``."""
        ray = self.ray
        wait_with_grace(
            lambda timeout: bool(ray.wait([ref], timeout=timeout)[0]),
            self.state,
            lambda: ray.kill(self.actor, no_restart=True),
            give_up_at,
        )
        try:
            return ray.get(ref) if get is None else get()
        except ray.exceptions.RayActorError as exc:
            self.died = type(exc).__name__
            died = WorkerDied(str(exc).splitlines()[0] if str(exc) else self.died)
            died.blameless = node_lost(ray, exc)
            raise died from exc
        except ray.exceptions.RayTaskError as exc:  # e.g. an output Ray cannot serialise
            failure = RuntimeError(f"the {WHAT} could not return the outputs: {exc}")
            err = StageError(self.label, None, cause=failure)
            raise err from failure

    def more(self) -> None:
        """A part was handed on: ask for the generator's next reply (``call_parts`` goes on)."""
        if not (self.calls and isinstance(self.calls[0], Parts)):
            self.calls.appendleft(self.actor.more.options(num_returns=2).remote())

    def exit_description(self) -> str:
        return self.died or "it went away"

    def park(self) -> bool:
        """Keep this actor, its stage built, for a later run (``keep_alive``)."""
        if self.died is not None or self.calls:
            return False
        self.state = RunState()  # the run is over: closing it later is not a stopped run's
        return True

    def resume(self, label: str, state: RunState) -> None:
        """A kept actor serves a new run; ``WorkerDied`` if it died while kept."""
        self.label, self.state = label, state
        self._wait(self.actor.resume.remote(label))

    def kill(self) -> None:
        """End the actor inside a call (one past the stage's ``timeout``)."""
        self.died = "killed: a call ran past the stage's timeout"
        _kill(self.ray, self.actor)

    def close(self) -> StageError | None:
        """Run the stage's ``close()`` in the actor, as long as it takes (once the run
        stops: ``STOP_GRACE``, then the actor is killed); keep the emptied actor for
        reuse, or end it (it reserved resources, it died, close() failed). Returns
        the error close() raised, if any."""
        closed = False
        report: Failure | None = None
        crash: StageError | None = None
        if self.died is None:
            try:
                report = self._wait(self.actor.close.remote())
                closed = report is None
            except WorkerDied:  # killed once the run stopped, or it died closing
                if not self.state.stopped:
                    crash = died_in_close(self.label, WHAT, self.exit_description())
            except StageError:  # its answer could not come back: not kept for reuse
                pass
        if closed and self.poolable:
            pool.give(self.ray, self.actor)
        else:
            _kill(self.ray, self.actor)
        return crash if report is None else stage_error(report, 0, WHAT)


class RayBackend(Backend):
    name = "ray"
    capabilities = Capabilities(
        in_caller=False, on_this_machine=False, returns_handles=True, seals_slices=False
    )

    def __init__(self, state: RunState) -> None:
        super().__init__(state)
        self.ray = import_ray()

    def open_handles(self) -> Opener:
        return wire.unpack_items

    def start_stage(self, stage_run: StageRun) -> list[Worker]:
        ray = self.ray
        connect(ray)
        label = stage_run.node.label
        options = actor_options(label, stage_run.node.stage.options.resources)
        check_resources(ray, label, options)
        try:
            sources = shipped(stage_run.node.stage.target)  # for the actor's tracebacks
            stage_bytes = dumps_for_ray(ray, (label, stage_run.node, sources))
        except Exception as exc:  # a stage that cannot be shipped fails now, naming it
            raise StageError(label, None, cause=exc) from exc
        state = stage_run.state
        streams = stage_run.streams

        def factory(wid: int, counters: WorkerCounters) -> Caller:
            def start_worker() -> RemoteWorker:
                worker = RayWorker.start(ray, label, state, options, stage_bytes)
                worker.streams = streams
                return worker

            def resume(kept: RayWorker) -> None:  # kept from an earlier run (keep_alive)
                kept.resume(label, state)

            return RemoteCaller(
                stage_run,
                counters,
                start_worker,
                what=WHAT,
                slice_target=RAY_SLICE_SECONDS,
                slice_bytes=RAY_SLICE_BYTES,
                depth=1 if streams else RAY_DEPTH,  # a streaming slice's parts come one by one
                resume=resume,
                slot=wid,
            )

        stage_run.caller_factory = factory
        return [*start_worker_threads(label, stage_run.run_worker, len(stage_run.counters))]


backend_class = RayBackend
