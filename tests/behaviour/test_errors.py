"""Errors, retries and ``on_error``, on every backend.

Nothing is lost silently: every input is an output, counted as skipped, or the
cause of the raised ``StageError``.
"""

from __future__ import annotations

import itertools
import logging
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest
from helpers import Journal

from flowpipe import FlowpipeError, RunOptionError, StageError, stage


class Unusual(Exception):
    """An exception type users define: its type must survive the trip to the caller."""

    def __init__(self, code: int) -> None:
        super().__init__(f"code {code}")
        self.code = code


def fail_on(bad: int, exc: type[Exception] = Unusual) -> Any:
    def check(x: int) -> int:
        if x == bad:
            raise exc(x)
        return x

    return check


@pytest.mark.parametrize("workers", [1, 4])
def test_a_stage_error_names_the_stage_and_position_and_keeps_the_cause(
    backend: str, workers: int
) -> None:
    fragile = stage(fail_on(37), workers=workers, name="fragile")
    with pytest.raises(StageError) as info:
        fragile.run(range(100), backend=backend)
    err = info.value
    assert isinstance(err, FlowpipeError)
    assert err.stage == "fragile"
    assert err.index == 37
    assert type(err.__cause__) is Unusual
    assert err.__cause__.code == 37
    assert "fragile" in str(err)
    assert "37" in str(err)


def test_the_index_counts_the_failing_stages_own_inputs(backend: str) -> None:
    @stage
    def evens(x: int) -> Iterator[int]:
        if x % 2 == 0:
            yield x

    pipe = evens | stage(fail_on(20, KeyError), name="second")
    with pytest.raises(StageError) as info:
        pipe.run(range(100), backend=backend)
    assert info.value.stage == "second"
    assert info.value.index == 10  # 20 is the 11th even number
    assert isinstance(info.value.__cause__, KeyError)


def test_an_error_in_a_later_stage_of_a_parallel_pipeline(backend: str) -> None:
    pipe = stage(lambda x: x, workers=3) | stage(fail_on(50, ZeroDivisionError), workers=2)
    with pytest.raises(StageError) as info:
        pipe.run(range(200), backend=backend)
    assert info.value.stage == "check"
    assert isinstance(info.value.__cause__, ZeroDivisionError)


def test_an_error_ends_a_run_over_an_infinite_source(backend: str) -> None:
    with pytest.raises(StageError) as info:
        stage(fail_on(500), workers=2).run(itertools.count(), backend=backend)
    assert info.value.index == 500


def test_outputs_before_an_error_are_a_prefix_of_the_expected(backend: str) -> None:
    got: list[int] = []

    def consume() -> None:
        for y in stage(fail_on(300)).iter(range(1000), backend=backend):
            got.append(y)

    with pytest.raises(StageError):
        consume()
    assert got == list(range(len(got)))
    assert len(got) <= 300


def test_an_error_in_a_generator_stage(backend: str) -> None:
    @stage
    def spread(x: int) -> Iterator[int]:
        yield x
        if x == 4:
            raise Unusual(4)
        yield x

    with pytest.raises(StageError) as info:
        spread.run(range(10), backend=backend)
    assert (info.value.stage, info.value.index) == ("spread", 4)
    assert isinstance(info.value.__cause__, Unusual)


def test_an_error_in_a_batch_stage_names_the_batch(backend: str) -> None:
    @stage(batch=4)
    def batched(xs: list[int]) -> list[int]:
        if 9 in xs:
            raise Unusual(9)
        return xs

    with pytest.raises(StageError) as info:
        batched.run(range(20), backend=backend)
    assert info.value.stage == "batched"
    assert info.value.index == 8  # the batch's first item
    assert isinstance(info.value.__cause__, Unusual)


def test_an_error_in_a_join_branch(backend: str) -> None:
    pipe = stage(lambda x: x) | (stage(lambda x: x), stage(fail_on(3), name="branch"))
    with pytest.raises(StageError) as info:
        pipe.run(range(10), backend=backend)
    assert info.value.stage == "branch"
    assert info.value.index == 3


