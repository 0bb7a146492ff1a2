"""The backend interface, the registry (the one list of backends), and what differs.

A backend decides *where* a stage's calls run and *how* a slice gets there;
everything else (taking slices, ordering, windows, joins, retries, stats) is
the core's, the same for every backend. What differs between backends is
written here, as the interface each one implements:

- ``capabilities``: what the planner may count on (``_plan.edges``);
- ``start_stage``: start a stage's workers, each running the core's loop,
  with the backend's ``Caller`` to move slices to where the calls run;
- ``open_handles``: open the handles its workers send back, where items
  reach code in the caller's process (the plan says where: ``EdgePlan``).

Backends are imported only when a plan names them (``load_backend``): a
program that runs threads only never imports multiprocessing or Ray. Adding
a backend is a module (or package) here plus a line in ``REGISTRY``.
"""

from __future__ import annotations

import importlib
from abc import ABC, abstractmethod
from typing import TYPE_CHECKING, ClassVar, Protocol

from ..._errors import GraphError

if TYPE_CHECKING:
    from ..._plan.edges import Capabilities
    from ..core.loop import StageRun
    from ..core.state import Opener, RunState

# name -> module under ``flowpipe._runtime.backends``: the one list of backends.
REGISTRY: dict[str, str] = {"thread": "thread", "process": "process.load", "ray": "ray"}
BACKENDS = tuple(REGISTRY)


class Worker(Protocol):
    """A started worker: anything that can be joined (a thread, a process handle)."""

    def join(self, timeout: float | None = None) -> None: ...
    def is_alive(self) -> bool: ...


class Backend(ABC):
    """One backend, for one run. A backend's module ends with ``backend_class = ...``."""

    name: ClassVar[str]
    capabilities: ClassVar[Capabilities]

    def __init__(self, state: RunState) -> None:
        self.state = state

    @abstractmethod
    def start_stage(self, stage_run: StageRun) -> list[Worker]:
        """Start ``stage_run``'s workers; each runs ``stage_run.run_worker(i)``."""

    def open_handles(self) -> Opener | None:
        """What opens the handles this backend's workers return (``None``: it returns none)."""
        return None


def load_backend(name: str) -> type[Backend]:
    """The backend called ``name``; its module is imported only when first asked for."""
    if name not in REGISTRY:
        raise GraphError(f"backend {name!r} is not available; use one of {sorted(REGISTRY)}")
    module = importlib.import_module(f"{__package__}.{REGISTRY[name]}")
    backend: type[Backend] = module.backend_class
    return backend
