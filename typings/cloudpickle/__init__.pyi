# Type stubs for the parts of cloudpickle (which ships none) that flowpipe uses.
# Read by pyright (``stubPath``) and mypy (``mypy_path``); see pyproject.toml.

import pickle
from collections.abc import Callable
from pickle import load as load
from pickle import loads as loads
from types import ModuleType
from typing import IO, Any

__version__: str

DEFAULT_PROTOCOL: int

class Pickler(pickle.Pickler):
    def __init__(
        self,
        file: IO[bytes],
        protocol: int | None = None,
        buffer_callback: Callable[[pickle.PickleBuffer], Any] | None = None,
    ) -> None: ...

CloudPickler = Pickler

def dump(
    obj: object,
    file: IO[bytes],
    protocol: int | None = None,
    buffer_callback: Callable[[pickle.PickleBuffer], Any] | None = None,
) -> None: ...
def dumps(
    obj: object,
    protocol: int | None = None,
    buffer_callback: Callable[[pickle.PickleBuffer], Any] | None = None,
) -> bytes: ...
def register_pickle_by_value(module: ModuleType) -> None: ...
def unregister_pickle_by_value(module: ModuleType) -> None: ...
def list_registry_pickle_by_value() -> set[str]: ...
