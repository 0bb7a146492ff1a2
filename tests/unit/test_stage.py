"""``@stage``: bare, called and functional forms; direct calls; class stages; no workers."""

from __future__ import annotations

import asyncio
import functools
import inspect
import pickle
import pydoc
from collections.abc import Iterator
from typing import Any, ClassVar

import pytest

from flowpipe import GraphError, Pipeline, Stage, StageClass, StageOptionError, stage


@stage
def inc(x: int) -> int:
    return x + 1


@stage(workers=4, name="times_two")
def double(x: int) -> int:
    return 2 * x


def test_bare_decorator_makes_a_stage_with_default_options() -> None:
    assert isinstance(inc, Stage)
    assert inc.name == "inc"
    assert inc.options.workers == 1


def test_called_decorator_applies_options() -> None:
    assert isinstance(double, Stage)
    assert double.name == "times_two"
    assert double.options.workers == 4


def test_functional_form() -> None:
    def triple(x: int) -> int:
        return 3 * x

    s = stage(triple, workers=2, ordered=False)
    assert isinstance(s, Stage)
    assert s.name == "triple"
    assert (s.options.workers, s.options.ordered) == (2, False)
    assert s(4) == 12


def test_called_decorator_with_no_options() -> None:
    @stage()
    def neg(x: int) -> int:
        return -x

    assert isinstance(neg, Stage)
    assert neg(3) == -3


def test_lambda_stage() -> None:
    s = stage(lambda x: x * 10, workers=3)
    assert s.name == "lambda"
    assert s(2) == 20
    assert s.options.workers == 3


def test_closure_stage_sees_its_enclosing_variables() -> None:
    offset = 7

    @stage(batch=4)
    def shift(xs: list[int]) -> list[int]:
        return [x + offset for x in xs]

    assert shift([1, 2]) == [8, 9]


def test_direct_call_runs_the_plain_function() -> None:
    calls: list[int] = []

    @stage(workers=8)
    def record(x: int) -> int:
        calls.append(x)
        return x * x

    assert record(5) == 25
    assert calls == [5]


def test_direct_call_passes_keyword_and_extra_arguments() -> None:
    @stage
    def scale(x: int, factor: int = 2) -> int:
        return x * factor

    assert scale(3) == 6
    assert scale(3, factor=5) == 15  # type: ignore[call-arg]  # typed as (int) -> int


def test_direct_call_of_a_generator_stage_gives_the_generator() -> None:
    @stage
    def repeat(x: int) -> Iterator[int]:
        for _ in range(x):
            yield x

    assert list(repeat(3)) == [3, 3, 3]


def test_direct_call_of_an_async_stage_gives_a_coroutine() -> None:
    @stage(workers=4)
    async def fetch(x: int) -> int:
        return x + 1

    coro = fetch(1)
    assert inspect.iscoroutine(coro)
    assert asyncio.run(coro) == 2


def test_call_kinds() -> None:
    @stage
    def gen(x: int) -> Iterator[int]:
        yield x

    @stage
    async def coro(x: int) -> int:
        return x

    assert inc.call_kind == "function"
    assert gen.call_kind == "generator"
    assert coro.call_kind == "async"


def test_async_generator_functions_are_refused_at_build_time() -> None:
    async def agen(x: int) -> Any:
        yield x

    with pytest.raises(GraphError, match="agen"):
        stage(agen)


def test_a_stage_keeps_the_function_identity() -> None:
    def original(x: int) -> int:
        return x

    s = stage(original)
    assert s.target is original
    assert s.__wrapped__ is original
    assert s.__name__ == "original"


def parse_url(url: str, *, strict: bool = False) -> int:
    """Parse one URL into its length (a docstring help() shows)."""
    return len(url)


def _as_functools_wraps_gives(wrapped: Any) -> dict[str, Any]:
    @functools.wraps(wrapped)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        return wrapped(*args, **kwargs)

    # not __annotations__: a stage's are its class's (the slots' types)
    copied = [a for a in functools.WRAPPER_ASSIGNMENTS if a != "__annotations__"]
    return {attr: getattr(wrapper, attr) for attr in copied if hasattr(wrapper, attr)}


