"""``_record.record``: ``StageOptions`` and ``FanOut`` behave as frozen dataclasses do.

They are made without importing ``dataclasses`` (issue 17: it imports
``inspect``, a third of the time to a first result), yet a user's
``dataclasses.asdict(stage.options)`` and friends must keep working.
"""

from __future__ import annotations

import copy
import dataclasses
import pickle
import subprocess
import sys

import pytest

from flowpipe import StageOptions, stage
from flowpipe._dsl.pipeline import FanOut
from flowpipe._record import field_defaults, field_names, record


def double(x: int) -> int:
    return 2 * x


def test_stage_options_answer_dataclasses_as_a_frozen_dataclass_would() -> None:
    options = stage(double, workers=2, ordered=False).options
    assert dataclasses.is_dataclass(options)
    names = [f.name for f in dataclasses.fields(options)]
    assert names == list(field_names(StageOptions))
    assert names[:3] == ["name", "workers", "ordered"]
    as_dict = dataclasses.asdict(options)
    assert (as_dict["name"], as_dict["workers"], as_dict["ordered"]) == ("double", 2, False)
    assert dataclasses.astuple(options)[:2] == ("double", 2)
    changed = dataclasses.replace(options, workers=3)
    assert (changed.workers, changed.ordered, type(changed)) == (3, False, StageOptions)
    defaults = {f.name: f.default for f in dataclasses.fields(StageOptions)}
    assert defaults["workers"] == 1
    assert defaults["name"] is dataclasses.MISSING


def test_a_record_is_frozen() -> None:
    options = stage(double).options
    with pytest.raises(dataclasses.FrozenInstanceError, match="'workers'"):
        options.workers = 4  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        del options.workers
    assert options.workers == 1


def test_records_compare_hash_copy_and_pickle_by_their_fields() -> None:
    a = stage(double, workers=2, resources={"gpu": 1}).options
    b = stage(double, workers=2, resources={"gpu": 1}).options
    assert a == b
    assert hash(a) == hash(b)
    assert a != stage(double, workers=3).options
    other: object = ("double", 2)
    assert a != other  # another type is never equal
    for twin in (pickle.loads(pickle.dumps(a)), copy.copy(a), copy.deepcopy(a)):
        assert twin == a
        assert hash(twin) == hash(a)
    assert repr(a).startswith("StageOptions(name='double', workers=2, ordered=True,")


def test_a_fan_out_is_a_record_too() -> None:
    pipe = stage(double) | (stage(double), stage(abs))
    fan = pipe.steps[1]
    assert isinstance(fan, FanOut)
    assert (fan.keys, fan.merge, len(fan.branches)) == (None, False, 2)
    assert fan == FanOut(fan.branches)
    assert hash(fan) == hash(FanOut(fan.branches, None))
    assert dataclasses.asdict(fan)["merge"] is False


def test_record_refuses_what_a_dataclass_refuses() -> None:
    with pytest.raises(TypeError, match="'b' without a default"):

        @record
        class Bad:
            a: int = 1
            b: int  # type: ignore[misc]  # what the check refuses

    @record
    class Point:
        x: int
        y: int = 0

    assert field_defaults(Point) == {"y": 0}
    assert Point(1) == Point(x=1, y=0)
    with pytest.raises(TypeError, match="missing required arguments: x"):
        Point()  # type: ignore[call-arg]
    with pytest.raises(TypeError, match="unexpected keyword argument 'z'"):
        Point(1, z=2)  # type: ignore[call-arg]
    with pytest.raises(TypeError, match="multiple values for argument 'x'"):
        Point(1, x=2)  # type: ignore[misc]
    with pytest.raises(TypeError, match="takes 2 positional arguments, 3 given"):
        Point(1, 2, 3)  # type: ignore[call-arg]
    match Point(1, 2):
        case Point(a, b):
            assert (a, b) == (1, 2)


def test_a_thread_run_of_plain_functions_imports_neither_dataclasses_nor_inspect() -> None:
    """The first-result program of ``benchmarks/first_result.py``."""
    code = """
import sys
import flowpipe
pipe = flowpipe.stage(lambda x: x + 1) | flowpipe.stage(lambda x: x + 2)
assert list(pipe.iter(range(10))) == [x + 3 for x in range(10)]
print(",".join(m for m in ("dataclasses", "inspect") if m in sys.modules))
"""
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    assert done.stdout.strip() == ""
