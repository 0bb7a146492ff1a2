"""Several live feeds read fairly into one source: ``flowpipe.sources``.

::

    feed "cam0" ──thread──► buffer (its own size and overflow) ──┐
    feed "cam1" ──thread──► buffer                               ├─ round-robin ──► Tagged(source, seq, item)
    feed "cam2" ──thread──► buffer                               ┘   (feeds with one ready)

Each feed is read in a thread of its own into a bounded buffer of its own,
so a slow pipeline drops *that* feed's oldest items (``drop_oldest``), never
another feed's; the reader takes one item at a time from the next feed that
has one ready. ``seq`` counts a feed's items as they are read (dropped ones
included), so a gap in a feed's ``seq`` is a drop.

A run reads a ``Sources`` like any iterable. Two hooks tie it to the run
(``core/feed.py`` looks for them, the core never imports this module): the
reader's ``_flowpipe_interrupt`` wakes it when the run stops, and
``Sources._flowpipe_dropped`` gives the drops for the run's source row. A
stopped reader stops every feed thread, and each thread closes its feed's
iterator (a generator's ``finally`` runs) in the thread that ran it.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Hashable, Iterable, Iterator, Mapping, Sequence
from typing import Any, NamedTuple

from ._errors import StageError

OVERFLOWS = ("drop_oldest", "drop_newest", "block")
JOIN_SECONDS = 1.0  # how long closing waits in all for the feed threads to leave


class Tagged(NamedTuple):
    """One item of one feed of ``flowpipe.sources``.

    ``source`` is the feed's name (its key, or its position in a sequence),
    ``seq`` counts that feed's items from 0 (a gap means items were dropped),
    ``item`` is what the feed gave.
    """

    source: Hashable
    seq: int
    item: Any


class _Feed:
    """One feed's buffer, counts and end; guarded by the reader's condition."""

    __slots__ = ("buffer", "done", "dropped", "name", "read")

    def __init__(self, name: Hashable) -> None:
        self.name = name
        self.buffer: deque[Tagged] = deque()
        self.read = 0  # items read from the feed (the next ``seq``)
        self.dropped = 0
        self.done = False


def _named(feeds: object) -> list[tuple[Hashable, Iterable[Any]]]:
    if isinstance(feeds, Mapping):
        pairs: list[tuple[Any, Any]] = list(feeds.items())  # pyright: ignore[reportUnknownArgumentType, reportUnknownMemberType]
    elif isinstance(feeds, Sequence) and not isinstance(feeds, (str, bytes)):
        pairs = list(enumerate(feeds))  # pyright: ignore[reportUnknownArgumentType]
    else:
        raise TypeError(
            "flowpipe.sources(feeds): feeds must be a dict of name -> iterable or a list of "
            f"iterables, got {type(feeds).__name__}"
        )
    if not pairs:
        raise ValueError("flowpipe.sources(feeds): no feeds given")
    for name, feed in pairs:
        if not isinstance(feed, Iterable) or isinstance(feed, (str, bytes)):
            raise TypeError(
                f"flowpipe.sources(feeds): feed {name!r} must be an iterable, "
                f"got {type(feed).__name__}"
            )
    return pairs


def sources(
    feeds: Mapping[Hashable, Iterable[Any]] | Sequence[Iterable[Any]],
    *,
    buffer: int = 1,
    overflow: str = "drop_oldest",
) -> Sources:
    """Read several feeds fairly, each in its own thread into its own bounded buffer.

    ``feeds``: a dict name -> iterable, or a sequence (names 0..n-1). Each
    feed keeps at most ``buffer`` items waiting; when it is full, ``overflow``
    says what gives: ``"drop_oldest"`` (keep the newest: live cameras),
    ``"drop_newest"``, or ``"block"`` (the feed waits: nothing is lost).
    Iterating gives ``Tagged(source, seq, item)``, taken round-robin from the
    feeds that have one ready; it ends when every feed has ended.
    """
    pairs = _named(feeds)
    if isinstance(buffer, bool) or not isinstance(buffer, int) or buffer < 1:  # pyright: ignore[reportUnnecessaryIsInstance]  # callers without types
        raise ValueError(f"flowpipe.sources: buffer={buffer!r}: must be an int >= 1")
    if overflow not in OVERFLOWS:
        raise ValueError(
            f"flowpipe.sources: overflow={overflow!r}: must be one of {', '.join(OVERFLOWS)}"
        )
    return Sources(pairs, buffer, overflow)


class Sources:
    """What ``flowpipe.sources`` returns: an iterable of ``Tagged`` items, read once.

    ``dropped`` counts, per feed name, the items its buffer dropped.
    """

    def __init__(self, pairs: list[tuple[Hashable, Iterable[Any]]], buffer: int, overflow: str):
        self._pairs = pairs
        self.buffer = buffer
        self.overflow = overflow
        self._feeds = [_Feed(name) for name, _ in pairs]
        self._reader: _Reader | None = None

    @property
    def names(self) -> list[Hashable]:
        return [f.name for f in self._feeds]

    @property
    def dropped(self) -> dict[Hashable, int]:
        """Items each feed's buffer dropped so far, by feed name."""
        return {f.name: f.dropped for f in self._feeds}

    def _flowpipe_dropped(self) -> int:
        """All the drops, for the run's stats (its source row)."""
        return sum(f.dropped for f in self._feeds)

    def __iter__(self) -> Iterator[Tagged]:
        if self._reader is not None:
            raise RuntimeError(
                "a flowpipe.sources(...) object is read once: make a new one for another run"
            )
        self._reader = _Reader(self)
        return self._reader

    def close(self) -> None:
        """Stop every feed thread (also done when the run it feeds stops)."""
        if self._reader is not None:
            self._reader.close()

    def __repr__(self) -> str:
        names = ", ".join(repr(n) for n in self.names)
        return f"flowpipe.sources([{names}], buffer={self.buffer}, overflow={self.overflow!r})"


