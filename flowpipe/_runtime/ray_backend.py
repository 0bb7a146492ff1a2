"""The Ray backend: each stage worker's calls run in a Ray actor.

::

    this process (the Ray driver)                             Ray actors (anywhere in the cluster)
    ─────────────────────────────                             ────────────────────────────────────
    Channel ──take slice──► [worker thread: StageRun loop] ──call.remote(items)──► StageActor: SliceServer.call
                               reorder, emit, counters      ◄── ray.get ─────────  outputs (object store)

The same split as the process backend: taking slices, ordering, windows,
joins, backpressure (one slice in flight per actor) and stats run here, in
the shared engine; the stage's calls (and a class stage's instance, built
once per actor) run in the actor, through ``remote.SliceServer``; a dead
actor is handled by ``remote.RemoteCaller`` (``WorkerCrashed``, or retries on
a fresh actor). Items and outputs travel through Ray's object store, so large
NumPy arrays are not copied through pickle.

Ray is imported only when a run uses this backend. It connects to a Ray that
is already initialised (``ray.init(address=...)`` by the user, or the
``RAY_ADDRESS`` environment variable), or starts a local one.
"""

from __future__ import annotations

import atexit
import logging
import os
import sys
import threading
import time
from collections import deque
from collections.abc import Iterator
from typing import Any

import cloudpickle

from .._errors import MissingExtra, StageError, StageOptionError
from .._observe.counters import WorkerCounters
from .._transport import wire
from .._transport.buffer import payload_bytes
from .base import Backend, Worker
from .engine import Caller, RunState, StageRun
from .remote import (
    RemoteCaller,
    RemoteWorker,
    SliceServer,
    WorkerDied,
    error_from_reply,
    error_reply,
    unsendable_error,
    wait_with_grace,
)
from .thread import start_worker_threads

logger = logging.getLogger("flowpipe")

RAY_SLICE_SECONDS = 0.01  # a remote call costs ~0.3 ms: give each slice more work
RAY_DEPTH = int(os.environ.get("FLOWPIPE_RAY_DEPTH", "2"))  # slices in flight per actor
CLOSE_WAIT = 1.0  # seconds a closing actor gets to run the stage's close()
WHAT = "Ray actor"
# Ray's own names for the resources it schedules by; anything else is a custom resource.
_NAMED = ("num_cpus", "num_gpus", "memory")


def import_ray() -> Any:
    try:
        import ray  # pyright: ignore[reportMissingImports]  # the optional extra flowpipe[ray]
    except ImportError as exc:
        raise MissingExtra(
            "backend='ray' needs Ray, which is the optional extra flowpipe[ray]: "
            "pip install -e '.[ray]' in the flowpipe checkout"
        ) from exc
    return ray


def connect(ray: Any) -> None:
    """Use the Ray this process is connected to, or start (or join, with RAY_ADDRESS) one."""
    if not ray.is_initialized():
        logger.info("flowpipe: starting or connecting to Ray for backend='ray'")
        ray.init(include_dashboard=False, log_to_driver=True)


class RayHandle:
    """A large output left in Ray's object store: the caller forwards the reference.

    The reference is owned by the caller's process (an object the actor's
    ``call`` yielded), so the value outlives the actor that made it; the next
    actor reads it from the object store itself, and the caller maps it only
    where it needs the value (``unpack``: a read-only, zero-copy view).
    """

    __slots__ = ("nbytes", "ref")

    def __init__(self, ref: Any, nbytes: int) -> None:
        self.ref = ref
        self.nbytes = nbytes  # for buffer sizing

    def unpack(self) -> Any:
        return import_ray().get(self.ref)


wire.register_handle(RayHandle)


class _StageActor:
    """The body of every flowpipe actor: a ``SliceServer`` built in the actor.

    ``call`` is a streaming generator: the reply comes first, then every
    output of ``SHM_THRESHOLD`` bytes or more as an object of its own, so the
    caller owns those as object references (they outlive this actor) and never
    downloads them unless it needs the value.
    """

    def __init__(self) -> None:
        self.server: SliceServer | None = None

    def setup(self, path: list[str], stage_bytes: bytes) -> tuple[Any, ...]:
        for entry in path:  # the driver's import path, so its modules resolve here too
            if entry not in sys.path:
                sys.path.append(entry)
        label = "?"
        try:
            label, node = cloudpickle.loads(stage_bytes)
            self.server = SliceServer(label, node)
        except BaseException as exc:
            return error_reply(label, None, None, exc, "start")
        return ("ready",)

    def call(self, items: list[Any], offset: int) -> Iterator[Any]:
        """Yield the reply, then each large output as an object of its own."""
        assert self.server is not None
        reply = self.server.call(wire.unpack_items(items), offset)
        if reply[0] != "ok":
            yield reply
            return
        outputs: list[Any] = reply[1]
        sizes = [payload_bytes(x) for x in outputs]
        kept = [k for k, size in enumerate(sizes) if size >= wire.SHM_THRESHOLD]
        large = [outputs[k] for k in kept]
        for k in kept:
            outputs[k] = None  # follows as an object of its own
        yield (*reply, [(k, sizes[k]) for k in kept])
        for value in large:  # noqa: UP028 (Ray drives this with send(): no yield from a list)
            yield value

    def close(self) -> None:
        server, self.server = self.server, None
        if server is not None:
            server.close()


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


