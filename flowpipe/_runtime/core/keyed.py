"""Keyed stages (``key=``): every item goes to its key's worker, in input order.

::

    stage Channel ──slice──► KeyRouter ──run (seq, offset, items)──► worker 0's Channel ──► WorkerLoop 0
                             key(item)  ──run──────────────────────► worker 1's Channel ──► WorkerLoop 1
                             cut where the worker changes                      ...

The router takes slices from the stage's own channel (so ``buffer``,
``overflow`` and the stats stay the stage's), computes each item's key, and
cuts the slice into *runs*: consecutive items bound for one worker. It numbers
the runs in input order and keeps each run's offset, and hands each worker its
runs of the slice at once. Each worker's channel is read by that worker alone,
in order, so equal keys are called in input order by one worker (one instance
of a class stage, one worker process, one actor: its replacement after a
crash).

A worker calls one run as a slice, or, where outputs are surely one per input
(``combines_runs``), several of its runs as one slice, and hands each run's
outputs back under its own number: the stage's ``Reorderer`` releases runs by
number, so global input order is kept exactly as for unkeyed slices, and an
error names its input's own position (``loop.remap_error``). Outputs computed
before a call that turned slow leave early run by run (``parts.RunsPartSink``).

Bounds (``ordered=True``): the reorderer's room is a budget per worker
(``KeyedRoom``: a worker runs at most ``AHEAD`` slices ahead of the stage's
output), and the router routes at most about twice the stage's buffer beyond
what has left; ``ordered=False``: each worker's channel holds at most
``RUNS_PER_WORKER`` runs.

Which worker a key gets (``KeyPlaces``): each new key takes a worker that has
no key yet, the first free one from its stable hash on; once every worker has
a key, a new key goes to the worker its stable hash names. So up to
``workers`` keys spread one per worker, keys ``0..n-1`` land on workers
``0..n-1``, and the same keys in the same order make the same choice in every
run (a stable hash: never Python's salted ``hash()`` of a string).
"""

from __future__ import annotations

import sys
import zlib
from collections import deque
from typing import TYPE_CHECKING, Any, Literal

from ..._errors import StageError
from ..._transport.buffer import Aborted, Channel
from .shaping import MAX_SLICE
from .state import Gate, RunState

if TYPE_CHECKING:
    from ..._plan.plan import StageNode

RUNS_PER_WORKER = 64  # runs waiting in one worker's channel, at most (``ordered=False``)
# Slices (of the worker's current size) one worker may have taken and not yet
# released in order (``ordered=True``): how far it may run ahead of a slow key.
AHEAD = 4
Run = tuple[int, int, list[Any]]  # (seq, offset, items): a slice, as a channel cuts one
_MASK = (1 << 64) - 1


def stable_hash(key: Any) -> int:
    """A hash that is the same in every process and run: ints are themselves, strings
    and bytes their CRC-32, tuples combine their parts; anything else ``hash(key)``
    (equal keys still agree, as ``1 == 1.0 == True`` do)."""
    if isinstance(key, int):
        return key & _MASK
    if isinstance(key, str):
        return zlib.crc32(key.encode("utf-8", "surrogatepass"))
    if isinstance(key, (bytes, bytearray)):
        return zlib.crc32(key)
    if isinstance(key, float) and key.is_integer():
        return int(key) & _MASK
    if isinstance(key, tuple):
        h = 0x345678
        for part in key:  # pyright: ignore[reportUnknownVariableType]
            h = (h * 1_000_003 ^ stable_hash(part)) & _MASK
        return h
    return hash(key) & _MASK


class KeyPlaces:
    """Which worker each key goes to (see the module docstring)."""

    __slots__ = ("first", "taken", "workers")

    def __init__(self, workers: int) -> None:
        self.workers = workers
        self.first: dict[Any, int] = {}  # the first ``workers`` keys, one per worker
        self.taken = [False] * workers

    def worker_of(self, key: Any) -> int:
        w = self.first.get(key)  # an unhashable key raises TypeError here
        if w is not None:
            return w
        n = self.workers
        w = stable_hash(key) % n
        if len(self.first) < n:  # a worker is still free: the first from the hash on
            while self.taken[w]:
                w = (w + 1) % n
            self.taken[w] = True
            self.first[key] = w
        return w