@pytest.mark.parametrize(("returned", "size"), [(0, 4), (3, 4), (5, 4)])
def test_a_batch_function_returning_the_wrong_number_of_outputs(
    backend: str, returned: int, size: int
) -> None:
    @stage(batch=size)
    def miscount(xs: list[int]) -> list[int]:
        return list(range(returned))

    with pytest.raises(StageError, match="miscount") as info:
        miscount.run(range(10), backend=backend)
    assert info.value.stage == "miscount"
    assert info.value.index == 0
    assert "one output per input" in str(info.value)
    assert f"{returned} outputs for {size} inputs" in str(info.value)
    assert isinstance(info.value.__cause__, ValueError)


def test_a_batch_function_returning_a_partial_last_batch_of_the_wrong_length(
    backend: str,
) -> None:
    @stage(batch=4)
    def drops_odd_batch(xs: list[int]) -> list[int]:
        return xs if len(xs) == 4 else xs[:-1]

    with pytest.raises(StageError) as info:
        drops_odd_batch.run(range(10), backend=backend)
    assert info.value.index == 8


def test_the_source_iterator_raising_is_a_stage_error(backend: str) -> None:
    def broken() -> Iterator[int]:
        yield 1
        yield 2
        raise Unusual(99)

    with pytest.raises(StageError) as info:
        stage(lambda x: x).run(broken(), backend=backend)
    assert info.value.stage == "source"
    assert type(info.value.__cause__) is Unusual
    assert "source" in str(info.value)


def test_a_source_that_is_not_iterable_is_refused_before_anything_starts(backend: str) -> None:
    # Known when run()/iter() is called, like ``5 | pipe``: a TypeError then, not a
    # StageError from a worker later.
    with pytest.raises(TypeError, match="iterable"):
        stage(lambda x: x).iter(5, backend=backend)  # type: ignore[arg-type]


def test_a_source_stage_raising_is_a_stage_error_naming_it(backend: str) -> None:
    @stage
    def camera() -> Iterator[int]:
        yield 1
        raise Unusual(1)

    with pytest.raises(StageError) as info:
        (camera | stage(lambda x: x)).run(backend=backend)
    assert info.value.stage == "camera"
    assert type(info.value.__cause__) is Unusual
    assert "after yielding 1 item:" in str(info.value)
    assert info.value.index == 1


@pytest.mark.parametrize("good", [3, 5000])  # 5000: long enough to be read in chunks
def test_a_source_stage_error_counts_what_it_yielded(backend: str, good: int) -> None:
    seen: list[int] = []

    @stage
    def reader() -> Iterator[int]:
        yield from range(good)
        raise Unusual(good)

    with pytest.raises(StageError, match=f"after yielding {good} items") as info:
        seen.extend((reader | stage(lambda x: x)).iter(backend=backend))
    assert info.value.index == good
    assert seen == list(range(len(seen)))  # whatever came out came in order


def test_a_stage_error_crosses_pickling(backend: str) -> None:
    import pickle

    with pytest.raises(StageError) as info:
        stage(fail_on(2), name="fragile").run(range(5), backend=backend)
    back = pickle.loads(pickle.dumps(info.value))
    assert isinstance(back, StageError)
    assert (back.stage, back.index) == ("fragile", 2)
    assert str(back) == str(info.value)


# -- on_error ------------------------------------------------------------------------


def test_skip_drops_failing_items_and_counts_them(backend: str) -> None:
    @stage(on_error="skip", workers=2)
    def picky(x: int) -> int:
        if x % 3 == 0:
            raise ValueError(x)
        return x * 10

    with picky.iter(range(30), backend=backend) as run:
        out = list(run)
    assert out == [x * 10 for x in range(30) if x % 3]
    stats = run.stats["picky"]
    assert stats.skipped == 10
    assert stats.errors == 10
    assert stats.items_in == 30
    assert stats.items_out + stats.skipped == stats.items_in  # nothing lost silently