def actor_options(label: str, resources: Any) -> dict[str, Any]:
    """Ray actor options from a stage's ``resources``; 0 CPUs unless asked for.

    An actor that reserves a CPU by default would leave a pipeline with more
    workers than the cluster has CPUs waiting forever for a slot, so flowpipe's
    actors reserve nothing unless the stage says so.
    """
    given = dict(resources or {})
    options: dict[str, Any] = {"num_cpus": float(given.pop("num_cpus", 0))}
    for name in ("num_gpus", "memory"):
        if name in given:
            options[name] = float(given.pop(name))
    if given:
        options["resources"] = {k: float(v) for k, v in given.items()}
    return options


def check_resources(ray: Any, label: str, options: dict[str, Any]) -> None:
    """Refuse a stage whose resources no node of the cluster has (it would wait forever)."""
    total = ray.cluster_resources()
    wanted = {
        {"num_cpus": "CPU", "num_gpus": "GPU"}.get(k, k): v
        for k, v in options.items()
        if k in _NAMED and k != "memory" and v
    }
    wanted.update(options.get("resources", {}))
    for name, amount in wanted.items():
        if total.get(name, 0) < amount:
            have = total.get(name, 0)
            raise StageOptionError(
                label,
                "resources",
                f"asks for {amount:g} {name} per worker, the Ray cluster has {have:g}",
            )


class RayWorker:
    """One actor of one stage, and the calls to it."""

    def __init__(self, ray: Any, actor: Any, label: str, state: RunState, poolable: bool) -> None:
        self.ray = ray
        self.actor = actor
        self.label = label
        self.state = state
        self.poolable = poolable
        self.died: str | None = None
        self.streams: deque[Any] = deque()  # calls sent, replies not yet read

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
        actor = actor_class(ray).options(**options).remote()
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
        if reply[0] == "error":
            worker.close()
            raise error_from_reply(reply, 0, WHAT)
        return worker

    def send(self, items: list[Any], offset: int, bundled: bool = False) -> None:
        # ``bundled`` is never set here: bundles are made only between worker processes.
        try:
            self.streams.append(self.actor.call.remote(items, offset))
        except Exception as exc:  # an item Ray cannot serialise
            raise unsendable_error(self.label, items, offset, exc, WHAT) from None

    def reply(self, offset: int) -> tuple[Any, ...]:
        stream = self.streams.popleft()  # an actor runs its calls in the order sent
        reply = self._wait(stream, first=True)
        if reply[0] == "error":
            raise error_from_reply(reply, offset, WHAT)
        *head, kept = reply
        if kept:  # large outputs: references owned here, values left in the object store
            outputs = head[1]
            for k, size in kept:
                outputs[k] = RayHandle(self._next(stream), size)
        return tuple(head)

    def _next(self, stream: Any) -> Any:
        try:
            return next(stream)
        except self.ray.exceptions.RayActorError as exc:
            self.died = type(exc).__name__
            raise WorkerDied(str(exc).splitlines()[0] if str(exc) else self.died) from exc

    def _wait(self, ref: Any, first: bool = False) -> Any:
        """The result of ``ref`` (with ``first``: of a stream's first object); once the
        run stops, the actor gets ``remote.STOP_GRACE`` seconds, then is killed. A dead
        actor raises ``WorkerDied``."""
        ray = self.ray
        wait_with_grace(
            lambda timeout: bool(ray.wait([ref], timeout=timeout)[0]),
            self.state,
            lambda: ray.kill(self.actor, no_restart=True),
        )
        try:
            return ray.get(self._next(ref) if first else ref)
        except ray.exceptions.RayActorError as exc:
            self.died = type(exc).__name__
            raise WorkerDied(str(exc).splitlines()[0] if str(exc) else self.died) from exc
        except ray.exceptions.RayTaskError as exc:  # e.g. an output Ray cannot serialise
            failure = RuntimeError(f"the {WHAT} could not return the outputs: {exc}")
            err = StageError(self.label, None, cause=failure)
            raise err from failure

    def exit_description(self) -> str:
        return self.died or "it went away"

    def close(self) -> None:
        """Run the stage's ``close()`` in the actor; keep the emptied actor for reuse
        (or end it: it reserved resources, it died, it did not finish in time)."""
        closed = False
        if self.died is None:
            try:
                ref = self.actor.close.remote()
                if self.ray.wait([ref], timeout=CLOSE_WAIT)[0]:
                    self.ray.get(ref)
                    closed = True
            except Exception:  # dead, or close() raised: do not reuse it
                closed = False
        if closed and self.poolable:
            pool.give(self.ray, self.actor)
        else:
            _kill(self.ray, self.actor)


class RayBackend(Backend):
    name = "ray"

    def __init__(self) -> None:
        self.ray = import_ray()

    def start_stage(self, stage_run: StageRun) -> list[Worker]:
        ray = self.ray
        connect(ray)
        label = stage_run.node.label
        options = actor_options(label, stage_run.node.stage.options.resources)
        check_resources(ray, label, options)
        try:
            stage_bytes = cloudpickle.dumps((label, stage_run.node))
        except Exception as exc:  # a stage that cannot be shipped fails now, naming it
            raise StageError(label, None, cause=exc) from exc
        state = stage_run.state

        def factory(wid: int, counters: WorkerCounters) -> Caller:
            def start_worker() -> RemoteWorker:
                return RayWorker.start(ray, label, state, options, stage_bytes)

            return RemoteCaller(
                stage_run,
                counters,
                start_worker,
                what=WHAT,
                slice_target=RAY_SLICE_SECONDS,
                depth=RAY_DEPTH,
            )

        stage_run.caller_factory = factory
        return start_worker_threads(stage_run)


backend_class = RayBackend
