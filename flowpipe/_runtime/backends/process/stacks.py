"""A worker process's stacks on request, for a run's stall report (``core/stall.py``).

The worker registers ``faulthandler`` on ``SIGUSR1`` to write every thread's
stack to a file of its own (``stacks_file``), chosen by the parent and named
in the ``Environment`` message; only runs with ``stall_timeout`` ask for it.
``faulthandler`` writes from its signal handler without needing the
interpreter, so the stack comes even from a worker stuck in native code. The
parent signals the worker and reads what was added (``read_stacks``); the file
goes when the worker closes (the parent unlinks it) or when the parent dies
(the worker unlinks it before it exits).
"""

from __future__ import annotations

import os
import signal
import time
from typing import IO

READ_WAIT = 1.0  # seconds the parent waits for a worker's stacks
_written: IO[str] | None = None  # the worker's file (faulthandler holds it too)


def stacks_file(pid: int) -> str:
    """Where the worker with ``pid`` writes its stacks."""
    import tempfile  # here: 4 ms that a run without a stall watch need not pay

    return os.path.join(tempfile.gettempdir(), f"flowpipe-stacks-{pid}.txt")


def write_stacks_on_signal(path: str) -> None:
    """In the worker: from now on, ``SIGUSR1`` writes every thread's stack to ``path``."""
    import faulthandler

    global _written
    _written = open(path, "w")  # noqa: SIM115 - kept open for faulthandler
    faulthandler.register(signal.SIGUSR1, file=_written, all_threads=True)


def forget_stacks_file() -> None:
    """In the worker, when the parent died: nobody will unlink the file but us."""
    if _written is not None:
        try:
            os.unlink(_written.name)
        except OSError:
            pass


def read_stacks(pid: int, path: str, what: str) -> str:
    """Signal the worker and return what it wrote, headed by ``what``."""
    try:
        before = os.path.getsize(path)
        os.kill(pid, signal.SIGUSR1)
    except OSError as exc:
        return f"{what}: no stacks ({exc})\n"
    deadline, last = time.monotonic() + READ_WAIT, -1
    while time.monotonic() < deadline:  # polling a file a signal handler writes
        size = os.path.getsize(path)
        if size > before and size == last:
            break
        last = size
        time.sleep(0.02)
    with open(path) as f:
        f.seek(before)
        text = f.read()
    return f"{what}:\n{text or '(none came)'}\n"


def unlink(path: str) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass
