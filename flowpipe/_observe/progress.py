"""``progress=True``: a live tqdm bar (optional extra ``flowpipe[progress]``, imported lazily).

A daemon thread refreshes the bar a few times a second from a stats snapshot:
items done (outputs handed to the caller), their rate, and the current
bottleneck with every stage's throughput. The thread holds no reference to the
run, so a dropped run is still closed by garbage collection.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from .stats import RunStats, format_rate

REFRESH_SECONDS = 0.25
MAX_STAGES_SHOWN = 6  # more stages than this: only the bottleneck is shown


def load_tqdm() -> Any:
    """``tqdm.auto.tqdm`` (a notebook widget in Jupyter); ``ImportError`` without tqdm."""
    from tqdm.auto import tqdm

    # Our own thread refreshes the bar: no tqdm monitor thread outliving the run.
    return type("FlowpipeBar", (tqdm,), {"monitor_interval": 0})


def describe(stats: RunStats) -> str:
    """``bottleneck: detect (busy 97%) | read 30/s, detect 29/s``."""
    text = f"bottleneck: {stats.why}" if stats.bottleneck is not None else "starting"
    if len(stats.stages) <= MAX_STAGES_SHOWN:
        rates = ", ".join(f"{s.name} {format_rate(s.throughput)}/s" for s in stats.stages)
        text += f" | {rates}"
    return text


class ProgressBar:
    """A tqdm bar kept up to date by a thread until ``close()``."""

    def __init__(
        self,
        tqdm: Any,
        snapshot: Callable[[], RunStats],
        done: Callable[[], int],
        total: int | None,
    ) -> None:
        self._snapshot = snapshot
        self._done = done
        self._bar = tqdm(total=total, desc="flowpipe", unit=" items", dynamic_ncols=True)
        self._stop = threading.Event()
        self._closed = False
        self._thread = threading.Thread(target=self._loop, name="flowpipe-progress", daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        while not self._stop.wait(REFRESH_SECONDS):
            self.refresh()

    def refresh(self) -> None:
        try:
            self._bar.n = self._done()
            self._bar.set_postfix_str(describe(self._snapshot()), refresh=False)
            self._bar.refresh()
        except Exception:  # a display problem never breaks the run
            pass

    def close(self) -> None:
        """Stop refreshing, show the final numbers, and close the bar."""
        if self._closed:
            return
        self._closed = True
        self._stop.set()
        if self._thread is not threading.current_thread():
            self._thread.join()
        self.refresh()
        self._bar.close()
