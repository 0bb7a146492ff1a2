"""flowpipe: turn a slow loop of stages into a fast parallel streaming pipeline.

Decorate plain functions with ``@stage``, compose them with ``|``, run the
graph on threads (processes and Ray come as further backends)::

    from flowpipe import stage

    @stage(workers=4)
    def parse(line): ...

    out = (parse | label).run(lines)
"""

from __future__ import annotations

import importlib as _importlib
import logging as _logging
import typing as _typing

if _typing.TYPE_CHECKING:
    from ._dsl.options import StageOptions as StageOptions
    from ._dsl.pipeline import Pipeline as Pipeline
    from ._dsl.pipeline import merge as merge
    from ._dsl.stage import Stage as Stage
    from ._dsl.stage import StageClass as StageClass
    from ._dsl.stage import stage as stage
    from ._errors import FlowpipeError as FlowpipeError
    from ._errors import GraphError as GraphError
    from ._errors import MissingExtra as MissingExtra
    from ._errors import RunClosed as RunClosed
    from ._errors import RunOptionError as RunOptionError
    from ._errors import StageError as StageError
    from ._errors import StageOptionError as StageOptionError
    from ._errors import StageTimeout as StageTimeout
    from ._errors import Stalled as Stalled
    from ._errors import WorkerCrashed as WorkerCrashed
    from ._feeds import Sources as Sources
    from ._feeds import Tagged as Tagged
    from ._feeds import sources as sources
    from ._observe.stats import RunStats as RunStats
    from ._observe.stats import StageStats as StageStats
    from ._runtime.core.keep import shutdown as shutdown
    from ._runtime.core.live import LiveRun as LiveRun
    from ._runtime.core.run import Run as Run

# The names are imported when first used (PEP 562), so that ``import flowpipe``
# stays cheap: a worker process imports only what its stage needs (it starts
# in about half the time), and so does a script that only builds a pipeline.
_LAZY = {
    "StageOptions": "._dsl.options",
    "Pipeline": "._dsl.pipeline",
    "merge": "._dsl.pipeline",
    "Stage": "._dsl.stage",
    "StageClass": "._dsl.stage",
    "stage": "._dsl.stage",
    "Sources": "._feeds",
    "Tagged": "._feeds",
    "sources": "._feeds",
    "FlowpipeError": "._errors",
    "GraphError": "._errors",
    "MissingExtra": "._errors",
    "RunClosed": "._errors",
    "RunOptionError": "._errors",
    "StageError": "._errors",
    "StageOptionError": "._errors",
    "StageTimeout": "._errors",
    "Stalled": "._errors",
    "WorkerCrashed": "._errors",
    "RunStats": "._observe.stats",
    "StageStats": "._observe.stats",
    "LiveRun": "._runtime.core.live",
    "Run": "._runtime.core.run",
    "shutdown": "._runtime.core.keep",
}


def __getattr__(name: str) -> _typing.Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'flowpipe' has no attribute {name!r}")
    value = getattr(_importlib.import_module(module, __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    # A lazy name already looked up is in globals() too: list it once. ``annotations``
    # is the ``__future__`` import, not part of the API.
    return sorted({*globals(), *_LAZY} - {"annotations"})


__version__ = "0.1.0"

__all__ = (
    "FlowpipeError",
    "GraphError",
    "LiveRun",
    "MissingExtra",
    "Pipeline",
    "Run",
    "RunClosed",
    "RunOptionError",
    "RunStats",
    "Sources",
    "Stage",
    "StageClass",
    "StageError",
    "StageOptionError",
    "StageOptions",
    "StageStats",
    "StageTimeout",
    "Stalled",
    "Tagged",
    "WorkerCrashed",
    "merge",
    "shutdown",
    "sources",
    "stage",
)

# Silent by default: users opt in with logging.getLogger("flowpipe").setLevel(...).
_logging.getLogger("flowpipe").addHandler(_logging.NullHandler())
