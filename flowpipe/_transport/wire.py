"""Messages between processes: pickles, with large buffers in shared memory.

A message is two frames on a ``conn.Connection`` (a socket):

1. a small header: the names and sizes of the shared-memory segments that
   hold the message's large buffers (may be empty);
2. the pickle (protocol 5) of the object itself, with those buffers *out of
   band*: NumPy arrays, ``bytearray``, and ``bytes`` or ``memoryview`` items
   of at least ``SHM_THRESHOLD`` bytes are copied once into a segment by the
   sender, and the receiver maps the segment and rebuilds the object on top
   of it. A NumPy array arrives backed by the mapping itself (no copy); it
   lives as long as the array does.

Segments are created and opened with ``shm_open`` directly, not through
``multiprocessing.shared_memory``, so that no resource-tracker process is
started and no warning is printed about segments another process unlinked.
The receiver unlinks a segment as soon as it has mapped it. A message that is
never read (a run that stopped) leaves its segments behind: every segment name
starts with the run's prefix, and the run sweeps that prefix when it ends
(``sweep``), so a stopped, failed or crashed run leaves nothing in
``/dev/shm``.
"""

from __future__ import annotations

import ctypes
import errno
import itertools
import logging
import mmap
import os
import pickle
import threading
import weakref
from collections.abc import Iterator
from typing import Any

import cloudpickle

from . import recycle
from .conn import Connection
from .segments import SHM_AVAILABLE as SHM_AVAILABLE
from .segments import SHM_DIR as SHM_DIR
from .segments import allocate, posix_shm
from .segments import open_for_writing as open_for_writing
from .segments import owner_prefix as owner_prefix
from .segments import sweep as sweep
from .segments import unlink as unlink

SHM_THRESHOLD = 1 << 16  # buffers at least this large travel through shared memory

# Pages are mapped as they are touched: a stage that reads a few pixels of a frame
# pays for those only (populating all of a 6 MB frame costs ~0.6 ms), and one that
# reads all of it pays no more than with MAP_POPULATE.
_MAP_FLAGS = mmap.MAP_SHARED
_counter = itertools.count()
_counter_lock = threading.Lock()


class WireError(Exception):
    """An object could not be encoded or decoded; ``__cause__`` says why."""


class _NoRoom(Exception):
    """Shared memory is full: the buffer travels in band (through the socket) instead."""


_no_room_told = False


def _tell_no_room() -> None:
    global _no_room_told
    if not _no_room_told:
        _no_room_told = True
        logging.getLogger("flowpipe").warning(
            "flowpipe: shared memory (%s) is full; large buffers now travel through "
            "pipes, which is slower (a container may need a larger --shm-size)",
            SHM_DIR,
        )


def _new_segment(
    prefix: str, data: memoryview, pooled: bool = False, room: int = 0
) -> tuple[str, int]:
    """A segment holding a copy of ``data``. ``pooled`` (a worker's output): reuse a
    segment of this worker's that nobody sees any more (``recycle``), or lend a new one.
    ``room``: make the segment this large (at least ``data``'s size), so that one of a
    few sizes serves data of varying length; what follows ``data`` is not read."""
    size = max(data.nbytes, room)
    if pooled:
        spare = recycle.take(size)
        if spare is not None:
            name, mm = spare
            mm[0 : data.nbytes] = data  # its pages exist already: a plain copy
            return name, size
    with _counter_lock:
        n = next(_counter)
    name = f"{prefix}{os.getpid()}_{n}"
    fd = posix_shm().shm_open("/" + name, os.O_CREAT | os.O_EXCL | os.O_RDWR, 0o600)
    try:
        try:
            # write(), not a mapping: the kernel fills fresh pages without a page
            # fault per 4 KiB, which makes a 1080p frame several times cheaper.
            written = 0
            while written < data.nbytes:
                written += os.write(fd, data[written:])
            if size > written:  # back every page, so a mapping never faults when full
                allocate(fd, size)
        except OSError as exc:
            if exc.errno == errno.ENOSPC:  # a full /dev/shm: never map it (SIGBUS)
                raise _NoRoom from exc
            # shared memory that cannot be written to (macOS): map it
            os.ftruncate(fd, size)
            with mmap.mmap(fd, size) as mm:
                mm[: data.nbytes] = data
    except BaseException:
        os.close(fd)
        unlink(name)
        raise
    os.close(fd)
    if pooled:
        recycle.lend(name, size)
    return name, size