@pytest.mark.parametrize("options", [{}, {"workers": 3, "name": "parse"}], ids=["bare", "named"])
def test_a_stage_has_its_functions_identity_as_functools_wraps_gives(
    options: dict[str, Any],
) -> None:
    s = stage(parse_url, **options)
    wanted = _as_functools_wraps_gives(parse_url)
    assert {attr: getattr(s, attr) for attr in wanted} == wanted
    assert s.__doc__ == "Parse one URL into its length (a docstring help() shows)."
    assert s.__wrapped__ is parse_url
    assert s.__name__ == "parse_url"
    assert s.__qualname__ == "parse_url"
    assert s.__module__ == parse_url.__module__
    assert inspect.signature(s) == inspect.signature(parse_url)
    assert inspect.signature(s, eval_str=True).return_annotation is int
    assert s.name == options.get("name", "parse_url")  # the stage's name: stats, errors


def test_help_on_a_stage_shows_the_functions_docstring() -> None:
    shown = pydoc.plain(pydoc.render_doc(stage(parse_url, workers=2)))
    assert "Parse one URL into its length" in shown
    assert "One step of a pipeline" not in shown  # not the Stage class's own docstring


def test_a_class_stage_has_its_classes_identity() -> None:
    wanted = _as_functools_wraps_gives(Recorder)
    Classify = stage(Recorder, workers=2)
    configured = Classify(0.7)
    for s in (Classify, configured):
        assert {attr: getattr(s, attr) for attr in wanted} == wanted
        assert s.__wrapped__ is Recorder
        assert s.__doc__ == Recorder.__doc__
    assert inspect.signature(Classify) == inspect.signature(Recorder)
    assert "construction is recorded" in pydoc.plain(pydoc.render_doc(Classify))


def test_the_classes_keep_their_own_identity() -> None:
    for cls, name in ((Stage, "Stage"), (StageClass, "StageClass")):
        assert cls.__module__ == "flowpipe._dsl.stage"
        assert cls.__qualname__ == name
        assert isinstance(cls.__doc__, str)
        assert pickle.loads(pickle.dumps(cls)) is cls
    assert Stage.__doc__ is not None
    assert Stage.__doc__.startswith("One step of a pipeline")
    assert "_target" in Stage.__annotations__
    with pytest.raises(AttributeError, match="no_such_attribute"):
        inc.no_such_attribute  # type: ignore[attr-defined]  # noqa: B018


def test_a_stage_cannot_be_decorated_again() -> None:
    with pytest.raises(TypeError, match="already a stage"):
        stage(inc)


def test_a_non_callable_is_refused() -> None:
    with pytest.raises(TypeError, match="function or a class"):
        stage(42)  # type: ignore[call-overload]


def test_with_options_returns_a_new_stage() -> None:
    wider = inc.with_options(workers=3)
    assert wider.options.workers == 3
    assert inc.options.workers == 1
    assert wider.target is inc.target
    assert wider != inc


def test_stage_equality_and_hash() -> None:
    def f(x: int) -> int:
        return x

    assert stage(f, workers=2) == stage(f, workers=2)
    assert hash(stage(f, workers=2)) == hash(stage(f, workers=2))
    assert stage(f, workers=2) != stage(f, workers=3)
    assert stage(f) != stage(lambda x: x)


def test_a_stage_is_a_one_stage_pipeline() -> None:
    pipe = inc._as_pipeline()
    assert isinstance(pipe, Pipeline)
    assert pipe.steps == (inc,)
    assert pipe.stages == (inc,)


def test_a_zero_argument_function_is_a_source_stage() -> None:
    @stage
    def camera() -> Iterator[int]:
        yield 1

    assert camera.is_source
    assert not inc.is_source


def test_a_source_stage_refuses_workers_and_batch() -> None:
    def camera() -> Iterator[int]:
        yield 1

    with pytest.raises(TypeError, match="camera"):
        stage(camera, workers=2)
    with pytest.raises(TypeError, match="camera"):
        stage(camera, batch=4)  # type: ignore[arg-type]


def test_a_source_stage_can_only_come_first() -> None:
    @stage
    def camera() -> Iterator[int]:
        yield 1

    assert (camera | inc).steps == (camera, inc)
    with pytest.raises(TypeError, match="camera"):
        inc | camera  # type: ignore[operator]