class KeyedRoom(Gate):
    """The ``Reorderer``'s room for a keyed stage: a budget of items per worker.

    One shared budget can deadlock here: fast workers fill it with runs that
    wait for a run still queued for a slow worker, which then may not take it.
    Per worker, the worker whose next run is the oldest unreleased one holds
    nothing unreleased (its earlier runs are older still, so released): it can
    always take it. The reorderer releases runs one by one in number order, and
    the router recorded whose each run is and its size (``owners``), so
    ``release`` knows whose budget to give back.
    """

    __slots__ = ("held", "owners", "routed")

    def __init__(self, workers: int) -> None:
        super().__init__(0)  # unused: each worker's bound is ``AHEAD`` of its slices
        self.held = [0] * workers  # items taken and not yet released, per worker
        self.owners: deque[tuple[int, int]] = deque()  # (worker, items) of each run, in order
        self.routed = 0  # items routed and not yet released

    def route(self, owners: list[tuple[int, int]], items: int) -> None:
        """Runs on their way, in order: (worker, items) each (before anyone can take them)."""
        with self._cond:
            self.owners.extend(owners)
            self.routed += items

    def room_to_route(self, bound: int) -> int:
        """Wait until fewer than ``bound`` items are routed and unreleased; how many more
        may go. The router waits only for runs it already routed, which always
        leave in turn (see above), so this never deadlocks."""
        with self._cond:
            while self.routed >= bound and not self._aborted:
                self._cond.wait()
            if self._aborted:
                raise Aborted
            return bound - self.routed

    def has_room(self, w: int, bound: int, wait: bool) -> bool:
        """Whether worker ``w`` holds fewer than ``bound`` items (``wait``: until it does)."""
        with self._cond:
            while self.held[w] >= bound and wait and not self._aborted:
                self._cond.wait()
            if self._aborted:
                raise Aborted
            return self.held[w] < bound

    def hold(self, w: int, n: int) -> None:
        with self._cond:
            self.held[w] += n

    def release(self, n: int = 1) -> None:
        with self._cond:
            for _ in range(n):
                w, items = self.owners.popleft()
                self.held[w] -= items
                self.routed -= items
            self._cond.notify_all()


class Inbox:
    """One worker's channel of runs, the longest slice it wants now (``limit``), and
    whether it may call several runs as one slice (``combine``)."""

    __slots__ = ("channel", "combine", "limit", "room", "stash", "wid")

    def __init__(
        self, channel: Channel, limit: int, room: KeyedRoom | None, wid: int, combine: bool
    ) -> None:
        self.channel = channel
        self.limit = limit
        self.room = room
        self.wid = wid
        self.combine = combine
        self.stash: deque[Run] = deque()  # runs taken from the channel, not yet called

    def take(
        self, wait: bool
    ) -> tuple[int, int, list[Any], list[Run] | None] | Literal[False] | None:
        """The next slice: one run, or (``combine``) consecutive runs of this worker
        up to ``limit`` items, with the runs (``None`` for one). ``None`` at the
        end; ``False`` (not ``wait``ing) if none is ready, or this worker is
        ``AHEAD`` slices ahead of the stage's output."""
        room, stash = self.room, self.stash
        if room is not None and not room.has_room(self.wid, AHEAD * self.limit, wait):
            return False
        if not stash:
            got = self.channel.take(RUNS_PER_WORKER) if wait else self.channel.take_ready(1)
            if not got:
                return got
            stash.extend(got[2])
        first = stash.popleft()
        total, limit = len(first[2]), self.limit
        runs: list[Run] | None = None
        if self.combine:
            if not stash:  # whatever else is ready now
                got = self.channel.take_ready(RUNS_PER_WORKER)
                if got:
                    stash.extend(got[2])
            while stash and total + len(stash[0][2]) <= limit:
                runs = runs or [first]
                runs.append(stash.popleft())
                total += len(runs[-1][2])
        if room is not None:
            room.hold(self.wid, total)
        if runs is None:
            return (*first, None)
        items = [x for run in runs for x in run[2]]
        return first[0], first[1], items, runs


