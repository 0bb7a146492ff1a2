"""POSIX shared-memory segments by name: create, open, unlink, sweep.

The lowest layer of the process transport, used by ``wire`` (which pickles
into segments) and ``recycle`` (which reuses them); it imports neither, so
the two do not import each other. Every segment of a run is named
``fp<owner pid>_<run>_...`` (``owner_prefix``), so what a dead process left
behind can be found and swept by name.
"""

from __future__ import annotations

import errno
import importlib
import mmap
import os
import sys
from typing import Any

SHM_DIR = "/dev/shm"  # where POSIX shared memory is visible as files (Linux)
SHM_AVAILABLE = sys.platform != "win32"


def posix_shm() -> Any:
    return importlib.import_module("_posixshmem")  # POSIX only; no type stubs


def allocate(fd: int, size: int) -> None:
    allocate = getattr(os, "posix_fallocate", None)
    if allocate is not None:
        try:
            allocate(fd, 0, size)
            return
        except OSError as exc:
            if exc.errno == errno.ENOSPC:
                raise
    os.ftruncate(fd, size)


def open_for_writing(name: str, size: int) -> mmap.mmap:
    fd = posix_shm().shm_open("/" + name, os.O_RDWR, 0o600)
    try:
        return mmap.mmap(fd, size, flags=mmap.MAP_SHARED)
    finally:
        os.close(fd)


def unlink(name: str) -> None:
    try:
        posix_shm().shm_unlink("/" + name)
    except FileNotFoundError:
        pass


def owner_prefix(pid: int) -> str:
    """The start of the names of every segment of process ``pid``'s runs (a run's
    prefix is this and the run's number): what to sweep once ``pid`` has died."""
    return f"fp{pid}_"


def sweep(prefix: str) -> int:
    """Unlink every segment whose name starts with ``prefix``; return how many."""
    if not os.path.isdir(SHM_DIR):
        return 0
    found = [n for n in os.listdir(SHM_DIR) if n.startswith(prefix)]
    for name in found:
        unlink(name)
    return len(found)