def test_skip_in_a_batch_stage_skips_the_whole_batch(backend: str) -> None:
    @stage(batch=4, on_error="skip")
    def batched(xs: list[int]) -> list[int]:
        if 5 in xs:
            raise ValueError(5)
        return xs

    with batched.iter(range(12), backend=backend) as run:
        assert list(run) == [0, 1, 2, 3, 8, 9, 10, 11]
    assert run.stats["batched"].skipped == 4


def test_skip_in_a_generator_stage_drops_partial_outputs(backend: str) -> None:
    @stage(on_error="skip")
    def pairs(x: int) -> Iterator[int]:
        yield x
        if x == 2:
            raise ValueError(x)
        yield -x

    with pairs.iter(range(4), backend=backend) as run:
        assert list(run) == [0, 0, 1, -1, 3, -3]
    assert run.stats["pairs"].skipped == 1


def test_skip_does_not_swallow_base_exceptions(backend: str) -> None:
    @stage(on_error="skip")
    def exits(x: int) -> int:
        if x == 3:
            raise SystemExit(3)
        return x

    with pytest.raises(StageError) as info:
        exits.run(range(10), backend=backend)
    assert isinstance(info.value.__cause__, SystemExit)


def test_an_on_error_callable_is_called_with_the_item_and_exception(
    backend: str, journal: Journal
) -> None:
    # From a worker elsewhere the exception is a copy rebuilt by pickle: its type and
    # attributes survive (its message may not: pickle calls Unusual("code 4")).
    def log(item: object, exc: BaseException) -> None:
        journal.write(f"{item} {type(exc).__name__} {getattr(exc, 'code', None)}")

    with stage(fail_on(4), on_error=log, name="checked").iter(range(8), backend=backend) as run:
        assert list(run) == [0, 1, 2, 3, 5, 6, 7]
    assert journal.lines() == ["4 Unusual 4"]
    assert run.stats["checked"].skipped == 1


def test_an_on_error_callable_runs_in_the_callers_process(backend: str) -> None:
    # The documented pattern: a handler that records bad items in a list of the
    # caller's. On process and Ray the call fails in a worker elsewhere; the
    # handler still runs here, where the list is.
    bad: list[tuple[int, str]] = []

    def remember(item: int, exc: BaseException) -> None:
        bad.append((item, type(exc).__name__))

    @stage(on_error=remember, workers=2, retries=1)
    def odd_only(x: int) -> int:
        if x % 5 == 0:
            raise ValueError(x)
        return x

    assert odd_only.run(range(20), backend=backend) == [x for x in range(20) if x % 5]
    assert sorted(bad) == [(x, "ValueError") for x in range(0, 20, 5)]


def test_retries_and_skips_are_logged_in_the_callers_process(
    backend: str, caplog: pytest.LogCaptureFixture
) -> None:
    @stage(on_error="skip", retries=1)
    def picky(x: int) -> int:
        if x == 3:
            raise ValueError(x)
        return x

    with caplog.at_level(logging.INFO, logger="flowpipe"):
        assert picky.run(range(6), backend=backend) == [0, 1, 2, 4, 5]
    messages = [r.getMessage() for r in caplog.records]
    assert any("'picky': retrying input #3" in m for m in messages), messages
    assert any("'picky': skipped input #3" in m for m in messages), messages


def test_an_on_error_callable_that_raises_fails_the_run_on_every_backend(backend: str) -> None:
    def give_up(item: int, exc: BaseException) -> None:
        raise RuntimeError(f"cannot handle {item}")

    with pytest.raises(StageError) as info:
        stage(fail_on(4), on_error=give_up, name="checked").run(range(8), backend=backend)
    assert (info.value.stage, info.value.item) == ("checked", 4)
    assert isinstance(info.value.__cause__, RuntimeError)


