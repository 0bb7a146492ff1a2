"""Waiting for a stopped run's workers, and naming the ones that do not leave.

A run that stops (``close()``, ``break``, Ctrl-C, an error) wakes every worker
that waits on a channel or a gate; a worker *inside user code* cannot be woken.
In the caller's process (thread stages, the source's reader, joins) such a
thread cannot be stopped either: it is a daemon thread, left to finish its
call, and named in a warning. A worker whose calls run elsewhere (a worker
process, an actor) is ended by its backend after a grace period, so its
thread here is waited for a little longer.
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, NamedTuple

if TYPE_CHECKING:
    from ..backends.base import Worker

logger = logging.getLogger("flowpipe")

STUCK_WAIT = 1.0  # seconds a stopped run waits for a worker stuck in user code here
JOIN_TIMEOUT = 2.0  # seconds in all it waits for one whose calls run elsewhere (it is killed)


class Owner(NamedTuple):
    """What a worker thread runs: a stage's label (``"source"``, ``"join"``), and
    whether the stage's calls run in that thread (they cannot be stopped then)."""

    stage: str
    in_caller: bool
    source: bool = False  # the thread that reads the source


def join_workers(workers: list[Worker], owners: dict[int, Owner]) -> list[tuple[str, str]]:
    """Join ``workers`` (``owners``: by ``id``), at most ``STUCK_WAIT`` seconds those that
    run user code here and ``JOIN_TIMEOUT`` the others; returns ``(stage, thread name)``
    of each one still running, after logging a warning that names them."""
    start = time.monotonic()
    for w in workers:
        w.join(max(0.0, start + STUCK_WAIT - time.monotonic()))
    for w in workers:
        owner = owners.get(id(w))
        if w.is_alive() and owner is not None and not owner.in_caller:
            w.join(max(0.0, start + JOIN_TIMEOUT - time.monotonic()))
    stuck = [
        (owners[id(w)].stage if id(w) in owners else "?", str(getattr(w, "name", w)))
        for w in workers
        if w.is_alive()
    ]
    if stuck:
        logger.warning(
            "flowpipe: the run stopped, but %d worker thread(s) are still inside a call "
            "and are left running (daemon threads) until it returns: %s",
            len(stuck),
            ", ".join(f"stage {stage!r} (thread {name})" for stage, name in stuck),
        )
    return stuck
