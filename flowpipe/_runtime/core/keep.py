"""Workers kept across runs (``keep_alive=``): a stage's instance is built once per program.

At the end of a run, a worker of a ``keep_alive`` stage is not closed: its
worker loop *parks* it (the backend says how: a thread stage's instance, a
worker process that forgets the run's shared memory, a Ray actor) and gives
it here. The next run of an equal stage on the same backend (same function
or class, constructor arguments and options: ``Stage.__eq__``) takes it
instead of starting one, and *resumes* it for its own run. A worker taken is
no longer here, so two runs at the same time never share one: the second
starts its own, and both are kept when they end.

A kept worker is closed (a class stage's ``close()`` runs) by ``shutdown()``,
at interpreter exit, or once it has been idle for its stage's ``keep_alive``
seconds (a daemon thread waits for the next deadline while anything is kept,
and is gone when nothing is).
"""

from __future__ import annotations

import atexit
import logging
import threading
import time
from typing import TYPE_CHECKING, Any, NamedTuple, Protocol

if TYPE_CHECKING:
    from ..._plan.plan import StageNode

logger = logging.getLogger("flowpipe")


class Kept(Protocol):
    """A parked worker: ``close`` ends it and returns what its stage's ``close()`` raised."""

    def close(self) -> BaseException | None: ...


class _Entry(NamedTuple):
    key: tuple[str, Any]  # (backend, stage)
    kept: Kept
    deadline: float  # time.monotonic() after which it is closed
    run: object  # the run that kept it (its ``RunState``): not handed back to that run
    slot: int | None  # the worker (``wid``) it was: the same worker of the next run gets it


_lock = threading.Lock()
_wake = threading.Condition(_lock)
_idle: list[_Entry] = []
_reaper: threading.Thread | None = None


def key_of(node: StageNode) -> tuple[str, Any] | None:
    """What a kept worker of ``node`` is found by; ``None``: the stage is not kept."""
    if node.stage.options.keep_alive is None:
        return None
    return (node.backend, node.stage)


def _same(a: tuple[str, Any], b: tuple[str, Any]) -> bool:
    try:
        return bool(a[0] == b[0] and a[1] == b[1])
    except Exception:  # constructor arguments that cannot be compared: not the same
        return False


def take(key: tuple[str, Any] | None, run: object = None, slot: int | None = None) -> Any:
    """A kept worker for ``key``, now this caller's alone; ``None`` if none is kept.

    ``run``: the taker's run. A worker its own run kept is not taken: a stage's
    workers start while its first ones may already be done (the source starts
    first), and each worker of the stage is its own (``workers=2``: two kept).
    ``slot``: the taker's worker number. The worker kept from the same slot is
    taken first, so worker 1 of the next run is worker 1 of the last: a keyed
    stage's per-key state (keys land on the same workers in every run that meets
    them in the same order) and a process worker's GPU stay where they were.
    """
    if key is None:
        return None
    with _lock:
        fits = [
            k
            for k, entry in enumerate(_idle)
            if (run is None or entry.run is not run) and _same(entry.key, key)
        ]
        if not fits:
            return None
        k = next((k for k in fits if _idle[k].slot == slot), fits[0])
        entry = _idle.pop(k)
        return entry.kept


def give(key: tuple[str, Any], kept: Kept, run: object = None, slot: int | None = None) -> None:
    """Keep ``kept`` for the next run of ``key``'s stage, for its ``keep_alive`` seconds
    (``run``: the run it served, which does not take it back; ``slot``: its worker number)."""
    global _reaper
    idle = key[1].options.keep_alive
    with _lock:
        _idle.append(_Entry(key, kept, time.monotonic() + idle, run, slot))
        # Registered again, so that it runs before the exit hooks registered since
        # (atexit runs the last first): the fork server's, Ray's, which it needs.
        atexit.unregister(_at_exit)
        atexit.register(_at_exit)
        if _reaper is None:
            _reaper = threading.Thread(target=_reap, name="flowpipe-keep-alive", daemon=True)
            _reaper.start()
        _wake.notify_all()


def _reap() -> None:
    """Close kept workers idle past their deadline; leave once nothing is kept."""
    global _reaper
    while True:
        with _lock:
            if not _idle:
                _reaper = None
                return
            now = time.monotonic()
            due = [e for e in _idle if e.deadline <= now]
            if not due:
                _wake.wait(min(e.deadline for e in _idle) - now)
                continue
            _idle[:] = [e for e in _idle if e.deadline > now]
        for entry in due:
            _close(entry, log=True)


def _close(entry: _Entry, log: bool) -> BaseException | None:
    try:
        err = entry.kept.close()
    except BaseException as exc:  # closing one never keeps the others open
        err = exc
    if err is not None and log:
        logger.warning("flowpipe: closing a kept worker of stage %r: %s", entry.key[1].name, err)
    return err


def shutdown() -> None:
    """Close every worker kept for later runs (``keep_alive=``); their ``close()`` runs.

    Workers of a run still going are not kept ones: they are kept when it ends.
    Raises the first error a stage's ``close()`` raised, once all are closed.
    """
    with _lock:
        entries = _idle[:]
        _idle.clear()
        reaper = _reaper
        _wake.notify_all()
    errors = [err for entry in entries if (err := _close(entry, log=False)) is not None]
    if reaper is not None and reaper is not threading.current_thread():
        reaper.join()
    if errors:
        raise errors[0]


def _at_exit() -> None:
    try:
        shutdown()
    except BaseException as exc:
        logger.warning("flowpipe: closing kept workers at exit: %s", exc)


class KeptCallable:
    """A stage's callable (a class stage's instance) kept by a worker thread."""

    __slots__ = ("fn",)

    def __init__(self, fn: Any) -> None:
        self.fn = fn

    def close(self) -> BaseException | None:
        from .invoke import close_callable

        try:
            close_callable(self.fn)
        except Exception as exc:
            return exc
        return None
