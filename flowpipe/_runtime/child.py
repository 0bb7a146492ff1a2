"""The body of a worker process: receive slices, call the stage, send outputs back.

Started by ``process.WorkerProcess`` as a fresh interpreter
(``python -c "...child.main(conn_fd, lifeline_fd)"``): nothing of the
parent's ``__main__`` is imported or run here, so a script without an
``if __name__ == "__main__":`` guard is safe, and functions defined in
``__main__``, a notebook or ``python -c`` arrive by value through cloudpickle.

Conversation (``wire`` messages on one socket)::

    parent                                  child
    sys.path            ───────────────►
    (label, stage, prefix) ────────────►    build the callable (a class stage's instance)
                        ◄───────────────    ("ready",) | ("error", ...)
    ("call", items, offset) ───────────►    SliceCaller.call(items, offset)
                        ◄───────────────    ("ok", outputs, errors, retries, skipped) | ("error", ...)
    ("close",)          ───────────────►    stage.close(); exit 0

The child ignores SIGINT and lives in its own session: Ctrl-C reaches only the
parent, which ends its workers. If the parent dies, the lifeline pipe reaches
end-of-file and a watchdog thread ends this process at once.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import traceback
from multiprocessing.connection import Connection
from typing import Any

EXIT_PARENT_GONE = 70


def _watch_parent(lifeline_fd: int) -> None:
    try:
        while os.read(lifeline_fd, 1):
            pass
    except OSError:
        pass
    os._exit(EXIT_PARENT_GONE)  # the parent is gone: no one will read our outputs


def _error_reply(
    label: str, index: int | None, item: Any, exc: BaseException, what: str = ""
) -> tuple[Any, ...]:
    """An error as a message: the exception pickled on its own so that the parent can
    fall back to its text when the exception itself cannot travel."""
    import cloudpickle

    text = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    try:
        exc_bytes: bytes | None = cloudpickle.dumps(exc)
    except Exception:
        exc_bytes = None
    try:
        cloudpickle.dumps(item)
    except Exception:
        item = None
    return ("error", label, index, item, exc_bytes, f"{type(exc).__name__}: {exc}", text, what)


def serve(conn: Connection) -> int:
    from .._errors import StageError
    from .._observe.counters import WorkerCounters
    from .._plan.plan import StageNode
    from .._transport import wire
    from .engine import AsyncSliceCaller, SliceCaller, close_callable

    sys.path[:] = wire.recv(conn)
    label = "?"
    try:
        label, node, prefix = wire.recv(conn)
        assert isinstance(node, StageNode)
        fn = node.stage.make_callable()
    except BaseException as exc:
        wire.send(conn, _error_reply(label, None, None, exc, "start"), None)
        return 1
    counters = WorkerCounters()
    caller: Any = (
        AsyncSliceCaller(node, fn, counters)
        if node.stage.call_kind == "async"
        else SliceCaller(node, fn, counters)
    )
    wire.send(conn, ("ready",), None)
    try:
        while True:
            try:
                message = wire.recv(conn)
            except EOFError:
                return 0
            except wire.WireError as exc:  # an input that cannot be rebuilt here
                wire.send(
                    conn, _error_reply(label, None, None, exc.__cause__ or exc, "input"), None
                )
                return 1
            if message[0] == "close":
                return 0
            _, items, offset = message
            try:
                outputs = caller.call(items, offset)
            except StageError as err:
                cause = err.__cause__ if err.__cause__ is not None else err
                wire.send(conn, _error_reply(label, err.index, err.item, cause), None)
                return 1
            except BaseException as exc:
                wire.send(conn, _error_reply(label, offset, None, exc), None)
                return 1
            counts = (counters.errors, counters.retries, counters.skipped)
            counters.errors = counters.retries = counters.skipped = 0
            try:
                # Large outputs stay in shared memory; the parent gets handles.
                wire.send(conn, ("ok", wire.pack_outputs(outputs, prefix), *counts), None)
            except wire.WireError as exc:  # an output that cannot be pickled
                wire.send(
                    conn, _error_reply(label, offset, None, exc.__cause__ or exc, "output"), None
                )
                return 1
    finally:
        try:
            if isinstance(caller, AsyncSliceCaller):
                caller.close()
        finally:
            close_callable(fn)


def main(conn_fd: int, lifeline_fd: int) -> None:
    from .._transport import wire

    wire.IN_WORKER = True  # shared-memory handles arriving here are mapped, not kept
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent handles Ctrl-C and ends us
    threading.Thread(target=_watch_parent, args=(lifeline_fd,), daemon=True).start()
    conn = Connection(conn_fd)
    try:
        code = serve(conn)
    except (EOFError, OSError):  # the parent hung up: nothing left to report to
        code = 0
    conn.close()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)  # no interpreter teardown: user threads must not keep a worker alive
