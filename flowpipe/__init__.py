"""flowpipe: turn a slow loop of stages into a fast parallel streaming pipeline.

Decorate plain functions with ``@stage``, compose them with ``|``, run the
graph on threads (processes and Ray come as further backends)::

    from flowpipe import stage

    @stage(workers=4)
    def parse(line): ...

    out = (parse | label).run(lines)
"""

from __future__ import annotations

import logging

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
from ._errors import WorkerCrashed as WorkerCrashed
from ._observe.stats import RunStats as RunStats
from ._observe.stats import StageStats as StageStats
from ._runtime.live import LiveRun as LiveRun
from ._runtime.run import Run as Run

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
    "Stage",
    "StageClass",
    "StageError",
    "StageOptionError",
    "StageOptions",
    "StageStats",
    "WorkerCrashed",
    "merge",
    "stage",
)

# Silent by default: users opt in with logging.getLogger("flowpipe").setLevel(...).
logging.getLogger("flowpipe").addHandler(logging.NullHandler())