class _Board:
    """What the reader and the feed threads share (the threads hold no reference to
    the reader, so dropping it stops them)."""

    __slots__ = ("capacity", "cond", "error", "feeds", "overflow", "stopped")

    def __init__(self, feeds: list[_Feed], capacity: int, overflow: str) -> None:
        self.feeds = feeds
        self.capacity = capacity
        self.overflow = overflow
        self.cond = threading.Condition(threading.Lock())
        self.stopped = False
        self.error: BaseException | None = None

    def stop(self) -> None:
        with self.cond:
            self.stopped = True
            self.cond.notify_all()

    def put(self, feed: _Feed, item: Any) -> bool:
        """Buffer one item by the overflow policy; False once stopped."""
        with self.cond:
            tagged = Tagged(feed.name, feed.read, item)
            feed.read += 1
            buf = feed.buffer
            while len(buf) >= self.capacity and not self.stopped:
                if self.overflow == "block":
                    self.cond.wait()
                    continue
                feed.dropped += 1
                if self.overflow == "drop_newest":
                    return True
                buf.popleft()
            if self.stopped:
                return False
            buf.append(tagged)
            self.cond.notify_all()
            return True

    def failed(self, feed: _Feed, exc: Exception) -> None:
        """A feed raised: the first such error ends the reading, naming the feed."""
        err = StageError(f"source {feed.name!r}", feed.read, cause=exc, yielded=True)
        err.__cause__ = exc
        with self.cond:
            if self.error is None:
                self.error = err
            self.stopped = True
            self.cond.notify_all()


def _read_feed(board: _Board, feed: _Feed, source: Iterable[Any]) -> None:
    """The body of a feed thread: read the feed into its buffer until it ends or the
    reading stops; then close the feed's iterator if it was left unfinished."""
    iterator: Any = None
    stopped = False
    try:
        iterator = iter(source)
        for item in iterator:
            if not board.put(feed, item):
                stopped = True
                break
    except Exception as exc:
        board.failed(feed, exc)
    finally:
        with board.cond:
            feed.done = True
            board.cond.notify_all()
        close = getattr(iterator, "close", None)
        if stopped and close is not None:
            try:
                close()  # the feed generator's cleanup, in the thread that ran it
            except Exception:
                pass


class _Reader:
    """The iterator: starts a thread per feed, hands items on round-robin."""

    def __init__(self, owner: Sources) -> None:
        feeds = owner._feeds  # pyright: ignore[reportPrivateUsage]  # its own parts
        self._board = board = _Board(feeds, owner.buffer, owner.overflow)
        self._next = 0  # the feed to look at first
        self._threads = [
            threading.Thread(
                target=_read_feed,
                args=(board, feed, source),
                name=f"flowpipe-feed-{feed.name}",
                daemon=True,
            )
            for feed, (_, source) in zip(feeds, owner._pairs)  # pyright: ignore[reportPrivateUsage]
        ]
        for t in self._threads:
            t.start()

    def __iter__(self) -> _Reader:
        return self

    def __next__(self) -> Tagged:
        board = self._board
        feeds, n = board.feeds, len(board.feeds)
        with board.cond:
            while True:
                if board.error is not None:
                    raise board.error
                if board.stopped:
                    raise StopIteration
                for k in range(n):
                    feed = feeds[(self._next + k) % n]
                    if feed.buffer:
                        self._next = (self._next + k + 1) % n
                        got = feed.buffer.popleft()
                        board.cond.notify_all()  # a blocked feed may go on
                        return got
                if all(f.done for f in feeds):
                    raise StopIteration
                board.cond.wait()

    def _flowpipe_interrupt(self) -> None:
        """The run stopped: wake the reader and every feed thread (they leave)."""
        self._board.stop()

    def close(self) -> None:
        """Stop every feed thread; wait a while for them (a feed stuck in its own
        ``next()`` leaves when that returns)."""
        self._board.stop()
        deadline = time.monotonic() + JOIN_SECONDS
        for t in self._threads:
            t.join(max(0.0, deadline - time.monotonic()))

    def __del__(self) -> None:
        try:
            self._board.stop()
        except Exception:
            pass
