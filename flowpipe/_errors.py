"""The exceptions flowpipe raises.

::

    Exception
     ├── FlowpipeError                 base of every error flowpipe itself raises
     │    ├── StageError               a stage (or the source) failed on an item
     │    │    ├── WorkerCrashed       a worker process died while working on an item
     │    │    └── StageTimeout        a call ran past the stage's ``timeout``
     │    ├── RunClosed                put()/get() on a live run that is closed
     │    └── Stalled                  no stage made progress for ``stall_timeout`` seconds
     ├── ValueError
     │    └── StageOptionError         a bad option given to @stage (also a FlowpipeError)
     └── TypeError
          └── GraphError               pieces that cannot be composed (also a FlowpipeError)

Bad building blocks subclass the stdlib type users already catch, so
``except ValueError`` around ``@stage(workers=0)`` keeps working.
"""

from __future__ import annotations

import os
from types import TracebackType
from typing import Any

__all__ = [
    "FlowpipeError",
    "GraphError",
    "RunClosed",
    "StageError",
    "StageOptionError",
    "StageTimeout",
    "Stalled",
    "WorkerCrashed",
]


class FlowpipeError(Exception):
    """Raised for every failure that flowpipe reports itself."""


class StageOptionError(FlowpipeError, ValueError):
    """Raised when ``@stage`` gets an option value it cannot use."""

    def __init__(self, stage: str, option: str, problem: str) -> None:
        self.stage = stage
        self.option = option
        super().__init__(f"stage {stage!r}: option {option}={problem}")


class GraphError(FlowpipeError, TypeError):
    """Raised when pieces cannot be composed into a pipeline, or a run is called wrongly."""


class RunOptionError(FlowpipeError, ValueError):
    """A bad argument to ``run``/``iter``/``start``: an unknown backend or option."""


class MissingExtra(FlowpipeError, ImportError):
    """A feature needs an optional extra that is not installed; the message names it."""


class RunClosed(FlowpipeError):
    """Raised by ``put``/``get`` on a live run that was closed or has failed."""


TEXT_LIMIT = 10_000  # characters of an exception's text that an error message keeps


def cut(text: str, limit: int = TEXT_LIMIT) -> str:
    """``text``, or its first ``limit`` characters with its length noted."""
    if len(text) <= limit:
        return text
    return f"{text[:limit]}... [cut: {len(text)} characters in all]"


def exception_text(exc: BaseException) -> str:
    """``str(exc)`` whatever its ``__str__`` does (``<unprintable Odd>`` if it raises),
    cut to ``TEXT_LIMIT``: a huge message must not be copied into every error."""
    try:
        return cut(str(exc))
    except Exception:
        return f"<unprintable {type(exc).__name__}>"


def safe_repr(obj: Any) -> str:
    """``repr(obj)`` whatever its ``__repr__`` does, cut to ``TEXT_LIMIT`` (for logs)."""
    try:
        return cut(repr(obj))
    except Exception:
        return f"<unprintable {type(obj).__name__}>"


_PACKAGE = os.path.dirname(os.path.abspath(__file__)) + os.sep  # flowpipe's own files


def _internal(tb: TracebackType) -> bool:
    return tb.tb_frame.f_code.co_filename.startswith(_PACKAGE)


def hide_internal_frames(exc: BaseException) -> None:
    """Drop flowpipe's frames from the top of ``exc``'s traceback (the calls that led
    into the stage's code), so it starts at the user's code; kept whole when no user
    frame follows (an error of flowpipe's own)."""
    tb = exc.__traceback__
    first = tb
    while first is not None and _internal(first):
        first = first.tb_next
    if first is not None and first is not tb:
        exc.__traceback__ = first


def _short_repr(item: Any, limit: int = 80) -> str:
    try:
        text = repr(item)
    except Exception:  # a broken __repr__ must not hide the real error
        text = f"<{type(item).__name__} object>"
    return text if len(text) <= limit else text[: limit - 3] + "..."


class StageError(FlowpipeError):
    """Raised when a stage (or the source) fails on an item; the original is ``__cause__``.

    ``stage`` is the stage's name (``"source"`` for the input iterator), ``index``
    the position of the failing item among that stage's inputs (for a batch, the
    first item of the batch), ``item`` the input itself (``None`` for the source).
    For a source stage (``yielded=True``) ``index`` counts the items it yielded
    before it failed.
    """

    def __init__(
        self,
        stage: str,
        index: int | None,
        item: Any = None,
        *,
        cause: BaseException | None = None,
        remote_traceback: str | None = None,
        yielded: bool = False,
    ) -> None:
        self.stage = stage
        self.index = index
        self.item = item
        self.remote_traceback = remote_traceback
        if cause is not None:  # its traceback starts at the user's code
            hide_internal_frames(cause)
        if index is None:
            where = ""
        elif yielded:  # a source stage has no input: say how far it got
            where = f" after yielding {index} item{'s' * (index != 1)}"
        else:
            where = f" at input #{index} ({_short_repr(item)})"
        what = "" if cause is None else f": {type(cause).__name__}: {exception_text(cause)}"
        message = f"stage {stage!r} failed{where}{what}"
        if remote_traceback:
            message += f"\n\nRemote traceback:\n{remote_traceback.rstrip()}"
        super().__init__(message)

    def __reduce__(self) -> tuple[Any, ...]:
        return (
            _rebuild_stage_error,
            (type(self), self.stage, self.index, self.args[0], self.remote_traceback),
        )


def _rebuild_stage_error(
    cls: type[StageError], stage: str, index: int | None, message: str, tb: str | None
) -> StageError:
    err = cls.__new__(cls)
    Exception.__init__(err, message)
    err.stage, err.index, err.item, err.remote_traceback = stage, index, None, tb
    return err


class WorkerCrashed(StageError):
    """Raised when a worker process dies (segfault, ``os._exit``, killed) mid-item."""


class StageTimeout(StageError):
    """Raised when a call runs longer than the stage's ``timeout`` (and ``retries`` and
    ``on_error`` did not deal with it); ``__cause__`` is a ``CallTimedOut``."""


class CallTimedOut(TimeoutError):
    """What a call past its stage's ``timeout`` counts as: the exception that ``retries``
    and ``on_error`` see (an ``on_error`` callable gets it), and ``StageTimeout``'s cause."""


class Stalled(FlowpipeError):
    """Raised (with ``on_stall="raise"``) when no stage took or handed on an item for
    ``stall_timeout`` seconds while work remained. ``stages`` names the stalled
    stages, ``stacks`` holds every worker's stack (also in the message)."""

    def __init__(self, stages: list[str], seconds: float, stacks: str) -> None:
        self.stages = stages
        self.seconds = seconds
        self.stacks = stacks
        super().__init__(
            f"the run is stalled: no item moved for {seconds:.1f} s while work remains; "
            f"stalled: {', '.join(stages)}\n\nStacks:\n{stacks.rstrip()}"
        )

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.stages, self.seconds, self.stacks))
