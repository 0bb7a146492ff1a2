"""Reusing shared-memory segments: a frame's pages are allocated once, not per frame.

Writing a 1080p frame into a *fresh* segment costs about 3 ms here, almost all
of it the kernel allocating and zeroing 1500 pages; copying it into a segment
whose pages already exist costs about 0.3 ms. So a worker process keeps the
segments it made and writes later outputs of the same size into them, once
nobody can see them any more. Who can see a segment:

- a handle (``wire.Packed``) in the parent: channels, in-flight slices, a
  join's rows. The parent counts live handles per segment (``wire._owners``).
- a mapping: an array over the segment, alive in a worker (a class stage that
  keeps the last frame) or in the parent (a thread stage, the run's output in
  the user's hands). A worker reports, with each reply, the mappings it made
  that are still alive and the ones that died since (``report``); the parent
  counts them like handles. The parent's own mappings count from ``unpack``
  until the array goes.

When the count of a segment falls to zero, the parent gives it back to the
worker that made it (``release``): the name rides along with that worker's
next slice (``take_released``), and the worker moves it to its free list
(``give_back``). A worker keeps at most ``FREE_MAX`` free segments (``FREE_BYTES``
in all) and unlinks the rest; when it ends it unlinks its free ones, and the parent unlinks what
it had not yet given back. A segment whose maker is gone is unlinked at once.
Whatever a crash leaves is removed by the run's sweep of its prefix.
"""

from __future__ import annotations

import mmap
import os
import threading
import weakref
from typing import Any

FREE_MAX = 256  # free segments a worker keeps for reuse, at most ...
FREE_BYTES = 128 << 20  # ... and at most this many bytes of them

# -- in a worker process: the segments it made ------------------------------------------

_free: dict[int, list[tuple[str, mmap.mmap | None]]] = {}  # size -> segments nobody sees
_lent: dict[str, tuple[int, mmap.mmap | None]] = {}  # name -> (size, our mapping)
# Re-entrant locks: a handle or mapping that the garbage collector finalises
# while this thread holds one of them gives its segment back through them again.
_pool_lock = threading.RLock()
_free_bytes = 0


def _free_count() -> int:
    return sum(len(v) for v in _free.values())


def take(size: int) -> tuple[str, mmap.mmap] | None:
    """A free segment of exactly ``size`` bytes, mapped here, now lent out again."""
    with _pool_lock:
        spare = _free.get(size)
        if not spare:
            return None
        name, mm = spare.pop()
        global _free_bytes
        _free_bytes -= size
    if mm is None:
        from .segments import open_for_writing

        try:
            mm = open_for_writing(name, size)
        except OSError:  # swept or gone: make a new one instead
            return None
    with _pool_lock:
        _lent[name] = (size, mm)
    return name, mm


def lend(name: str, size: int) -> None:
    """A new segment this worker made and sent out."""
    with _pool_lock:
        _lent[name] = (size, None)


def give_back(names: list[str]) -> None:
    """The parent says nobody sees these any more: keep a few for reuse, unlink the rest."""
    from .segments import unlink

    for name in names:
        with _pool_lock:
            size, mm = _lent.pop(name, (0, None))
            global _free_bytes
            keep = size > 0 and _free_count() < FREE_MAX and _free_bytes + size <= FREE_BYTES
            if keep:
                _free.setdefault(size, []).append((name, mm))
                _free_bytes += size
        if not keep:
            if mm is not None:
                mm.close()
            unlink(name)


def discard_free() -> None:
    """A worker that ends: its free segments are of no use to anyone."""
    from .segments import unlink

    global _free_bytes
    with _pool_lock:
        spare = [name for entries in _free.values() for name, _ in entries]
        _free.clear()
        _free_bytes = 0
    for name in spare:
        unlink(name)


def end_run() -> None:
    """A worker kept for a later run (``keep_alive``): the run that ended sweeps its
    segments, so forget them: unlink the free ones, drop the lent ones (the parent
    unlinks them once nobody sees them), and report no mapping of them again (the
    parent stopped counting them)."""
    discard_free()
    with _pool_lock:
        _lent.clear()
    with _maps_lock:
        _new_maps.clear()
        _reported.clear()
        _dropped.clear()


