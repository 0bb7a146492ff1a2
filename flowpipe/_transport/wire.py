"""Messages between processes: cloudpickle, with large buffers in shared memory.

A message is two frames on a ``multiprocessing.connection.Connection``:

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

import importlib
import itertools
import mmap
import os
import pickle
import sys
import threading
from collections.abc import Iterator
from multiprocessing.connection import Connection
from typing import Any

import cloudpickle

SHM_THRESHOLD = 1 << 16  # buffers at least this large travel through shared memory
SHM_DIR = "/dev/shm"  # where POSIX shared memory is visible as files (Linux)
SHM_AVAILABLE = sys.platform != "win32"

_counter = itertools.count()
_counter_lock = threading.Lock()


class WireError(Exception):
    """An object could not be encoded or decoded; ``__cause__`` says why."""


def _shm() -> Any:
    return importlib.import_module("_posixshmem")  # POSIX only; no type stubs


def _new_segment(prefix: str, data: memoryview) -> tuple[str, int]:
    with _counter_lock:
        n = next(_counter)
    name = f"{prefix}{os.getpid()}_{n}"
    size = data.nbytes
    fd = _shm().shm_open("/" + name, os.O_CREAT | os.O_EXCL | os.O_RDWR, 0o600)
    try:
        os.ftruncate(fd, size)
        with mmap.mmap(fd, size) as mm:
            mm[:size] = data
    except BaseException:
        os.close(fd)
        unlink(name)
        raise
    os.close(fd)
    return name, size


def _open_segment(name: str, size: int) -> memoryview:
    fd = _shm().shm_open("/" + name, os.O_RDWR, 0o600)
    try:
        mm = mmap.mmap(fd, size)
    finally:
        os.close(fd)
        unlink(name)  # the mapping stays valid; the name is no longer needed
    return memoryview(mm)


def unlink(name: str) -> None:
    try:
        _shm().shm_unlink("/" + name)
    except FileNotFoundError:
        pass


def sweep(prefix: str) -> int:
    """Unlink every segment whose name starts with ``prefix``; return how many."""
    if not os.path.isdir(SHM_DIR):
        return 0
    found = [n for n in os.listdir(SHM_DIR) if n.startswith(prefix)]
    for name in found:
        unlink(name)
    return len(found)


class _SharedBytes:
    """A large ``bytes``/``memoryview`` item, pickled as an out-of-band buffer."""

    __slots__ = ("data", "kind")

    def __init__(self, data: Any, kind: str) -> None:
        self.data = data
        self.kind = kind

    def __reduce_ex__(self, protocol: Any) -> tuple[Any, ...]:
        return (_rebuild_bytes, (pickle.PickleBuffer(self.data), self.kind))


def _rebuild_bytes(buffer: Any, kind: str) -> Any:
    if kind == "bytes":
        return bytes(buffer)  # bytes own their memory: one copy out of the segment
    return memoryview(buffer)


def _wrap(x: Any) -> Any:
    t = type(x)
    if t is bytes and len(x) >= SHM_THRESHOLD:
        return _SharedBytes(x, "bytes")
    if t is memoryview and x.nbytes >= SHM_THRESHOLD and x.contiguous:
        return _SharedBytes(x, "memoryview")
    return x


def _wrap_items(items: Any) -> Any:
    """Mark large ``bytes``/``memoryview`` items (and tuple fields) for shared memory.

    NumPy arrays and ``bytearray`` need no marking: pickle protocol 5 already
    offers their buffers out of band.
    """
    if type(items) is not list:
        return items
    out = []
    for x in items:
        if type(x) is tuple:
            out.append(tuple(_wrap(f) for f in x))
        else:
            out.append(_wrap(x))
    return out


def encode(obj: Any, prefix: str | None) -> tuple[bytes, bytes]:
    """Pickle ``obj``; large buffers go to new segments named ``prefix...``.

    ``prefix=None`` keeps every buffer in band (no shared memory).
    Raises ``WireError`` (no segment is left behind) when ``obj`` cannot be pickled.
    """
    segments: list[tuple[str, int]] = []

    def out_of_band(buf: pickle.PickleBuffer) -> bool:
        try:
            raw = buf.raw()
        except BufferError:  # not contiguous: pickle copies it in band
            return True
        if prefix is None or raw.nbytes < SHM_THRESHOLD:
            return True
        segments.append(_new_segment(prefix, raw))
        return False

    try:
        payload = cloudpickle.dumps(
            _wrap_items(obj) if prefix is not None else obj,
            protocol=5,
            buffer_callback=out_of_band,
        )
    except BaseException as exc:
        for name, _ in segments:
            unlink(name)
        if isinstance(exc, Exception):
            raise WireError(f"{type(exc).__name__}: {exc}") from exc
        raise
    return pickle.dumps(segments, protocol=5), payload


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
        conn.send_bytes(header)
        conn.send_bytes(payload)
    except BaseException:
        for name in segment_names(header):
            unlink(name)
        raise


def recv(conn: Connection) -> Any:
    header = conn.recv_bytes()
    payload = conn.recv_bytes()
    return decode(header, payload)
