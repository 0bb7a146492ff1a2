"""Without the extra flowpipe[ray], backend="ray" fails clearly; importing flowpipe never imports Ray."""

from __future__ import annotations

import subprocess
import sys

import pytest

from flowpipe import FlowpipeError, MissingExtra, stage


def test_a_missing_ray_is_an_error_naming_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "ray", None)  # what an uninstalled package looks like
    with pytest.raises(MissingExtra, match=r"flowpipe\[ray\]") as info:
        stage(lambda x: x).run([1, 2], backend="ray")
    assert isinstance(info.value, ImportError)
    assert isinstance(info.value, FlowpipeError)


def test_importing_flowpipe_does_not_import_ray() -> None:
    code = "import sys, flowpipe; print('ray' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.stdout.strip() == "False", done.stderr


def test_a_lost_node_is_told_from_a_crash_an_input_may_have_caused() -> None:
    """``node_lost``: an unreachable actor, or one dead with its node, is no input's fault
    (the caller then fails at once instead of searching for the input that killed it)."""
    from types import SimpleNamespace

    from flowpipe._runtime.backends.ray_setup import node_lost

    class Unavailable(Exception):
        pass

    ray = SimpleNamespace(exceptions=SimpleNamespace(ActorUnavailableError=Unavailable))
    assert node_lost(ray, Unavailable("the actor is temporarily unavailable"))
    assert node_lost(ray, RuntimeError("The actor died because its node has died."))
    assert not node_lost(ray, RuntimeError("The actor died unexpectedly: killed by SIGSEGV"))
    assert not node_lost(ray, RuntimeError("Worker exit type: SYSTEM_ERROR; ip: 10.0.0.2"))