class NeedsTwoArguments(Exception):
    """Pickles, but cannot be rebuilt from its ``args`` (one string, for two parameters)."""

    def __init__(self, url: str, code: int) -> None:
        super().__init__(f"{url}: {code}")
        self.url, self.code = url, code


def test_skip_and_retries_survive_an_exception_that_cannot_be_rebuilt(backend: str) -> None:
    tries: dict[int, int] = {}
    bad: list[tuple[int, str]] = []

    def fetch(x: int) -> int:
        tries[x] = tries.get(x, 0) + 1
        if x == 1 or (x == 2 and tries[x] == 1):  # 1 always fails, 2 once
            raise NeedsTwoArguments(f"http://h/{x}", 503)
        return x

    def remember(item: int, exc: BaseException) -> None:
        bad.append((item, str(exc)))

    assert stage(fetch, on_error="skip").run(range(4), backend=backend) == [0, 3]
    tries.clear()
    assert stage(fetch, retries=1).run([0, 2, 3], backend=backend) == [0, 2, 3]
    tries.clear()
    assert stage(fetch, on_error=remember).run(range(4), backend=backend) == [0, 3]
    assert [item for item, _ in bad] == [1, 2]
    assert all("http://h/" in text for _, text in bad)


def test_an_on_error_callable_sees_every_failing_item_once(backend: str, journal: Journal) -> None:
    def log(item: object, exc: BaseException) -> None:
        journal.write(str(item))

    @stage(on_error=log, workers=3)
    def odd_only(x: int) -> int:
        if x % 2 == 0:
            raise ValueError(x)
        return x

    assert odd_only.run(range(40), backend=backend) == list(range(1, 40, 2))
    assert Counter(journal.lines()) == Counter(str(x) for x in range(0, 40, 2))


def test_an_on_error_callable_that_raises_fails_the_run(backend: str) -> None:
    def strict(item: object, exc: BaseException) -> None:
        raise RuntimeError(f"cannot handle {item}")

    with pytest.raises(StageError) as info:
        stage(fail_on(2), on_error=strict, name="s").run(range(5), backend=backend)
    assert info.value.stage == "s"
    assert isinstance(info.value.__cause__, RuntimeError)


# -- retries ------------------------------------------------------------------------------


class Flaky:
    """Fails the first ``k`` calls for each item, then succeeds (state lives in the worker)."""

    def __init__(self, k: int) -> None:
        self.k = k
        self.attempts: Counter[int] = Counter()

    def __call__(self, x: int) -> int:
        self.attempts[x] += 1
        if self.attempts[x] <= self.k:
            raise ConnectionError(f"attempt {self.attempts[x]} for {x}")
        return x * 10


@pytest.mark.parametrize("workers", [1, 3])
def test_retries_make_a_flaky_stage_succeed(backend: str, workers: int) -> None:
    flaky = stage(Flaky, retries=2, workers=workers)(2)
    with flaky.iter(range(20), backend=backend) as run:
        assert list(run) == [x * 10 for x in range(20)]
    stats = run.stats["Flaky"]
    assert stats.retries == 40
    assert stats.errors == 40
    assert stats.skipped == 0


def test_retries_exhausted_raise_the_last_error(backend: str) -> None:
    flaky = stage(Flaky, retries=1)(2)
    with pytest.raises(StageError) as info:
        flaky.run(range(5), backend=backend)
    assert info.value.stage == "Flaky"
    assert info.value.index == 0
    assert isinstance(info.value.__cause__, ConnectionError)
    assert "attempt 2" in str(info.value.__cause__)


def test_retries_then_skip(backend: str) -> None:
    flaky = stage(Flaky, retries=1, on_error="skip")(2)
    with flaky.iter(range(5), backend=backend) as run:
        assert list(run) == []
    assert run.stats["Flaky"].skipped == 5
    assert run.stats["Flaky"].retries == 5


