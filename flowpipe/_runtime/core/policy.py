"""What happens when a stage call raises: retries, then ``on_error``. Written once.

In a worker elsewhere (a process, an actor) the policy decides the same way,
but what the caller must see happen (the log lines, an ``on_error`` callable
called with the item) is recorded as *events* instead, sent back with the
slice's outputs and replayed in the caller's process (``replay``): a handler
that appends to a list of the caller's sees every bad item on every backend.
"""

from __future__ import annotations

import logging
from typing import Any, NamedTuple

from ..._errors import CallTimedOut, StageError, StageTimeout, safe_repr
from ..._observe.counters import WorkerCounters

logger = logging.getLogger("flowpipe")


class PolicyEvent(NamedTuple):
    """A retry (``what``: the attempt that failed) or a skip (``what``: the items skipped)
    decided in a worker elsewhere, for the caller to replay."""

    kind: str  # "retry" | "skip"
    input_index: int
    what: Any
    exc: BaseException


class ErrorPolicy:
    """Decides, for a failed call, whether to retry, skip the item, or fail the run."""

    __slots__ = ("counters", "events", "handler", "label", "retries")

    def __init__(self, label: str, retries: int, on_error: Any, counters: WorkerCounters) -> None:
        self.label = label
        self.retries = retries
        self.handler = on_error
        self.counters = counters
        # In a worker elsewhere: what to replay in the caller's process (see above).
        self.events: list[PolicyEvent] | None = None

    def should_retry(self, items: list[Any], index: int, exc: BaseException, attempt: int) -> bool:
        """Call after attempt ``attempt`` (1-based) failed; True means call again.

        Returns False when the items are to be skipped; raises ``StageError``
        when the run must fail.
        """
        self.counters.errors += 1
        if attempt <= self.retries:
            self.counters.retries += 1
            if self.events is not None:
                self.events.append(PolicyEvent("retry", index, attempt, exc))
            else:
                self._log_retry(index, attempt, exc)
            return True
        if self.handler == "raise" or not isinstance(exc, Exception):
            error = StageTimeout if isinstance(exc, CallTimedOut) else StageError
            raise error(
                self.label, index, items[0] if len(items) == 1 else items, cause=exc
            ) from exc
        self.counters.skipped += len(items)
        if self.events is not None:
            self.events.append(PolicyEvent("skip", index, items, exc))
        else:
            self._skip(index, items, exc)
        return False

    def replay(self, events: list[PolicyEvent]) -> None:
        """What a worker elsewhere recorded, as if it had happened here."""
        for kind, index, what, exc in events:
            if kind == "retry":
                self._log_retry(index, what, exc)
            else:
                self._skip(index, what, exc)

    def _log_retry(self, index: int, attempt: int, exc: BaseException) -> None:
        logger.info(
            "stage %r: retrying input #%d (%s), attempt %d",
            self.label,
            index,
            safe_repr(exc),
            attempt + 1,
        )

    def _skip(self, index: int, items: list[Any], exc: BaseException) -> None:
        if self.handler != "skip":
            for item in items:
                try:
                    self.handler(item, exc)
                except Exception as handler_exc:
                    raise StageError(self.label, index, item, cause=handler_exc) from handler_exc
        logger.warning("stage %r: skipped input #%d after %s", self.label, index, safe_repr(exc))
