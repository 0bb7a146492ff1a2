"""Faults: a stage that its worker cannot load, on the backends that ship stages.

A module loaded from a file path (not on ``sys.path``, so a worker cannot
import it) stands for a script's helper module or a notebook's edited one.
"""

from __future__ import annotations

import importlib.util
import itertools
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import cloudpickle
import pytest

from flowpipe import StageError, stage

SHIPPING = ["process"]
if importlib.util.find_spec("ray") is not None:
    SHIPPING.append("ray")

MODULE = """
from flowpipe import stage

@stage
def triple(x):
    return 3 * x

def plain_double(x):
    return 2 * x

@stage
class Add:
    def __init__(self, k):
        self.k = k
    def __call__(self, x):
        return x + self.k
"""

_names = itertools.count()


@pytest.fixture
def off_path(tmp_path: Path) -> Iterator[ModuleType]:
    """The module above, loaded from its file: importable here only."""
    name = f"flowpipe_off_path_{next(_names)}"  # a new one per test: workers may be reused
    path = tmp_path / f"{name}.py"
    path.write_text(textwrap.dedent(MODULE))
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    yield module
    del sys.modules[name]


@pytest.mark.parametrize("backend", SHIPPING)
def test_a_stage_that_fails_to_load_in_its_worker_is_named(
    off_path: ModuleType, backend: str
) -> None:
    with pytest.raises(StageError) as info:
        off_path.triple.run([1, 2], backend=backend)
    assert info.value.stage == "triple"
    assert str(info.value).startswith("stage 'triple' failed")
    assert isinstance(info.value.__cause__, ModuleNotFoundError)


@pytest.fixture
def by_value(off_path: ModuleType) -> Iterator[ModuleType]:
    """The module, shipped by value: cloudpickle's switch for modules workers cannot import."""
    cloudpickle.register_pickle_by_value(off_path)
    yield off_path
    cloudpickle.unregister_pickle_by_value(off_path)


@pytest.mark.parametrize("backend", SHIPPING)
def test_decorated_stages_of_a_module_registered_by_value_travel_by_value(
    by_value: ModuleType, backend: str
) -> None:
    assert stage(by_value.plain_double).run([1, 2], backend=backend) == [2, 4]  # as before
    assert by_value.triple.run([1, 2], backend=backend) == [3, 6]
    assert by_value.Add(10).run([1, 2], backend=backend) == [11, 12]
    assert (by_value.triple | by_value.Add(1)).run([1], backend=backend) == [4]
