"""Stages and pipelines are values that survive pickling (cloudpickle for lambdas)."""

from __future__ import annotations

import copy
import pickle
from collections.abc import Iterator
from typing import Any

import cloudpickle
import pytest

from flowpipe import Pipeline, Stage, StageClass, merge, stage


@stage(workers=3, batch=4)
def double_all(xs: list[int]) -> list[int]:
    return [2 * x for x in xs]


@stage
def inc(x: int) -> int:
    return x + 1


@stage(on_error="skip", retries=2)
def split(x: int) -> Iterator[int]:
    yield x
    yield -x


@stage(workers=2, resources={"num_gpus": 1})
class Classify:
    def __init__(self, threshold: float = 0.5) -> None:
        self.threshold = threshold

    def __call__(self, x: float) -> bool:
        return x > self.threshold


def plain(x: int) -> int:
    return x * 10


PICKLERS: list[Any] = [pickle, cloudpickle]


def roundtrip(obj: Any, pickler: Any) -> Any:
    return pickler.loads(pickler.dumps(obj))


@pytest.mark.parametrize("pickler", PICKLERS, ids=["pickle", "cloudpickle"])
def test_a_decorated_module_level_stage_round_trips(pickler: Any) -> None:
    for s in (inc, double_all, split):
        back = roundtrip(s, pickler)
        assert isinstance(back, Stage)
        assert back.options == s.options
        assert back.call_kind == s.call_kind
    assert roundtrip(inc, pickler)(1) == 2
    assert roundtrip(double_all, pickler)([1, 2]) == [2, 4]
    assert list(roundtrip(split, pickler)(3)) == [3, -3]


def test_plain_pickle_gives_an_equal_stage() -> None:
    assert roundtrip(inc, pickle) == inc
    assert roundtrip(double_all, pickle) == double_all


@pytest.mark.parametrize("pickler", PICKLERS, ids=["pickle", "cloudpickle"])
def test_a_stage_made_from_a_plain_function_round_trips(pickler: Any) -> None:
    s = stage(plain, workers=2, name="tens")
    back = roundtrip(s, pickler)
    assert back == s
    assert back(3) == 30


@pytest.mark.parametrize("pickler", PICKLERS, ids=["pickle", "cloudpickle"])
def test_a_class_stage_round_trips_with_its_constructor_args(pickler: Any) -> None:
    configured = Classify(0.7)
    back = roundtrip(configured, pickler)
    assert back == configured
    assert back.options.resources == {"num_gpus": 1}
    assert back(0.8) is True
    assert back(0.6) is False


@pytest.mark.parametrize("pickler", PICKLERS, ids=["pickle", "cloudpickle"])
def test_a_stage_class_round_trips(pickler: Any) -> None:
    back = roundtrip(Classify, pickler)
    assert isinstance(back, StageClass)
    assert back == Classify
    assert back(0.1)(0.2) is True


@pytest.mark.parametrize("pickler", PICKLERS, ids=["pickle", "cloudpickle"])
def test_a_pipeline_with_joins_and_merges_round_trips(pickler: Any) -> None:
    pipe = inc | (inc, double_all) | {"a": plain, "b": inc | inc} | merge(split, inc)  # type: ignore[dict-item]  # never run
    back = roundtrip(pipe, pickler)
    assert isinstance(back, Pipeline)
    assert back == pipe
    assert str(back) == str(pipe)


@pytest.mark.parametrize("pickler", PICKLERS, ids=["pickle", "cloudpickle"])
def test_a_pipeline_with_a_bound_source_round_trips(pickler: Any) -> None:
    pipe = [1, 2, 3] | inc
    back = roundtrip(pipe, pickler)
    assert back.source == [1, 2, 3]
    assert back.steps == pipe.steps


def test_a_class_stage_instance_is_never_pickled() -> None:
    """Direct calls cache an instance; pickling ships the recipe, not the instance."""

    class Unpicklable:
        def __reduce__(self) -> Any:
            raise TypeError("instances must not be pickled")

    @stage
    class Holder:
        def __init__(self) -> None:
            self.resource = Unpicklable()

        def __call__(self, x: int) -> int:
            return x

    configured = Holder()
    assert configured(1) == 1  # builds and caches an instance
    back = cloudpickle.loads(cloudpickle.dumps(configured))
    assert back(2) == 2


def test_lambdas_and_closures_round_trip_with_cloudpickle() -> None:
    offset = 5
    lam = stage(lambda x: x + offset, workers=2)

    @stage(batch=2)
    def shift(xs: list[int]) -> list[int]:
        return [x + offset for x in xs]

    pipe = lam | shift | (lambda x: -x)
    back = roundtrip(pipe, cloudpickle)
    assert [s.name for s in back.stages] == ["lambda", "shift", "lambda"]
    assert back.stages[0](1) == 6
    assert back.stages[1]([1, 2]) == [6, 7]
    assert back.stages[2](3) == -3
    assert back.stages[0].options == lam.options


def log_error(item: object, exc: BaseException) -> None:
    """An on_error handler; never called here."""


@pytest.mark.parametrize("pickler", PICKLERS, ids=["pickle", "cloudpickle"])
def test_on_error_handlers_travel_with_the_stage(pickler: Any) -> None:
    back = roundtrip(stage(plain, on_error=log_error), pickler)
    assert back.options.on_error is log_error
    lam = roundtrip(stage(plain, on_error=lambda item, exc: (item, exc)), cloudpickle)
    assert lam.options.on_error(1, 2) == (1, 2)


def test_copy_and_deepcopy() -> None:
    pipe = inc | (inc, double_all)
    assert copy.copy(pipe) == pipe
    assert copy.deepcopy(pipe) == pipe
    assert copy.deepcopy(Classify(0.3)) == Classify(0.3)
