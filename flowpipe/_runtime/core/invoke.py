"""Calling user code on a slice of items, with retries and ``on_error``. Written once.

The same ``SliceCaller`` runs a stage in a worker thread (``loop.LocalCaller``)
and in a worker process or actor (``remote.server.SliceServer``), so a stage
behaves the same wherever it runs. Every retry goes through ``retry``: call
again while the stage's ``ErrorPolicy`` allows, then skip (or fail the run).

``part``, when given, receives a generator stage's outputs while the slice is
still running (``outflow.OutputFlow``), and a function stage's outputs computed
before a call that turned slow (``release``); ``call`` returns the rest.
"""

from __future__ import annotations

import itertools
import types
from collections.abc import Callable, Iterable, Iterator
from typing import TYPE_CHECKING, Any, cast

from ..._errors import StageError
from ..._observe.counters import WorkerCounters
from .outflow import HandOnFailed, OutputFlow, Pace
from .policy import ErrorPolicy
from .release import Releaser, Watch
from .release import releaser as process_releaser

if TYPE_CHECKING:
    from ..._plan.plan import StageNode

Part = Callable[[list[Any]], None]  # takes outputs of a slice that is still running


def retry(
    policy: ErrorPolicy,
    items: list[Any],
    index: int,
    exc: Exception,
    again: Callable[[], list[Any]],
    failed: Callable[[], None] | None = None,
) -> list[Any] | None:
    """After a first failed call on ``items`` (from input ``index``): ``again()`` while
    the policy allows, its outputs once it succeeds; ``None`` when the items are skipped.
    ``failed`` runs after each failed retry. Raises ``StageError`` to fail the run."""
    attempt = 1
    while policy.should_retry(items, index, exc, attempt):
        attempt += 1
        try:
            return again()
        except Exception as again_exc:
            if failed is not None:
                failed()
            exc = again_exc
    return None


def close_callable(fn: Any) -> None:
    """Call a class stage instance's optional ``close()``."""
    close = getattr(fn, "close", None)
    if callable(close) and not isinstance(fn, types.FunctionType):
        close()


class SliceCaller:
    """Calls a stage's function on the items of one slice, applying the error policy."""

    __slots__ = ("batch", "fn", "kind", "label", "left_to_skip", "pace", "policy", "releaser")

    def __init__(
        self,
        node: StageNode,
        fn: Callable[..., Any],
        counters: WorkerCounters,
        releaser: Releaser = process_releaser,
    ) -> None:
        opts = node.stage.options
        self.releaser = releaser  # the thread that hands on outputs before a slow call
        self.fn = fn
        self.label = node.label
        self.kind = node.stage.call_kind
        self.batch = opts.batch
        self.policy = ErrorPolicy(node.label, opts.retries, opts.on_error, counters)
        self.pace = Pace()
        self.left_to_skip = 0  # of ``skip``, after the last slice (all its outputs were fewer)

    def call(
        self, items: list[Any], offset: int, part: Part | None = None, skip: int = 0
    ) -> list[Any]:
        """The slice's outputs (those not given to ``part``); ``skip``: drop this many
        of a generator stage's first outputs (handed on by a worker that died)."""
        if self.batch is not None:
            return self._call_batch(items, offset)
        if self.kind == "generator":
            try:
                return self._call_generator(items, offset, part, skip)
            except HandOnFailed as failed:
                raise cast("BaseException", failed.__cause__) from None
        self.left_to_skip = 0
        if part is None or len(items) < 2 or skip:
            out = self._call_function(items, offset, [])
            if skip:  # a re-run after a crash: these outputs left before it
                self.left_to_skip = max(0, skip - len(out))
                return out[skip:]
            return out
        # Outputs computed before a slow call leave without waiting for it (``release``).
        watch = Watch(getattr(part, "now", part))
        self.releaser.add(watch)
        try:
            self._call_function(items, offset, watch.out)
        finally:
            self.releaser.remove(watch)
        return watch.finish()

    def _call_function(self, items: list[Any], offset: int, out: list[Any]) -> list[Any]:
        """Append the outputs of ``items`` to ``out`` (a watched slice's: read as they come)."""
        fn = self.fn
        start = 0
        while True:
            before = len(out)
            try:
                # ``extend(map(...))`` iterates in C: about a quarter less per item than a
                # loop of ``append``; ``out`` still grows one output at a time (the
                # releaser reads its length), and keeps the outputs made before an error.
                out.extend(map(fn, items if start == 0 else items[start:]))
                return out
            except Exception as exc:
                k = start + len(out) - before
                x = items[k]

                def again(x: Any = x) -> list[Any]:
                    return [fn(x)]

                out.extend(retry(self.policy, [x], offset + k, exc, again) or ())
                start = k + 1

    def _call_generator(
        self, items: list[Any], offset: int, part: Part | None, skip: int
    ) -> list[Any]:
        fn, pace = self.fn, self.pace
        flow = OutputFlow(part, pace, skip)
        out = flow.out  # stays one list
        for k, x in enumerate(items):
            before = len(out)
            it: Iterator[Any] | None = None
            if not flow.skip:
                n = pace.few
                try:
                    it = fn(x)  # a generator: its own iterator
                    out.extend(itertools.islice(cast("Iterator[Any]", it), n))
                except Exception as exc:
                    flow.mark, flow.sent = before, 0
                    flow.failed()
                    self._retry_generator(flow, x, offset + k, exc)
                    continue
                if len(out) - before < n:  # the common case: all its outputs in one go
                    continue
                flow.many(before, it)  # more: what it gave so far leaves now, the rest in parts
            else:
                flow.begin()
            try:
                if it is None:  # skipping the outputs a dead worker handed on
                    flow.drain(iter(fn(x)))
                else:
                    flow.drain(it, fresh=False)
            except Exception as exc:
                flow.failed()  # a retry must not duplicate what the failed attempt yielded
                self._retry_generator(flow, x, offset + k, exc)
        self.left_to_skip = flow.skip
        return flow.rest()

    def _retry_generator(self, flow: OutputFlow, x: Any, index: int, exc: Exception) -> None:
        def again() -> list[Any]:
            flow.drain(iter(self.fn(x)))
            return []

        retry(self.policy, [x], index, exc, again, flow.failed)

    def _call_batch(self, items: list[Any], offset: int) -> list[Any]:
        try:
            outputs = self._batch_once(items)
        except Exception as exc:
            again = retry(self.policy, items, offset, exc, lambda: self._batch_once(items))
            if again is None:  # skipped
                return []
            outputs = again
        if len(outputs) != len(items):
            problem = ValueError(
                f"a batch function must return one output per input: "
                f"got {len(outputs)} outputs for {len(items)} inputs"
            )
            raise StageError(self.label, offset, items, cause=problem) from problem
        return outputs

    def _batch_once(self, items: list[Any]) -> list[Any]:
        outputs: Iterable[Any] = self.fn(items)  # so that isinstance gives list[Any]
        return list(outputs) if not isinstance(outputs, list) else outputs