def test_retries_of_a_generator_do_not_duplicate_outputs(backend: str) -> None:
    class FlakyPairs:
        def __init__(self) -> None:
            self.seen: Counter[int] = Counter()

        def __call__(self, x: int) -> Iterator[int]:
            self.seen[x] += 1
            yield x
            if self.seen[x] == 1:
                raise ConnectionError(x)
            yield -x

    out = stage(FlakyPairs, retries=1)().run(range(5), backend=backend)
    assert out == [y for x in range(5) for y in (x, -x)]


def test_retries_of_a_batch(backend: str) -> None:
    class FlakyBatch:
        def __init__(self) -> None:
            self.calls = 0

        def __call__(self, xs: list[int]) -> list[int]:
            self.calls += 1
            if self.calls % 2:
                raise ConnectionError("every other call")
            return [x + 1 for x in xs]

    out = stage(FlakyBatch, batch=3, retries=1)().run(range(10), backend=backend)
    assert out == [x + 1 for x in range(10)]


# -- misuse at call time: refused before anything starts ----------------------------------


def test_a_bound_pipeline_refuses_a_second_source(backend: str) -> None:
    bound = [1, 2] | stage(lambda x: x)
    with pytest.raises(TypeError, match="source"):
        bound.run([3], backend=backend)  # type: ignore[list-item]


def test_a_pipeline_without_a_source_refuses_to_run(backend: str) -> None:
    with pytest.raises(TypeError, match="source"):
        stage(lambda x: x).run(backend=backend)


def test_a_source_stage_refuses_a_source(backend: str) -> None:
    @stage
    def camera() -> Iterator[int]:
        yield 1

    with pytest.raises(TypeError, match="camera"):
        (camera | stage(lambda x: x)).run([1, 2], backend=backend)  # type: ignore[list-item]


def test_an_unknown_run_option_is_refused(backend: str) -> None:
    with pytest.raises(RunOptionError, match="bogus=True"):
        stage(lambda x: x).run([1], backend=backend, bogus=True)


def test_an_unknown_backend_is_refused() -> None:
    with pytest.raises(RunOptionError, match="gpu"):
        stage(lambda x: x).run([1], backend="gpu")


class Unprintable(Exception):
    """An exception whose ``__str__`` and ``__repr__`` raise."""

    def __str__(self) -> str:
        raise RuntimeError("__str__ exploded")

    def __repr__(self) -> str:
        raise RuntimeError("__repr__ exploded")


def test_an_exception_that_cannot_be_printed_keeps_its_type_index_and_item(backend: str) -> None:
    with pytest.raises(StageError) as info:
        stage(fail_on(3, Unprintable), name="odd").run(range(6), backend=backend)
    err = info.value
    assert type(err.__cause__) is Unprintable
    assert err.__cause__.args == (3,)
    assert (err.stage, err.index, err.item) == ("odd", 3, 3)
    assert "Unprintable: <unprintable Unprintable>" in str(err)


def test_an_exception_that_cannot_be_printed_is_logged_when_skipped(
    backend: str, caplog: pytest.LogCaptureFixture
) -> None:
    odd = stage(fail_on(3, Unprintable), name="odd", on_error="skip", retries=1)
    with caplog.at_level(logging.INFO, logger="flowpipe"):
        assert odd.run(range(6), backend=backend) == [0, 1, 2, 4, 5]
    said = [r.getMessage() for r in caplog.records]
    assert "stage 'odd': retrying input #3 (<unprintable Unprintable>), attempt 2" in said
    assert "stage 'odd': skipped input #3 after <unprintable Unprintable>" in said


def test_a_huge_exception_message_is_cut_with_its_length_noted(backend: str) -> None:
    def shout(x: int) -> int:
        raise ValueError("x" * 5_000_000)

    with pytest.raises(StageError) as info:
        stage(shout, name="loud").run([7], backend=backend)
    err = info.value
    assert len(str(err)) < 50_000  # not the message once or twice over
    assert "[cut: 5000000 characters in all]" in str(err)
    assert type(err.__cause__) is ValueError
    assert len(err.__cause__.args[0]) == 5_000_000  # the exception itself is whole
    assert (err.index, err.item) == (0, 7)
