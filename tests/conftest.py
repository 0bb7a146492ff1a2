"""Suite-wide guards: every test must leave no thread behind; backends are a fixture."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import pytest

BACKENDS = ["thread"]  # the process and Ray issues add theirs here


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    """The backend a behaviour test runs on: one run of the suite per backend."""
    return str(request.param)


@pytest.fixture(autouse=True)
def no_leftover_threads() -> Iterator[None]:
    """Fail any test that leaves a thread running once it is over.

    Runs are expected to join their workers when they end or are closed; the
    grace period only covers a thread between its last statement and its exit.
    """
    before = set(threading.enumerate())
    yield
    deadline = time.monotonic() + 2.0
    for thread in set(threading.enumerate()) - before:
        thread.join(max(0.0, deadline - time.monotonic()))
    left = [t.name for t in set(threading.enumerate()) - before if t.is_alive()]
    assert not left, f"threads left running after the test: {left}"
