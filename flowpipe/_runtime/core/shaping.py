"""How a worker takes its input: slices sized to their cost, batches, windows.

A slice holds about ``SliceSizer.target`` seconds of work (and, for a worker
elsewhere, a bounded number of bytes of large buffers); once the input has
ended, ``slice_size`` hands out the tail in halving slices. A window stage
takes sliding windows (``WindowTaker``) that its workers share.
"""

from __future__ import annotations

import threading
from collections import deque
from typing import Any

from ..._transport.buffer import Channel, payload_bytes

MAX_SLICE = 1024
SLICE_TARGET_SECONDS = (
    0.0005  # aim for this much work per slice: amortise hand-offs, keep latency low
)


class WindowTaker:
    """Turns a stage's input stream into sliding windows, shared by the stage's workers.

    The first window is the first ``size`` items; then one every ``stride`` items.
    The lock keeps window state and the channel's slice numbering in one order.
    """

    def __init__(self, channel: Channel, size: int, stride: int) -> None:
        self.channel = channel
        self.size = size
        self.stride = stride
        self.recent: deque[Any] = deque(maxlen=size)
        self.seen = 0
        self.lock = threading.Lock()

    def take(self, max_n: int, min_n: int = 1, timeout: float | None = None) -> Any:
        with self.lock:
            got = self.channel.take(max_n, min_n, timeout)
            if got is None:
                return None
            seq, offset, items = got
            windows: list[Any] = []
            for x in items:
                self.recent.append(x)
                self.seen += 1
                if self.seen >= self.size and (self.seen - self.size) % self.stride == 0:
                    windows.append(tuple(self.recent))
            return seq, offset, windows


class SliceSizer:
    """Adapts how many items a worker takes at once to the measured cost per item.

    A slice holds about ``target`` seconds of work, and, where ``byte_budget`` is
    set (a worker elsewhere), about that many bytes of large buffers in or out:
    enough work to amortise one hand-off, few enough frames in flight that their
    segments are reused and the next stage can start on the first of them.
    """

    __slots__ = ("byte_budget", "cost", "limit", "size", "target")

    def __init__(
        self, limit: int, target: float = SLICE_TARGET_SECONDS, byte_budget: int | None = None
    ) -> None:
        self.limit = max(1, min(limit, MAX_SLICE))
        self.target = target
        self.byte_budget = byte_budget
        self.size = 1
        self.cost = 0.0

    def update(self, n: int, seconds: float, nbytes: int = 0) -> None:
        """``n`` items (entries) took ``seconds``; ``nbytes``: their large buffers."""
        if n == 0:  # a window stage may take items that complete no window yet
            return
        per_item = seconds / n
        self.cost = per_item if self.cost == 0.0 else 0.7 * self.cost + 0.3 * per_item
        wanted = int(self.target / self.cost) if self.cost > 0 else self.limit
        if self.byte_budget is not None and nbytes > 0:
            wanted = min(wanted, self.byte_budget * n // nbytes)
        self.size = max(1, min(self.limit, wanted, self.size * 4))


def slice_size(sizer: SliceSizer, inp: Channel) -> int:
    """The sizer's size, but once the stream has ended at most half of what is left.

    The last items then go out in ever smaller slices (guided self-scheduling):
    the next stage starts on the first of them while the rest are worked on,
    instead of waiting for one last full slice (50 ms between processes) at the
    end of every run.
    """
    size = sizer.size
    if size > 1 and inp.producers <= 0:
        size = min(size, max(1, (len(inp) + 1) // 2))
    return size


def slice_bytes(sizer: SliceSizer, items: list[Any], outputs: list[Any]) -> int:
    """About how many bytes of large buffers a slice took in or gave out (estimated
    from its first entry each way; a handle or bundle knows its own)."""
    if sizer.byte_budget is None:
        return 0
    into = payload_bytes(items[0]) * len(items) if items else 0
    out = payload_bytes(outputs[0]) * len(outputs) if outputs else 0
    return max(into, out)