# -- class stages ---------------------------------------------------------------------


class Recorder:
    """A class whose construction is recorded, to prove it does not happen at build time."""

    built: ClassVar[list[tuple[Any, ...]]] = []

    def __init__(self, threshold: float = 0.5, *, label: str = "") -> None:
        Recorder.built.append((threshold, label))
        self.threshold = threshold

    def __call__(self, x: float) -> bool:
        return x > self.threshold


def test_a_decorated_class_is_a_stage_class() -> None:
    Recorder.built.clear()
    Classify = stage(workers=2)(Recorder)
    assert isinstance(Classify, StageClass)
    assert Classify.__name__ == "Recorder"
    assert Recorder.built == []


def test_class_stage_records_constructor_args_without_constructing() -> None:
    Recorder.built.clear()
    Classify = stage(Recorder, workers=2)
    configured = Classify(0.7, label="strict")
    assert isinstance(configured, Stage)
    assert configured.is_class
    assert configured.options.workers == 2
    assert Recorder.built == []  # __init__ is run only in a worker (or on a direct call)
    pipe = inc | configured | Classify
    assert Recorder.built == []
    assert len(pipe.stages) == 3


def test_with_options_on_a_stage_class_changes_options_without_constructing() -> None:
    Recorder.built.clear()
    Classify = stage(Recorder, workers=2)
    wider = Classify.with_options(workers=4, name="classify")
    assert isinstance(wider, StageClass)
    assert Recorder.built == []
    assert Classify().options.workers == 2  # the original is unchanged
    configured = wider(0.7, label="strict")
    assert (configured.options.workers, configured.name) == (4, "classify")
    assert configured == Classify(0.7, label="strict").with_options(workers=4, name="classify")
    assert (inc | wider).steps[-1] == wider()  # bare in a pipe: built with no arguments
    assert Recorder.built == []
    with pytest.raises(StageOptionError, match=r"stage 'Recorder': option workers=0"):
        Classify.with_options(workers=0)


def test_class_stage_direct_call_builds_once_and_reuses_the_instance() -> None:
    Recorder.built.clear()
    configured = stage(Recorder)(0.7)
    assert configured(0.9) is True
    assert configured(0.1) is False
    assert Recorder.built == [(0.7, "")]


def test_class_stages_with_different_args_differ() -> None:
    Classify = stage(Recorder)
    assert Classify(0.7) == Classify(0.7)
    assert Classify(0.7) != Classify(0.8)


def test_make_callable_builds_a_fresh_instance_per_worker() -> None:
    Recorder.built.clear()
    configured = stage(Recorder)(0.2, label="w")
    first, second = configured.make_callable(), configured.make_callable()
    assert first is not second
    assert Recorder.built == [(0.2, "w"), (0.2, "w")]


def test_a_class_with_an_async_call_is_an_async_stage() -> None:
    class Fetch:
        async def __call__(self, x: int) -> int:
            return x

    assert stage(Fetch, workers=3)().call_kind == "async"


def test_a_class_with_a_generator_call_is_a_generator_stage() -> None:
    class Split:
        def __call__(self, x: str) -> Iterator[str]:
            yield from x.split()

    assert stage(Split)().call_kind == "generator"


def test_a_bare_stage_class_in_a_pipe_is_built_with_no_arguments() -> None:
    Classify = stage(Recorder)
    pipe = inc | Classify
    last = pipe.steps[-1]
    assert isinstance(last, Stage)
    assert last == Classify()


def test_a_bare_stage_class_runs_as_a_pipeline_of_itself() -> None:
    class Double:
        def __call__(self, x: int) -> int:
            return 2 * x

    Doubled = stage(Double, workers=2)
    assert Doubled.run(range(4)) == [0, 2, 4, 6]
    with Doubled.iter([5]) as run:
        assert list(run) == [10]


def test_stage_class_repr_and_equality() -> None:
    Classify = stage(Recorder, workers=2)
    assert "Recorder" in repr(Classify)
    assert Classify == stage(Recorder, workers=2)
    assert hash(Classify) == hash(stage(Recorder, workers=2))
