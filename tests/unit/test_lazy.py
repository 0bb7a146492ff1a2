"""Building a graph never runs user code and never starts a thread."""

from __future__ import annotations

import pickle
import threading
from collections.abc import Iterator
from typing import Any

import cloudpickle

from flowpipe import merge, stage

CALLS: list[str] = []


def forbidden(what: str) -> Any:
    CALLS.append(what)
    raise AssertionError(f"user code ran while building: {what}")


@stage(workers=4)
def detect(x: int) -> Any:
    return forbidden("detect")


@stage(batch=8)
def embed(xs: list[int]) -> Any:
    return forbidden("embed")


@stage
def frames(x: int) -> Iterator[int]:
    yield forbidden("frames")


@stage
def camera() -> Iterator[int]:
    yield forbidden("camera")


@stage(workers=2)
async def fetch(x: int) -> Any:
    return forbidden("fetch")


@stage(workers=2)
class Model:
    def __init__(self, threshold: float = 0.5) -> None:
        forbidden("Model.__init__")

    def __call__(self, x: int) -> Any:
        return forbidden("Model.__call__")

    def close(self) -> None:
        forbidden("Model.close")


def on_error(item: object, exc: BaseException) -> None:
    forbidden("on_error")


def source() -> Iterator[int]:
    yield forbidden("source")


def build_everything() -> list[Any]:
    guarded = stage(lambda x: forbidden("lambda"), on_error=on_error, retries=2)
    pipes: list[Any] = [
        camera | detect | embed,
        frames | (detect, Model(0.9)) | {"a": embed, "b": fetch | detect},  # type: ignore[dict-item]  # never run
        merge(frames, Model, detect | frames) | guarded,
        source() | detect | Model,
        [1, 2, 3] | detect,
        range(10) | (detect | (detect, embed)),
        detect | (lambda x: forbidden("plain lambda")),
    ]
    for pipe in list(pipes):
        pipes.append(str(pipe))
        pipes.append(pipe.to_mermaid())
        pipes.append(pipe._repr_markdown_())
        pipes.append(hash(pipe))
        pipes.append(pipe == pipes[0])
        pipes.append(cloudpickle.loads(cloudpickle.dumps(pipe.stages)))
    pipes.append(pickle.loads(pickle.dumps(detect | embed | Model(1.0))))
    pipes.append(detect.with_options(workers=3) | embed.with_options(batch=2))
    return pipes


def test_building_printing_and_pickling_run_no_user_code() -> None:
    CALLS.clear()
    built = build_everything()
    assert CALLS == []
    assert len(built) > 7


def test_building_starts_no_thread() -> None:
    before = set(threading.enumerate())
    build_everything()
    assert set(threading.enumerate()) == before


def test_binding_a_generator_source_does_not_read_it() -> None:
    CALLS.clear()
    pipe = source() | detect
    assert pipe.source is not None
    assert CALLS == []