def size_class(n: int) -> int:
    """``n`` rounded up to one of eight sizes per doubling (at least a page): pickles
    of varying length fit segments that are reused, wasting at most an eighth."""
    if n <= 4096:
        return 4096
    step = 1 << max(0, n.bit_length() - 4)
    return -(-n // step) * step


def _open_segment(name: str, size: int, owned: bool = True, private: bool = False) -> memoryview:
    """Map a segment; ``owned``: this message was its only reader, so unlink the name.
    ``private``: others may read it too, so map it copy-on-write: writes here copy only
    the pages they touch, and nobody else sees them."""
    fd = posix_shm().shm_open("/" + name, os.O_RDWR, 0o600)
    try:
        mm = mmap.mmap(fd, size, flags=mmap.MAP_PRIVATE if private else _MAP_FLAGS)
    finally:
        os.close(fd)
        if owned:
            unlink(name)  # the mapping stays valid; the name is no longer needed
    return memoryview(mm)


class _SharedBytes:
    """A large ``bytes``/``memoryview`` item, pickled as an out-of-band buffer."""

    __slots__ = ("data", "kind")

    def __init__(self, data: Any, kind: str) -> None:
        self.data = data
        self.kind = kind

    def __reduce_ex__(self, protocol: Any) -> tuple[Any, ...]:
        if self.kind == "bytes":
            return (_rebuild_bytes, (pickle.PickleBuffer(self.data), self.kind))
        view: memoryview = self.data
        return (_rebuild_bytes, (pickle.PickleBuffer(view), self.kind, view.format, view.shape))


def _rebuild_bytes(
    buffer: Any, kind: str, fmt: str = "B", shape: tuple[int, ...] | None = None
) -> Any:
    if kind == "bytes":
        return bytes(buffer)  # bytes own their memory: one copy out of the segment
    view = memoryview(buffer).cast("B")  # the buffer arrives as flat bytes
    if fmt == "B" and (shape is None or len(shape) == 1):
        return view
    try:
        cast: Any = view.cast  # its overloads want a literal format
        return cast(fmt, shape)  # the format and shape it was sent with
    except (TypeError, ValueError):  # a format cast() does not take (not native)
        return view


def _wrap(x: Any) -> Any:
    # To pyright, type() of an Any is type[Unknown] (a checker limit; no runtime cost here)
    t = type(x)  # pyright: ignore[reportUnknownVariableType]
    if t is bytes and len(x) >= SHM_THRESHOLD:
        return _SharedBytes(x, "bytes")
    if t is memoryview and x.nbytes >= SHM_THRESHOLD and x.contiguous:
        return _SharedBytes(x, "memoryview")
    return x


def _wrap_item(x: Any) -> Any:
    if type(x) is tuple:  # to pyright, x is now tuple[Unknown, ...]
        return tuple(_wrap(f) for f in x)  # pyright: ignore[reportUnknownVariableType]
    return _wrap(x)


def mark_large(items: list[Any]) -> list[Any]:
    """Mark large ``bytes``/``memoryview`` items (and tuple fields) for shared memory.

    NumPy arrays and ``bytearray`` need no marking: pickle protocol 5 already
    offers their buffers out of band.
    """
    if not _MAY_MARK.intersection(map(type, items)):  # the common case, at C speed
        return items
    return [_wrap_item(x) for x in items]


_MAY_MARK = frozenset({bytes, memoryview, tuple})


# -- items that stay in shared memory between worker processes ------------------------

IN_WORKER = False  # True in a worker process (set by ``child.main``)


def _owned(name: str) -> bool:
    """Whether a segment belongs to a run of this process (which counts who sees it and
    unlinks it) rather than to the parent of this worker (which this one only maps).
    A worker may itself run a pipeline of processes: its own runs' segments are its."""
    return not IN_WORKER or name.startswith(owner_prefix(os.getpid()))


def _owns(segments: list[tuple[str, int]]) -> bool:
    """Whether a handle is one of this process's runs' (to keep, not map). A bundle a
    nested run's worker made may also name a segment of this worker's parent (an
    input array passed on unchanged): any segment of its own makes it ours."""
    if not segments:
        return not IN_WORKER
    return any(_owned(name) for name, _ in segments)


class Packed:
    """An output whose large buffers stay in shared memory where its worker put them.

    A worker process answers with ``Packed`` items instead of copying large
    buffers through the parent: the parent's channels hold these small
    handles, and when one is sent on to another worker process only the handle
    travels (``__reduce__``); that worker maps the segments itself. So a frame
    goes from worker to worker through shared memory, and the parent never
    copies it. The parent owns the segments: they are unlinked when its last
    reference to the ``Packed`` goes, after every consumer has mapped them.
    Where the parent itself needs the value (a thread stage, the run's
    output), ``unpack`` maps it there.

    ``sole``: the one reader this handle goes to is the only one that will see
    its segments (the parent knows: ``hand_over``), so it maps them shared and
    may change the arrays in place, and pass them on, without a copy. Any other
    reader (after a fan-out) maps them copy-on-write: its writes stay its own.
    """

    __slots__ = ("count", "nbytes", "payload", "segments", "sole")

    def __init__(
        self,
        segments: list[tuple[str, int]],
        payload: bytes,
        count: int | None = None,
        sole: bool = False,
    ) -> None:
        self.segments = segments
        self.payload = payload
        self.count = count  # a bundle (``bundle``): how many items; None: one item
        self.sole = sole
        self.nbytes = sum(size for _, size in segments)  # for buffer sizing
        hold([name for name, _ in segments])  # those of its segments this process owns

    def unpack(self) -> Any:
        try:
            # a bundle's pickle (its last segment) is only read: shared either way
            private = [not self.sole] * len(self.segments)
            if not self.payload and private:
                private[-1] = False
            buffers = [
                _open_segment(name, size, owned=False, private=p)
                for (name, size), p in zip(self.segments, private)
            ]
            for (name, size), view, p in zip(self.segments, buffers, private):
                if not _owned(name):
                    if not p:  # a copy-on-write mapping is never named again: it may differ
                        _remember_mapping(name, size, view)
                    recycle.track_mapping(name, view.obj)
                else:  # an array here (a thread stage, the run's output) counts as a handle
                    hold([name])
                    weakref.finalize(view.obj, let_go, [name])
            if not self.payload:  # a bundle: its pickle is in its last segment
                payload = buffers.pop()
                try:
                    return pickle.loads(payload, buffers=buffers)
                finally:
                    payload.release()
            return pickle.loads(self.payload, buffers=buffers)
        except Exception as exc:
            raise WireError(f"{type(exc).__name__}: {exc}") from exc

    def __reduce__(self) -> tuple[Any, ...]:
        return (_arrive, (self.segments, self.payload, self.count, self.sole))

    def __del__(self) -> None:
        try:  # of its segments, those this process owns (a worker's are its parent's)
            let_go([name for name, _ in self.segments])
        except Exception:  # at interpreter exit; the run's sweep has it covered
            pass


# The parent: how many live handles and mappings see each segment. A worker that
# passes an input array on as its output (changed in place or not) names the same
# segment again instead of copying it, and a worker that keeps an array over a
# segment reports it (``recycle``): a segment goes only when nothing sees it.
_owners: dict[str, int] = {}
_owners_lock = threading.RLock()  # re-entrant: a finaliser may run while it is held


def hold(names: list[str]) -> None:
    """One more handle or mapping sees each of ``names`` (those this process owns: a
    worker does not count its parent's segments, however it came to see them)."""
    with _owners_lock:
        for name in names:
            if _owned(name):
                _owners[name] = _owners.get(name, 0) + 1


def let_go(names: list[str]) -> None:
    """One handle or mapping fewer; a segment nothing sees goes back to the worker
    that made it (to be reused) or is unlinked."""
    gone: list[str] = []
    with _owners_lock:
        for name in names:
            if not _owned(name):  # its parent's: the parent lets go of it
                continue
            left = _owners.pop(name, 1) - 1
            if left > 0:
                _owners[name] = left
            else:
                gone.append(name)
    for name in gone:
        if not recycle.release(name):
            unlink(name)


# A worker: the address of each mapping of a parent-owned segment it holds,
# so that an output over exactly that memory is sent on by name (``_reuse``).
_mapped: dict[int, tuple[str, int]] = {}


def _address(view: memoryview) -> int | None:
    try:
        return ctypes.addressof(ctypes.c_char.from_buffer(view))
    except (TypeError, ValueError, BufferError):  # read-only or empty: no address to compare
        return None


def _remember_mapping(name: str, size: int, view: memoryview) -> None:
    address = _address(view)
    if address is not None:
        _mapped[address] = (name, size)
        # the mapping goes when the last array over it does; its address may be reused
        weakref.finalize(view.obj, _mapped.pop, address, None)


def _reuse(raw: memoryview) -> tuple[str, int] | None:
    """The parent-owned segment whose whole mapping ``raw`` is, if any (in a worker)."""
    if not _mapped:
        return None
    address = _address(raw)
    hit = _mapped.get(address) if address is not None else None
    return hit if hit is not None and hit[1] == raw.nbytes else None


def _arrive(
    segments: list[tuple[str, int]], payload: bytes, count: int | None = None, sole: bool = False
) -> Any:
    """Unpickling a ``Packed``: a worker maps the value, the parent keeps the handle."""
    packed = Packed(segments, payload, count, sole)
    return packed if _owns(segments) else packed.unpack()


def hand_over(items: list[Any]) -> None:
    """Each handle among ``items`` goes to one reader only (no fan-out after it), which
    may then change its arrays in place without a copy (``Packed.sole``)."""
    for x in items:
        if type(x) is Packed:
            x.sole = True


def bundle(outputs: list[Any], prefix: str) -> Packed:
    """A worker's whole output slice as one sealed ``Packed`` (``count`` items).

    Between two worker processes the parent forwards bundles without opening
    them: it pays per slice, not per item, and never unpickles an item. The
    next worker opens the bundle (``unbundle``) into the items again.
    """
    header, payload = encode(mark_large(outputs), prefix, reuse=True)
    segments: list[tuple[str, int]] = pickle.loads(header)
    if SHM_AVAILABLE:  # the pickle goes worker to worker too: the parent sees names only
        room = size_class(len(payload))
        try:
            segments.append(_new_segment(prefix, memoryview(payload), pooled=True, room=room))
            payload = b""  # no pickle is empty: this says "in the last segment"
        except _NoRoom:
            _tell_no_room()  # the pickle stays in band
    return Packed(segments, payload, len(outputs))


def bundle_count(entries: list[Any]) -> int:
    """How many items a list of bundles holds."""
    return sum(b.count for b in entries)


def unbundle(entries: list[Any]) -> list[Any]:
    """The items of a list of opened bundles (in a worker) or of ``Packed`` bundles (here)."""
    out: list[Any] = []
    for b in entries:
        out.extend(b.unpack() if type(b) is Packed else b)
    return out


class _LargeBuffer(Exception):
    pass


def pack_outputs(outputs: list[Any], prefix: str) -> list[Any]:
    """A worker's outputs, with each one that holds large buffers made a ``Packed``.

    Small outputs (the common case for cheap stages) are left as they are at
    the cost of one check; only when a large buffer shows up is each output
    pickled on its own.
    """

    def refuse_large(buf: pickle.PickleBuffer) -> bool:
        try:
            raw = buf.raw()
        except BufferError:
            return True
        if raw.nbytes >= SHM_THRESHOLD:
            raise _LargeBuffer
        return True

    wrapped = mark_large(outputs)
    try:
        _dumps(wrapped, refuse_large, lambda: None)
        return outputs
    except _LargeBuffer:
        pass
    except Exception:
        return outputs  # cannot be pickled at all: ``send`` reports it
    packed: list[Any] = []
    for x in outputs:
        header, payload = encode(_wrap_item(x), prefix, reuse=True)
        segments: list[tuple[str, int]] = pickle.loads(header)
        packed.append(Packed(segments, payload) if segments else x)
    return packed


def unpack_items(items: list[Any]) -> list[Any]:
    """``items`` with every handle (``Packed``, also inside tuples, lists, dicts) unpacked."""
    out = items
    for i, x in enumerate(items):
        if type(x) in _HOLDERS:
            y = _unpack(x, 2)
            if y is not x:
                if out is items:
                    out = list(items)
                out[i] = y
    return out


def _unpack(x: Any, depth: int) -> Any:
    # To pyright, type() of an Any is type[Unknown], so t(parts) is a tuple[Unknown, ...]
    t = type(x)  # pyright: ignore[reportUnknownVariableType]
    if t in _HANDLES:
        return x.unpack()
    if depth == 0:
        return x
    if t is tuple or t is list:
        parts = [_unpack(p, depth - 1) for p in x]
        return t(parts) if any(a is not b for a, b in zip(parts, x)) else x  # pyright: ignore[reportUnknownVariableType]
    if t is dict:
        values = {k: _unpack(v, depth - 1) for k, v in x.items()}
        return values if any(values[k] is not v for k, v in x.items()) else x
    return x


# Handle types: values that live elsewhere (shared memory, Ray's object store)
# and have an ``unpack()``; other backends add theirs with ``register_handle``.
_HANDLES: set[type] = {Packed}
_HOLDERS: set[type] = {Packed, tuple, list, dict}


def register_handle(cls: type) -> None:
    """Make ``unpack_items`` map values of ``cls`` (it has ``unpack()``)."""
    _HANDLES.add(cls)
    _HOLDERS.add(cls)


def encode(obj: Any, prefix: str | None, reuse: bool = False) -> tuple[bytes, bytes]:
    """Pickle ``obj``; large buffers go to new segments named ``prefix...``.

    ``prefix=None`` keeps every buffer in band (no shared memory). ``reuse`` (a
    worker's outputs for a ``Packed``): a buffer that is exactly the mapping of
    a parent-owned segment this worker received is named, not copied.
    Raises ``WireError`` (no segment is left behind) when ``obj`` cannot be pickled.
    """
    segments: list[tuple[str, int]] = []
    made: list[str] = []
    pooled_made: list[str] = []

    def out_of_band(buf: pickle.PickleBuffer) -> bool:
        try:
            raw = buf.raw()
        except BufferError:  # not contiguous: pickle copies it in band
            return True
        if prefix is None or raw.nbytes < SHM_THRESHOLD:
            return True
        known = _reuse(raw) if reuse else None
        if known is not None:
            segments.append(known)
        else:
            pooled = reuse and (not _owned(prefix) or recycle.pooling(prefix))
            try:
                segments.append(_new_segment(prefix, raw, pooled=pooled))
            except _NoRoom:
                _tell_no_room()
                return True  # pickled in band, through the socket
            (pooled_made if pooled else made).append(segments[-1][0])
        return False

    def undo() -> None:  # a first attempt that failed: its segments are not sent
        recycle.give_back(pooled_made)  # back to the free ones
        for name in made:
            unlink(name)
        del segments[:], made[:], pooled_made[:]

    try:
        payload = _dumps(obj, out_of_band, undo)
    except BaseException as exc:
        made.extend(pooled_made)
        for name in made:
            unlink(name)
        if isinstance(exc, Exception):
            raise WireError(f"{type(exc).__name__}: {exc}") from exc
        raise
    return pickle.dumps(segments, protocol=5), payload


# A worker tries the standard pickler first (several times faster than cloudpickle's,
# which calls Python code per object): it pickles by reference what cloudpickle would,
# and refuses what came by value (a lambda, a class of the caller's script); then the
# worker keeps to cloudpickle. The caller keeps to it: a class of its script would
# pickle by reference to a ``__main__`` that workers do not have.
_plain = True


def _dumps(obj: Any, buffer_callback: Any, undo: Any) -> bytes:
    global _plain
    if IN_WORKER and _plain:
        try:
            return pickle.dumps(obj, protocol=5, buffer_callback=buffer_callback)
        except _LargeBuffer:
            raise
        except Exception:
            _plain = False
            undo()
    return cloudpickle.dumps(obj, protocol=5, buffer_callback=buffer_callback)


def decode(header: bytes, payload: bytes) -> Any:
    """Rebuild an object from ``encode``'s frames; raises ``WireError`` if it cannot."""
    segments: list[tuple[str, int]] = pickle.loads(header)
    try:
        buffers = [_open_segment(name, size) for name, size in segments]
        return pickle.loads(payload, buffers=buffers)
    except Exception as exc:
        raise WireError(f"{type(exc).__name__}: {exc}") from exc
    finally:
        for name, _ in segments:
            unlink(name)  # already gone unless opening failed half way


def segment_names(header: bytes) -> Iterator[str]:
    for name, _ in pickle.loads(header):
        yield name


def send(conn: Connection, obj: Any, prefix: str | None) -> None:
    header, payload = encode(obj, prefix)
    try:
        conn.send_frames(header, payload)
    except BaseException:
        for name in segment_names(header):
            unlink(name)
        raise


def recv(conn: Connection) -> Any:
    header = conn.recv_bytes()
    payload = conn.recv_bytes()
    return decode(header, payload)