class KeyRouter:
    """Sends each item of a keyed stage to its key's worker, in numbered runs."""

    def __init__(self, node: StageNode, inp: Channel, state: RunState) -> None:
        opts = node.stage.options
        assert opts.key is not None
        self.key = opts.key
        self.label = node.label
        self.inp = inp
        self.state = state
        self.places = KeyPlaces(opts.workers)
        # Ordered: the reorderer gives each run's budget back as it releases it.
        self.room = KeyedRoom(opts.workers) if opts.ordered else None
        if self.room is not None:
            state.gates.append(self.room)  # stopping the run wakes its waiters
        self.inboxes = [
            Inbox(
                # Ordered, the room bounds what is routed (``room_to_route``): a full
                # channel must never keep the router from routing an older run.
                state.channel(
                    RUNS_PER_WORKER if self.room is None else sys.maxsize,
                    name=f"{node.label}-{w}",
                ),
                opts.batch or 1,
                self.room,
                w,
                combines_runs(node),
            )
            for w in range(opts.workers)
        ]
        for inbox in self.inboxes:
            inbox.channel.add_producer()
        self.seq = 0

    def run(self) -> None:
        """The router thread's body: until the stage's input ends, or the run stops."""
        try:
            while (got := self.inp.take(self._room())) is not None:
                self._route(got[1], got[2])
        except Aborted:
            pass
        except BaseException as exc:  # the router never dies silently
            self.state.fail(exc)
        finally:
            for inbox in self.inboxes:
                inbox.channel.close()

    def _room(self) -> int:
        """How many items the next slice may hold: ordered, twice the stage's buffer
        (which the channel sizes by the items' bytes, so large frames count as they
        should) and two per worker may be routed and not yet released."""
        if self.room is None:
            return MAX_SLICE
        bound = 2 * self.inp.capacity + 2 * len(self.inboxes)
        return min(MAX_SLICE, self.room.room_to_route(bound))

    def _route(self, offset: int, items: list[Any]) -> None:
        """Cut the slice into runs, number them, then hand each worker its runs at once
        (one wake-up per worker and slice, however finely the keys interleave)."""
        dest = self._workers_of(offset, items)
        inboxes, n, start = self.inboxes, len(items), 0
        runs: list[list[Run]] = [[] for _ in inboxes]
        owners: list[tuple[int, int]] = []
        seq = self.seq
        while start < n:
            w = dest[start]
            end = min(n, start + inboxes[w].limit)
            for i in range(start + 1, end):
                if dest[i] != w:
                    end = i
                    break
            owners.append((w, end - start))
            runs[w].append((seq, offset + start, items[start:end]))
            seq += 1
            start = end
        self.seq = seq
        if self.room is not None:
            self.room.route(owners, n)
        for inbox, mine in zip(inboxes, runs):
            if mine:
                inbox.channel.put_many(mine)

    def _workers_of(self, offset: int, items: list[Any]) -> list[int]:
        opener = self.state.open_handles  # a handle's key is its value's
        values = opener(list(items)) if opener is not None else items
        key, worker_of = self.key, self.places.worker_of
        dest: list[int] = []
        try:
            for x in values:
                dest.append(worker_of(key(x)))
        except Exception as exc:
            k = len(dest)  # the item whose key failed
            raise key_error(self.label, offset + k, values[k], exc) from exc
        return dest


def combines_runs(node: StageNode) -> bool:
    """Whether a worker may call several of its runs as one slice: only where the
    outputs are surely one per input (to hand each run its own back) and every
    error is raised at once (``loop.remap_error`` names its input)."""
    opts = node.stage.options
    return node.stage.call_kind == "function" and opts.on_error == "raise" and not opts.retries


def key_error(label: str, index: int, item: Any, exc: Exception) -> StageError:
    """The run's error when ``key(item)`` raised (or gave an unhashable key)."""
    err = StageError(label, index, item, cause=exc)
    err.args = (f"{err.args[0]} (in its key= function)",)
    return err
