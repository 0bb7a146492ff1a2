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