def unlink_made(wait: float = 1.0) -> None:
    """The parent died, so nothing made here will be given back: unlink it all (lent
    and free). The lock is kept, so that no segment is lent after this; the caller
    exits at once."""
    from .segments import unlink

    _pool_lock.acquire(timeout=wait)  # a thread stuck holding it must not keep us here
    try:
        names = [*_lent, *(name for entries in _free.values() for name, _ in entries)]
    except RuntimeError:  # changed while we looked (the lock was not had): take what we can
        names = list(_lent)
    for name in names:
        unlink(name)


# -- in a worker process: mappings of segments it received -----------------------------

_new_maps: list[tuple[str, weakref.ref[Any]]] = []  # mapped since the last report
_reported: dict[int, weakref.ref[Any]] = {}  # mappings the parent counts (keeps the refs)
_dropped: list[str] = []  # reported mappings that died since the last report
_maps_lock = threading.RLock()


def track_mapping(name: str, mm: Any) -> None:
    """A mapping of a parent-owned segment made here (by ``Packed.unpack``)."""

    def gone(ref: weakref.ref[Any]) -> None:
        with _maps_lock:
            if _reported.pop(id(ref), None) is not None:
                _dropped.append(name)

    with _maps_lock:
        _new_maps.append((name, weakref.ref(mm, gone)))


def report() -> tuple[list[str], list[str]]:
    """``(held, dropped)``: mappings made since the last report that are still alive,
    and mappings reported before that died since."""
    with _maps_lock:
        held: list[str] = []
        for name, ref in _new_maps:
            if ref() is not None:
                _reported[id(ref)] = ref
                held.append(name)
        _new_maps.clear()
        dropped = _dropped[:]
        _dropped.clear()
    return held, dropped


# -- in the parent: giving segments back to the worker that made them ------------------


class Maker:
    """The parent's side of one worker process that makes segments."""

    def __init__(self, tag: str) -> None:
        self.tag = tag  # segment names start with it: prefix + pid
        self.released: list[str] = []
        self.closed = False


_makers: dict[str, Maker] = {}
_makers_lock = threading.RLock()


def register_maker(tag: str) -> Maker:
    maker = Maker(tag)
    with _makers_lock:
        _makers[tag] = maker
    return maker


def close_maker(maker: Maker) -> list[str]:
    """The worker ended: what it was not yet given back is for the caller to unlink."""
    with _makers_lock:
        maker.closed = True
        _makers.pop(maker.tag, None)
        names, maker.released = maker.released, []
    return names


def take_released(maker: Maker) -> list[str]:
    """Names to give back with the next message to this worker."""
    with _makers_lock:
        names, maker.released = maker.released, []
    return names


def release(name: str) -> bool:
    """Nobody sees ``name`` any more: queue it for its maker; ``False`` if the maker
    is gone (the caller unlinks it)."""
    tag = name.rsplit("_", 1)[0]
    if tag in _adopted:  # made here, by the parent itself
        give_back([name])
        return True
    with _makers_lock:
        maker = _makers.get(tag)
        if maker is None or maker.closed:
            return False
        maker.released.append(name)
    return True


def pid_tag(prefix: str, pid: int) -> str:
    return f"{prefix}{pid}"


def my_tag(prefix: str) -> str:
    return pid_tag(prefix, os.getpid())


# -- in the parent: the segments it makes itself ----------------------------------------
#
# Items the parent sends to a worker process (frames read by a thread source)
# go as handles too (``backends/process/backend.py: WorkerProcess.send``), so that their segments
# come back and are reused like a worker's. A run adopts its prefix; when it
# ends, its free segments are unlinked (the sweep removes the rest).

_adopted: set[str] = set()


def adopt(prefix: str) -> None:
    _adopted.add(my_tag(prefix))


def pooling(prefix: str) -> bool:
    return bool(_adopted) and my_tag(prefix) in _adopted


def forget(prefix: str) -> None:
    """A run ended: drop what this process pooled under its prefix."""
    from .segments import unlink

    tag = my_tag(prefix)
    _adopted.discard(tag)
    mine = tag + "_"
    global _free_bytes
    with _pool_lock:
        spare: list[tuple[str, mmap.mmap | None]] = []
        for size, entries in list(_free.items()):
            keep = [(n, m) for n, m in entries if not n.startswith(mine)]
            spare.extend((n, m) for n, m in entries if n.startswith(mine))
            _free_bytes -= size * (len(entries) - len(keep))
            _free[size] = keep
        for name in [n for n in _lent if n.startswith(mine)]:
            _, mm = _lent.pop(name)
            spare.append((name, mm))
    for name, mm in spare:
        if mm is not None:
            mm.close()
        unlink(name)
