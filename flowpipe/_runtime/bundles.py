"""Which edges of a run carry bundles: worker process to worker process, sealed.

A stage whose calls run in worker processes answers each slice with its
outputs. When every stage that reads those outputs also runs in worker
processes, the parent has no use for the items themselves: the worker seals
its whole output slice into one bundle (``wire.bundle``: one pickle, large
buffers in shared memory), the parent forwards that handle without opening it,
and the next stage's worker opens it. The parent then pays per slice, not per
item, and never pickles or unpickles an item of that edge, so cheap process
stages are no longer limited by the parent's one interpreter.

An edge carries bundles when

- its reading stage runs in worker processes and takes plain slices: a
  function or generator stage without ``batch`` or ``window`` (those need the
  items one by one in the parent), with the default buffer and ``overflow``
  (a drop policy counts and drops single items); and
- every stage writing into it runs in worker processes and bundles its
  outputs, so every entry of the channel is a bundle. A stage bundles only if
  every channel it writes to carries bundles (a fan-out sends the same entry
  to every branch); the source, a join and the caller read or write items.

Such a channel holds ``BUNDLES_PER_WORKER`` bundles per reading worker, at
least ``BUNDLES_MIN`` (each is a slice, up to ``process.PROCESS_SLICE_SECONDS``
of the writer's work: when the writer runs ahead, far more work than a brief
preemption of either stage costs, so two pipelined stages keep busy), but only about
``buffer.AUTO_BYTES`` of large buffers; its offsets still count items, so
errors name the right input.
"""

from __future__ import annotations

from .._transport.buffer import Channel
from .engine import StageRun

BUNDLES_PER_WORKER = 8
BUNDLES_MIN = 16


def _reads_bundles(stage_run: StageRun) -> bool:
    node = stage_run.node
    opts = node.stage.options
    return (
        node.backend == "process"
        and node.stage.call_kind in ("function", "generator")
        and opts.batch is None
        and not opts.window
        and opts.buffer is None
        and opts.overflow == "block"
    )


def plan_bundles(stage_runs: list[StageRun]) -> None:
    """Set ``bundles_in``/``bundles_out`` on each stage and switch bundled channels over.

    Call it once the graph is wired and before any worker starts.
    """
    reader: dict[int, StageRun] = {id(sr.inp): sr for sr in stage_runs}
    writers: dict[int, list[StageRun]] = {}
    channels: dict[int, Channel] = {}
    for sr in stage_runs:
        for target in sr.emitter.targets:
            writers.setdefault(id(target), []).append(sr)
            channels[id(target)] = target

    def carries(ch: int) -> bool:
        r = reader.get(ch)
        # ... and every producer of the channel is a stage (not the source, not a join)
        return r is not None and _reads_bundles(r) and len(writers[ch]) == channels[ch].producers

    bundling = {
        id(sr)
        for sr in stage_runs
        if sr.node.backend == "process"
        and sr.emitter.targets
        and all(carries(id(t)) for t in sr.emitter.targets)
    }
    # A stage that cannot bundle spoils every channel it writes to, and so every
    # other writer of those channels: repeat until nothing changes.
    changed = True
    while changed:
        changed = False
        for sr in stage_runs:
            if id(sr) not in bundling:
                continue
            for t in sr.emitter.targets:
                if not all(id(w) in bundling for w in writers[id(t)]):
                    bundling.discard(id(sr))
                    changed = True
                    break
    for sr in stage_runs:
        if id(sr) in bundling:
            sr.bundles_out = True
            for t in sr.emitter.targets:
                r = reader[id(t)]
                if not r.bundles_in:
                    r.bundles_in = True
                    workers = r.node.stage.options.workers
                    t.carry_bundles(max(BUNDLES_MIN, BUNDLES_PER_WORKER * workers))
