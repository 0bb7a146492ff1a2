"""Option validation: every bad value is refused when the stage is made, naming option and stage."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from typing import Any

import pytest

from flowpipe import GraphError, StageOptionError, StageOptions, stage


def double(x: int) -> int:
    return 2 * x


def handler(item: object, exc: BaseException) -> None:
    """An on_error callable; never called here."""


BAD_OPTIONS: list[tuple[str, dict[str, Any]]] = [
    ("workers", {"workers": 0}),
    ("workers", {"workers": -3}),
    ("workers", {"workers": 2.5}),
    ("workers", {"workers": True}),
    ("workers", {"workers": "4"}),
    ("ordered", {"ordered": 1}),
    ("ordered", {"ordered": "yes"}),
    ("batch", {"batch": -1}),
    ("batch", {"batch": 0}),
    ("batch", {"batch": 2.0}),
    ("batch", {"batch": "32"}),
    ("batch_timeout", {"batch_timeout": 0.5}),  # without batch=
    ("batch_timeout", {"batch": 4, "batch_timeout": 0}),
    ("batch_timeout", {"batch": 4, "batch_timeout": -1.0}),
    ("batch_timeout", {"batch": 4, "batch_timeout": float("inf")}),
    ("batch_timeout", {"batch": 4, "batch_timeout": float("nan")}),
    ("batch_timeout", {"batch": 4, "batch_timeout": "1s"}),
    ("window", {"window": 0}),
    ("window", {"window": -2}),
    ("window", {"window": 3, "batch": 4}),
    ("stride", {"stride": 2}),  # without window=
    ("stride", {"window": 3, "stride": 0}),
    ("buffer", {"buffer": 0}),
    ("buffer", {"buffer": -5}),
    ("buffer", {"buffer": 1.5}),
    ("overflow", {"overflow": "x"}),
    ("overflow", {"overflow": "drop"}),
    ("overflow", {"overflow": None}),
    ("backend", {"backend": "gpu"}),
    ("backend", {"backend": "threads"}),
    ("retries", {"retries": -1}),
    ("retries", {"retries": 1.0}),
    ("retries", {"retries": None}),
    ("on_error", {"on_error": "bogus"}),
    ("on_error", {"on_error": "ignore"}),
    ("on_error", {"on_error": None}),
    ("on_error", {"on_error": 3}),
    ("resources", {"resources": {"num_gpus": -1}}),
    ("resources", {"resources": {"num_gpus": "one"}}),
    ("resources", {"resources": ["num_gpus"]}),
    ("resources", {"resources": {1: 1}}),
    ("timeout", {"timeout": 0}),
    ("timeout", {"timeout": -1}),
    ("timeout", {"timeout": "5s"}),
    ("timeout", {"timeout": True}),
    ("timeout", {"timeout": float("inf")}),
    ("timeout", {"timeout": float("nan")}),
    ("timeout", {"timeout": [1.0]}),
    ("name", {"name": 42}),
    ("name", {"name": ""}),
    ("nworkers", {"nworkers": 2}),  # an unknown option
    ("buffer_size", {"buffer_size": 8}),
]


def _ids(case: tuple[str, dict[str, Any]]) -> str:
    return ",".join(f"{k}={v!r}" for k, v in case[1].items())


@pytest.mark.parametrize(("option", "given"), BAD_OPTIONS, ids=[_ids(c) for c in BAD_OPTIONS])
def test_bad_option_raises_value_error_naming_option_and_stage(
    option: str, given: dict[str, Any]
) -> None:
    with pytest.raises(ValueError, match=option) as info:
        stage(double, **given)
    message = str(info.value)
    assert "double" in message or "name" in given, message
    assert isinstance(info.value, StageOptionError)
    assert info.value.option == option
    if "name" not in given:
        assert info.value.stage == "double"


@pytest.mark.parametrize(("option", "given"), BAD_OPTIONS, ids=[_ids(c) for c in BAD_OPTIONS])
def test_bad_option_is_refused_by_the_called_decorator_too(
    option: str, given: dict[str, Any]
) -> None:
    with pytest.raises(ValueError, match=option):
        stage(**given)(double)


@pytest.mark.parametrize(
    ("given", "meant"),
    [
        ("nworkers", "workers"),
        ("num_workers", "workers"),
        ("worker", "workers"),
        ("batch_size", "batch"),
        ("buffer_size", "buffer"),
        ("retry", "retries"),
        ("onerror", "on_error"),
        ("stage_name", "name"),
    ],
)
def test_an_unknown_option_names_the_closest_known_one(given: str, meant: str) -> None:
    options: dict[str, Any] = {given: 2}
    with pytest.raises(StageOptionError) as info:
        stage(double, **options)
    assert f"did you mean `{meant}`?" in str(info.value)
    assert (info.value.stage, info.value.option) == ("double", given)


def test_an_unknown_option_far_from_any_lists_every_known_option() -> None:
    with pytest.raises(StageOptionError) as info:
        stage(double, colour="red")  # type: ignore[call-overload]
    message = str(info.value)
    assert "did you mean" not in message
    listed = message.split("known: ")[1].split(", ")
    assert listed == sorted(f.name for f in dataclasses.fields(StageOptions))
    assert "name" in listed


def test_an_empty_name_is_refused_naming_the_function() -> None:
    with pytest.raises(
        StageOptionError, match=r"stage 'double': option name='': expected a non-empty"
    ):
        stage(double, name="")
    with pytest.raises(StageOptionError, match=r"stage 'double': option name='':"):
        stage(name="")(double)
    with pytest.raises(StageOptionError, match=r"stage 'twice': option name='':"):
        stage(double, name="twice").with_options(name="")
    assert stage(double, name=None).name == "double"  # None: the default


def test_the_message_names_a_custom_stage_name() -> None:
    with pytest.raises(ValueError, match=r"'parse'.*workers=0"):
        stage(double, workers=0, name="parse")


def test_a_lambda_stage_is_named_in_errors() -> None:
    with pytest.raises(ValueError, match=r"'lambda'.*buffer"):
        stage(lambda x: x, buffer=0)


def test_a_bad_option_on_a_class_stage_names_the_class() -> None:
    class Classify:
        def __call__(self, x: int) -> int:
            return x

    with pytest.raises(ValueError, match=r"'Classify'.*on_error"):
        stage(Classify, on_error="bogus")  # type: ignore[call-overload]


def test_with_options_validates_too() -> None:
    good = stage(double, workers=2)
    with pytest.raises(ValueError, match=r"'double'.*workers"):
        good.with_options(workers=0)
    assert good.options.workers == 2


def test_defaults() -> None:
    o = stage(double).options
    assert (o.name, o.workers, o.ordered, o.batch, o.batch_timeout) == (
        "double",
        1,
        True,
        None,
        None,
    )
    assert (o.window, o.stride, o.overflow, o.backend, o.retries, o.on_error, o.resources) == (
        None,
        1,
        "block",
        None,
        0,
        "raise",
        None,
    )
    assert o.buffer is None or o.buffer > 0


def test_good_values_are_kept() -> None:
    o = stage(
        double,  # type: ignore[arg-type]  # not a batch function: options only
        workers=3,
        ordered=False,
        batch=8,
        batch_timeout=0.25,
        buffer=16,
        overflow="drop_oldest",
        backend="thread",
        retries=2,
        on_error=handler,
        name="renamed",
        resources={"num_gpus": 1, "num_cpus": 0.5},
        timeout=2,
    ).options
    assert o.timeout == 2.0
    assert o.workers == 3
    assert o.ordered is False
    assert o.batch == 8
    assert o.batch_timeout == 0.25
    assert o.buffer == 16
    assert o.overflow == "drop_oldest"
    assert o.backend == "thread"
    assert o.retries == 2
    assert o.on_error is handler
    assert o.name == "renamed"
    assert o.resources == {"num_gpus": 1, "num_cpus": 0.5}


@pytest.mark.parametrize("overflow", ["block", "drop_oldest", "drop_newest"])
def test_every_overflow_policy_is_accepted(overflow: str) -> None:
    assert stage(double, overflow=overflow).options.overflow == overflow


@pytest.mark.parametrize("backend", ["thread", "process", "ray", None])
def test_every_backend_name_is_accepted(backend: str | None) -> None:
    assert stage(double, backend=backend).options.backend == backend


def test_batch_true_means_a_default_size_and_false_means_no_batching() -> None:
    default = stage(double, batch=True).options.batch  # type: ignore[arg-type]
    assert isinstance(default, int)
    assert default > 1
    assert stage(double, batch=False).options.batch is None
    assert stage(double, batch=1).options.batch == 1  # type: ignore[arg-type]


def test_window_and_stride() -> None:
    o = stage(double, window=5, stride=2).options  # type: ignore[arg-type]
    assert (o.window, o.stride) == (5, 2)


def test_on_error_skip_and_raise_are_accepted() -> None:
    assert stage(double, on_error="skip").options.on_error == "skip"
    assert stage(double, on_error="raise").options.on_error == "raise"


def test_stage_options_are_frozen() -> None:
    o = stage(double).options
    with pytest.raises(AttributeError):
        o.workers = 4  # type: ignore[misc]


def test_options_with_resources_are_hashable() -> None:
    a = stage(double, resources={"num_gpus": 1})
    b = stage(double, resources={"num_gpus": 1})
    assert a == b
    assert hash(a) == hash(b)
    assert len({a, b}) == 1


def test_timeout_defaults_to_none_and_does_not_apply_to_a_source_stage() -> None:
    assert stage(double).options.timeout is None

    def numbers() -> Iterator[int]:
        yield 1

    with pytest.raises(GraphError, match=r"'numbers'.*timeout="):
        stage(numbers, timeout=1.0)
