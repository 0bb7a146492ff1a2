"""What happens when a stage call raises: retries, then ``on_error``. Written once."""

from __future__ import annotations

import logging
from typing import Any

from .._errors import StageError
from .._observe.counters import WorkerCounters

logger = logging.getLogger("flowpipe")


class ErrorPolicy:
    """Decides, for a failed call, whether to retry, skip the item, or fail the run."""

    __slots__ = ("counters", "handler", "label", "retries")

    def __init__(self, label: str, retries: int, on_error: Any, counters: WorkerCounters) -> None:
        self.label = label
        self.retries = retries
        self.handler = on_error
        self.counters = counters

    def should_retry(self, items: list[Any], index: int, exc: BaseException, attempt: int) -> bool:
        """Call after attempt ``attempt`` (1-based) failed; True means call again.

        Returns False when the items are to be skipped; raises ``StageError``
        when the run must fail.
        """
        self.counters.errors += 1
        if attempt <= self.retries:
            self.counters.retries += 1
            logger.info(
                "stage %r: retrying input #%d (%r), attempt %d", self.label, index, exc, attempt + 1
            )
            return True
        if self.handler == "raise" or not isinstance(exc, Exception):
            raise StageError(
                self.label, index, items[0] if len(items) == 1 else items, cause=exc
            ) from exc
        if self.handler != "skip":
            for item in items:
                try:
                    self.handler(item, exc)
                except Exception as handler_exc:
                    raise StageError(self.label, index, item, cause=handler_exc) from handler_exc
        self.counters.skipped += len(items)
        logger.warning("stage %r: skipped input #%d after %r", self.label, index, exc)
        return False
