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

import pytest

from flowpipe import StageError

SHIPPING = ["process"]
if importlib.util.find_spec("ray") is not None:
    SHIPPING.append("ray")

MODULE = """
from flowpipe import stage

@stage
def triple(x):
    return 3 * x
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
