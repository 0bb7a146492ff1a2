"""``|``: composing stages, pipelines, callables and branches into immutable graphs."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from flowpipe import GraphError, Pipeline, Stage, merge, stage
from flowpipe._dsl.pipeline import FanOut


@stage
def inc(x: int) -> int:
    return x + 1


@stage(workers=2)
def double(x: int) -> int:
    return 2 * x


@stage
def neg(x: int) -> int:
    return -x


@stage
def spread(x: int) -> Iterator[int]:
    yield x
    yield x


def plain(x: int) -> int:
    return x - 1


def test_stage_or_stage_is_a_pipeline_of_both() -> None:
    pipe = inc | double
    assert isinstance(pipe, Pipeline)
    assert pipe.steps == (inc, double)


def test_pipelines_compose_with_stages_and_pipelines() -> None:
    left = inc | double
    right = neg | inc
    assert (left | right).steps == (inc, double, neg, inc)
    assert (left | neg).steps == (inc, double, neg)
    assert (neg | left).steps == (neg, inc, double)


def test_composition_is_associative() -> None:
    assert ((inc | double) | neg) == (inc | (double | neg))


def test_a_plain_callable_is_wrapped_with_default_options() -> None:
    for pipe in (inc | plain, plain | inc):
        wrapped = [s for s in pipe.stages if s.target is plain]
        assert len(wrapped) == 1
        assert wrapped[0].name == "plain"
        assert wrapped[0].options == stage(plain).options


def test_a_lambda_next_to_a_stage_is_wrapped() -> None:
    pipe = inc | (lambda x: x * 3)
    last = pipe.steps[-1]
    assert isinstance(last, Stage)
    assert last.name == "lambda"
    assert last(2) == 6


def test_a_builtin_callable_is_wrapped() -> None:
    pipe = inc | str
    assert pipe.stages[-1].name == "str"


def test_composition_never_changes_its_operands() -> None:
    base = inc | double
    steps = base.steps
    extended = base | neg
    other = base | inc
    assert base.steps == steps == (inc, double)
    assert extended.steps == (inc, double, neg)
    assert other.steps == (inc, double, inc)
    assert extended is not base


def test_a_stage_can_be_reused_in_several_pipelines_and_twice_in_one() -> None:
    a = inc | double
    b = neg | double
    twice = inc | inc | inc
    assert a.steps[1] is b.steps[1] is double
    assert twice.stages == (inc, inc, inc)


def test_pipelines_are_immutable() -> None:
    pipe = inc | double
    with pytest.raises(AttributeError):
        pipe.steps = ()
    with pytest.raises(AttributeError):
        pipe.source = [1]
    with pytest.raises(AttributeError):
        del pipe.steps
    assert pipe.steps == (inc, double)


def test_stages_are_immutable() -> None:
    before = inc.options
    with pytest.raises(AttributeError):
        inc.options = double.options
    with pytest.raises(AttributeError):
        inc.anything = 1  # type: ignore[attr-defined]
    assert inc.options is before


def test_pipeline_equality_and_hash() -> None:
    assert (inc | double) == (inc | double)
    assert hash(inc | double) == hash(inc | double)
    assert (inc | double) != (double | inc)


@pytest.mark.parametrize("bad", [5, "text", 2.5, None, [inc], {1, 2}])
def test_stage_or_a_non_callable_raises_type_error_naming_the_stage(bad: object) -> None:
    with pytest.raises(TypeError, match="inc") as info:
        inc | bad  # type: ignore[operator]
    assert type(bad).__name__ in str(info.value)
    assert isinstance(info.value, GraphError)


def test_pipeline_or_a_non_callable_names_the_pipeline() -> None:
    with pytest.raises(TypeError, match=r"double"):
        inc | double | 5  # type: ignore[operator]


def test_a_non_callable_left_of_a_stage_is_refused() -> None:
    with pytest.raises(TypeError):
        5 | inc  # type: ignore[operator]


def test_an_empty_fan_out_is_refused() -> None:
    with pytest.raises(GraphError, match=r"empty tuple after inc: a fan-out needs at least one"):
        inc | ()
    with pytest.raises(GraphError, match=r"empty dict after inc \| double"):
        inc | double | {}


# -- binding a source -------------------------------------------------------------------


def test_an_iterable_on_the_left_binds_a_source() -> None:
    items = [1, 2, 3]
    pipe = items | inc | double
    assert isinstance(pipe, Pipeline)
    assert pipe.source is items
    assert pipe.steps == (inc, double)


def test_a_generator_on_the_left_binds_without_being_read() -> None:
    pulled: list[int] = []

    def numbers() -> Iterator[int]:
        for i in range(3):
            pulled.append(i)
            yield i

    pipe = numbers() | inc
    assert pipe.source is not None
    assert pulled == []


def test_a_bound_pipeline_cannot_follow_another_step() -> None:
    bound = [1, 2] | inc
    with pytest.raises(TypeError, match="source"):
        double | bound  # type: ignore[operator]


def test_bind_refuses_a_non_iterable() -> None:
    with pytest.raises(TypeError, match="iterable"):
        (inc | double).bind(5)  # type: ignore[arg-type]


def test_a_tuple_of_items_is_a_source_but_a_tuple_of_callables_is_a_fan_out() -> None:
    assert (inc | double).bind((1, 2)).source == (1, 2)
    assert ((1, 2) | inc).source == (1, 2)
    fanned = (inc, double) | neg  # type: ignore[operator]  # built, never run
    assert isinstance(fanned.steps[0], FanOut)


# -- fan-out and fan-in -------------------------------------------------------------


def test_a_tuple_of_branches_is_a_join() -> None:
    pipe = inc | (double, neg) | plain  # type: ignore[operator]  # built, never run
    fan = pipe.steps[1]
    assert isinstance(fan, FanOut)
    assert not fan.merge
    assert fan.keys is None
    assert [b.steps for b in fan.branches] == [(double,), (neg,)]
    assert pipe.stages == (inc, double, neg, pipe.stages[-1])


def test_a_dict_of_branches_is_a_named_join() -> None:
    pipe = inc | {"boxes": double, "pose": neg | inc}
    fan = pipe.steps[1]
    assert isinstance(fan, FanOut)
    assert fan.keys == ("boxes", "pose")
    assert fan.branches[1].steps == (neg, inc)


def test_dict_branch_keys_must_be_strings() -> None:
    with pytest.raises(TypeError, match="keys"):
        inc | {1: double, 2: neg}  # type: ignore[dict-item]


def test_branches_may_be_pipelines_plain_callables_and_nested_joins() -> None:
    pipe = inc | (double | neg, plain, (inc, neg))
    fan = pipe.steps[1]
    assert isinstance(fan, FanOut)
    assert fan.branches[0].steps == (double, neg)
    assert fan.branches[1].stages[0].target is plain
    assert isinstance(fan.branches[2].steps[0], FanOut)


def join_branch_cases() -> list[tuple[str, Any, str]]:
    @stage
    def camera() -> Iterator[int]:
        yield 1

    return [
        ("generator", spread, "generator"),
        ("generator in a pipeline", inc | spread, "generator"),
        ("skip", stage(plain, on_error="skip"), "on_error"),
        ("handler", stage(plain, on_error=lambda item, exc: None), "on_error"),
        ("unordered", stage(plain, workers=2, ordered=False), "ordered=False"),
        ("merge", merge(inc, neg), "merge"),
        ("merge in a pipeline", inc | merge(inc, neg), "merge"),
        ("window", stage(plain, window=3), "window"),  # type: ignore[arg-type]  # never run
        ("drop_oldest", stage(plain, overflow="drop_oldest"), "overflow"),
        ("drop_newest", stage(plain, overflow="drop_newest"), "overflow"),
        ("bound source", [1, 2] | inc, "source"),
        ("source stage", camera, "no argument"),
    ]


@pytest.mark.parametrize(
    ("branch", "reason"),
    [(b, r) for _, b, r in join_branch_cases()],
    ids=[i for i, _, _ in join_branch_cases()],
)
def test_a_join_branch_that_is_not_one_to_one_is_refused_with_a_reason(
    branch: Any, reason: str
) -> None:
    with pytest.raises(TypeError, match="one output per input") as info:
        inc | (double, branch)
    assert reason in str(info.value)
    assert "merge" in str(info.value)  # the way out is named
    with pytest.raises(TypeError, match=reason):
        inc | {"ok": double, "bad": branch}


def test_a_refused_join_names_the_branch() -> None:
    with pytest.raises(TypeError, match=r"'bad'.*spread"):
        inc | {"ok": double, "bad": spread}


def test_a_join_refused_in_a_nested_branch() -> None:
    with pytest.raises(TypeError, match="generator"):
        inc | (double, (neg, spread))


def test_one_to_one_branches_with_workers_and_batches_are_fine() -> None:
    batched = stage(lambda xs: xs, batch=4, name="batched")
    pipe = inc | (double, batched, stage(plain, retries=3))
    assert len(pipe.stages) == 4


def test_merge_accepts_any_branches() -> None:
    merged = merge(spread, stage(plain, on_error="skip"), inc | spread)
    fan = merged.steps[0]
    assert isinstance(fan, FanOut)
    assert fan.merge
    assert len(fan.branches) == 3
    assert (inc | merged | neg).steps[1] is fan


def test_merge_needs_two_branches() -> None:
    with pytest.raises(TypeError, match="two"):
        merge(inc)


def test_plain_callables_compose_into_branches() -> None:
    fns: tuple[Callable[[int], int], ...] = (plain, abs)
    pipe = inc | fns
    assert [b.stages[0].target for b in pipe.steps[1].branches] == [plain, abs]  # type: ignore[union-attr]
