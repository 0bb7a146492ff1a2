"""The conversation between a worker loop and its worker elsewhere, as typed messages.

Defined once, here, for every backend whose workers run outside the caller's
process (a worker process, a Ray actor); both sides build and read these
classes and nothing else::

    caller (RemoteCaller + a backend's RemoteWorker)     worker (SliceServer)
    ────────────────────────────────────────────────     ────────────────────
    LoadStage(label, node, prefix, seal_outputs, ─────►  register ``sources`` (tracebacks),
              sources)                                   build the callable (a class stage's instance)
                                           ◄─────────    Ready() | Failure(...)
    CallSlice(items, offset, sealed, released, skip, ─►  SliceCaller.call(items, offset)
              parts)                       ◄─────────    a generator stage, while it runs,
                                                         and with ``parts`` a function stage's
                                                         outputs made before a slow call:
                                                         PartOutputs(outputs, events, ...)
    More(released) ───────────────────────────────────►  (one per part: the worker may send another)
                                           ◄─────────    SliceOutputs(outputs, errors, retries,
                                                             skipped, left, events, ...,
                                                             cpu, queued, wall, worker_cpu, rss)
                                                         | Failure(...)
    Close() ──────────────────────────────────────────►  stage.close()
                                           ◄─────────    Closed(None | Failure)

A ``keep_alive`` stage's worker is not closed at the end of a run: ``Park()``
(answered ``Ready()``) instead of ``Close()``; the next run sends
``Resume(label, prefix, seal_outputs)`` (answered ``Ready()``) instead of a
``LoadStage``, then slices as usual.

A worker process also gets ``Environment`` first (the caller's ``sys.path``
and ``sys.argv``). ``report`` (worker processes: the shared-memory segments
it keeps arrays over, and those it let go) and ``kept`` (Ray actors: which
outputs stayed in the object store) are filled by the backend that needs them.
They are NamedTuples: cheap to build, and pickled by class name and fields.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, NamedTuple

if TYPE_CHECKING:
    from ..._plan.plan import StageNode
    from ..core.policy import PolicyEvent
    from .sources import Sources

# Segments a worker reports keeping arrays over, and those it let go since.
SegmentReport = tuple[list[str], list[str]]


# -- caller to worker ---------------------------------------------------------------


class Environment(NamedTuple):
    """The caller's import path and argv, so imports and argv-reading code agree;
    ``stacks``: a file to write every thread's stack to on ``SIGUSR1`` ("": none)."""

    path: list[str]
    argv: list[str]
    stacks: str = ""


class LoadStage(NamedTuple):
    """The stage to build; ``prefix``: names of the worker's segments; ``seal_outputs``:
    the plan says its output edge carries sealed slices; ``sources``: the source lines
    of its code shipped by value, for tracebacks (``sources.shipped``)."""

    label: str
    node: StageNode
    prefix: str
    seal_outputs: bool
    sources: Sources | None = None


class CallSlice(NamedTuple):
    """A slice to call. ``sealed``: ``items`` are sealed slices to open first;
    ``released``: the worker's segments nobody sees any more; ``skip``: drop this
    many of a generator stage's first outputs (handed on by a worker that died);
    ``parts``: the caller takes outputs while the slice runs (``PartOutputs``): a
    generator's, and a function stage's computed before a slow call. Without it the
    worker answers once, with every output (a keyed slice of several runs)."""

    items: list[Any]
    offset: int
    sealed: bool
    released: list[str]
    skip: int
    parts: bool


class More(NamedTuple):
    """A part was handed on: the worker may send another (and reuse ``released``)."""

    released: list[str]


class Close(NamedTuple):
    """Finish: run the stage's ``close()``, answer ``Closed``, exit."""


class Park(NamedTuple):
    """The run ended and the worker is kept (``keep_alive``): forget the run (its
    shared memory), keep the stage built; answer ``Ready``."""


class Resume(NamedTuple):
    """A kept worker serves a new run: its label, segment ``prefix`` and
    ``seal_outputs`` (as in ``LoadStage``); answer ``Ready`` (or ``Failure``)."""

    label: str
    prefix: str
    seal_outputs: bool


# -- worker to caller ---------------------------------------------------------------


class Ready(NamedTuple):
    """The stage was built: slices may come."""


class PartOutputs(NamedTuple):
    """Outputs of a generator stage's slice that is still running (with ``cpu`` and
    ``queued``: what the worker used since its last answer, as in ``SliceOutputs``)."""

    outputs: list[Any]
    events: list[PolicyEvent]
    report: SegmentReport | None = None
    kept: list[tuple[int, int]] | None = None
    cpu: float | None = None
    queued: float | None = None
    wall: float | None = None
    worker_cpu: float | None = None
    rss: int | None = None


class SliceOutputs(NamedTuple):
    """A slice's (remaining) outputs, and what the worker counted while calling it.
    ``left``: of the slice's ``skip``, how many outputs were still to drop. What the
    worker used since its last answer: ``cpu``, the calling thread's CPU seconds in
    its calls, ``queued``, the seconds it waited for a core in them, ``wall``, their
    seconds by the worker's own clock, ``worker_cpu``,
    the whole process's CPU seconds; ``rss``: its resident memory in bytes now
    (``None``: not known there)."""

    outputs: list[Any]
    errors: int
    retries: int
    skipped: int
    left: int
    events: list[PolicyEvent]
    report: SegmentReport | None = None
    kept: list[tuple[int, int]] | None = None
    cpu: float | None = None
    queued: float | None = None
    wall: float | None = None
    worker_cpu: float | None = None
    rss: int | None = None


class Failure(NamedTuple):
    """An error in the worker. ``what``: "" (the stage raised on an item), "start",
    "close", "input" (an input could not be rebuilt there), "output" (an output
    could not be sent back). ``exc_bytes``: the exception pickled on its own (None
    if it cannot be), ``summary`` its one-line text, ``text`` the remote traceback."""

    label: str
    input_index: int | None
    item: Any
    exc_bytes: bytes | None
    summary: str
    text: str
    what: str = ""


class Closed(NamedTuple):
    """The worker ran the stage's ``close()``; ``failure``: what it raised."""

    failure: Failure | None = None


Reply = PartOutputs | SliceOutputs
