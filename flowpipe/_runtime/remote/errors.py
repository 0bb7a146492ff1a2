"""Errors of a worker elsewhere, rebuilt in the caller as ``StageError``s.

The original exception travels pickled on its own (``messages.Failure``) and
becomes the ``__cause__``; its remote traceback is kept as text. An exception
that cannot be rebuilt here stays as its text (``RemoteFailure``).
"""

from __future__ import annotations

from typing import Any

import cloudpickle

from ..._errors import CallTimedOut, StageError, StageTimeout, WorkerCrashed
from .messages import Failure
from .server import RemoteFailure


class WorkerDied(Exception):
    """The worker went away mid-conversation (its process ended, its actor died).

    ``blameless``: it went away for a reason no input can have caused (the node it
    ran on was lost), so no input is searched for: without ``retries`` the run fails
    at once, naming the stage.
    """

    blameless = False


class Overdue(Exception):
    """The worker has not answered by the deadline (a call past the stage's ``timeout``)."""


def of_slice(offset: int) -> str:
    """How an error names a slice whose failing item is not known."""
    return f"of the slice from input #{offset} on"


def stage_error(failure: Failure, offset: int, where: str, label: str | None = None) -> StageError:
    """Rebuild a worker's error: the original exception as ``__cause__``, its traceback
    text; ``offset``: the slice's first input; ``where``: "worker process", "Ray actor";
    ``label``: the stage's name, where the worker may not know it (it failed to load the
    stage, and with it the name)."""
    named, index, item, exc_bytes, summary, text, what = failure
    label = named if label is None else label
    cause: BaseException
    try:
        cause = cloudpickle.loads(exc_bytes) if exc_bytes is not None else RemoteFailure(summary)
    except Exception:  # the exception class cannot be rebuilt here: keep its text
        cause = RemoteFailure(summary)
    problem = cause
    if what == "input":
        problem = RemoteFailure(  # which input of the slice: not known
            f"an input ({of_slice(offset)}) could not be rebuilt in the {where}: {summary}"
        )
        index, item = None, None
    elif what == "output":  # which output of the slice: not known
        problem = RemoteFailure(
            f"an output ({of_slice(offset)}) cannot be sent back from the {where}: {summary}"
        )
        index = None
    if problem is not cause:
        problem.__cause__ = cause
    if what in ("start", "close"):
        index = None
    error = StageTimeout if isinstance(problem, CallTimedOut) else StageError
    err = error(label, index, item, cause=problem, remote_traceback=text)
    err.__cause__ = problem
    return err


def died_in_close(label: str, where: str, how: str) -> WorkerCrashed:
    """A worker that died in a class stage's ``close()`` at the end of a run: that fails
    the run, as an exception ``close()`` raises does."""
    crash = WorkerDied(f"the {where} died ({how}) in the stage's close()")
    err = WorkerCrashed(label, None, cause=crash)
    err.__cause__ = crash
    return err


def unsendable_error(
    label: str, items: list[Any], offset: int, exc: BaseException, where: str
) -> StageError:
    """A slice that could not be sent to a worker: name its first item pickle refuses."""
    index, item = offset, None
    for k, x in enumerate(items):
        try:
            cloudpickle.dumps(x)
        except Exception:
            index, item = offset + k, x
            break
    cause = exc.__cause__ if exc.__cause__ is not None else exc
    problem = RemoteFailure(f"an input cannot be sent to the {where}: {exc}")
    problem.__cause__ = cause
    err = StageError(label, index, item, cause=problem)
    err.__cause__ = problem
    return err
