"""Starting a helper interpreter: a worker process, or the fork server.

Both are fresh Python interpreters (``python -c``, never a fork of the
caller, which runs threads) that import flowpipe from where the caller does,
get two descriptors (a socket to the caller and the read end of a lifeline
pipe, which reaches end-of-file when the caller dies), live in a session of
their own (Ctrl-C in a terminal reaches only the caller) and read nothing
from the caller's standard input.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")

_PACKAGE_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def interpreter(
    call: str, fds: tuple[int, ...], env: dict[str, str] | None = None
) -> subprocess.Popen[bytes]:
    """A fresh interpreter running ``call`` (a statement that may use the ``fds``);
    ``env``: variables to set in it, over the caller's."""
    return subprocess.Popen(
        [sys.executable, "-c", f"import sys; sys.path.insert(0, {_PACKAGE_ROOT!r}); {call}"],
        pass_fds=fds,
        stdin=subprocess.DEVNULL,  # output goes where the caller's goes; input is not theirs
        start_new_session=True,  # Ctrl-C in a terminal goes to the caller only
        env={**os.environ, **env} if env else None,
    )


def with_socket_and_lifeline(
    start: Callable[[int, int, tuple[int, int]], T], kind: socket.SocketKind = socket.SOCK_STREAM
) -> tuple[socket.socket, int, T]:
    """``start(socket_fd, lifeline_fd, near)`` with the far ends of a new socket pair
    and lifeline pipe (``near``: our ends, for a forked copy of us to close); returns
    our socket end, the lifeline's write end (close it to tell the process we are
    gone) and what ``start`` returned. The far ends are closed here once ``start``
    has handed them on; nothing is left open if it fails."""
    ours, theirs = socket.socketpair(socket.AF_UNIX, kind)
    lifeline_read, lifeline = os.pipe()
    try:
        started = start(theirs.fileno(), lifeline_read, (ours.fileno(), lifeline))
    except BaseException:
        ours.close()
        os.close(lifeline)
        raise
    finally:
        theirs.close()
        os.close(lifeline_read)
    return ours, lifeline, started
