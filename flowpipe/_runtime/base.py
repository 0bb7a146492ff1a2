"""The backend interface, and the lazy lookup of a backend by name.

A backend decides where a stage's workers run. The run (``run.py``) wires
channels and asks each stage's backend to start its workers; the scheduling
itself is ``engine.StageRun.run_worker`` on every backend.
"""

from __future__ import annotations

import importlib
from abc import ABC, abstractmethod
from typing import Protocol

from .._errors import GraphError
from .engine import StageRun


class Worker(Protocol):
    """A started worker: anything that can be joined (a thread, a process handle)."""

    def join(self, timeout: float | None = None) -> None: ...
    def is_alive(self) -> bool: ...


class Backend(ABC):
    """Starts the workers of one stage. One module per backend ends with ``backend_class``."""

    name: str

    @abstractmethod
    def start_stage(self, stage_run: StageRun) -> list[Worker]:
        """Start ``stage_run``'s workers; each runs ``stage_run.run_worker(i)``."""


_MODULES = {"thread": "thread", "process": "process", "ray": "ray_backend"}


def get_backend(name: str) -> Backend:
    """The backend called ``name``; its module is imported only when first asked for."""
    if name not in _MODULES:
        raise GraphError(f"backend {name!r} is not available; use one of {sorted(_MODULES)}")
    module = importlib.import_module(f"{__package__}.{_MODULES[name]}")
    backend: Backend = module.backend_class()
    return backend
