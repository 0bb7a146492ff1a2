"""GPUs per worker on the process backend: ``CUDA_VISIBLE_DEVICES`` per worker process.

CI has no GPU, so the devices are given the way a user limits them:
``CUDA_VISIBLE_DEVICES`` in the caller's environment, which the backend deals
out round-robin, one list per worker process, set before the stage is built.
"""

from __future__ import annotations

import os

import pytest
from helpers import Journal

from flowpipe import StageOptionError, stage
from flowpipe._runtime.backends.process import gpus

P = "process"


class Device:
    """Notes the devices its worker process sees, once, when the worker builds it."""

    def __init__(self, journal: Journal, tag: str) -> None:
        journal.write(f"{tag} {os.environ.get('CUDA_VISIBLE_DEVICES', '<unset>')}")

    def __call__(self, x: int) -> int:
        return x


def ident(x: int) -> int:
    return x


def seen(journal: Journal, tag: str) -> list[str]:
    return sorted(journal.lines(tag + " "))


def test_each_worker_gets_a_device_round_robin(
    journal: Journal, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3,5,7")
    detect = stage(Device, name="detect", workers=4, resources={"num_gpus": 1})(journal, "d")
    assert detect.run(range(20), backend=P) == list(range(20))
    assert seen(journal, "d") == ["3", "3", "5", "7"]


def test_several_devices_per_worker_and_stages_share_the_deal(
    journal: Journal, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0,1,2,3")
    big = stage(Device, name="big", workers=1, resources={"num_gpus": 2})(journal, "big")
    half = stage(Device, name="half", workers=2, resources={"num_gpus": 0.5})(journal, "half")
    plain = stage(Device, name="plain", workers=1)(journal, "plain")
    assert (big | half | plain).run(range(8), backend=P) == list(range(8))
    dealt = seen(journal, "big") + seen(journal, "half")
    assert sorted(dealt) == ["0,1", "2", "3"]  # 2 devices, then one each, across stages
    assert seen(journal, "plain") == ["0,1,2,3"]  # no GPUs asked for: the caller's own list


def test_more_gpus_than_the_machine_has_is_refused_at_start(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0,1")
    greedy = stage(ident, name="greedy", resources={"num_gpus": 3})
    with pytest.raises(StageOptionError, match=r"greedy.*resources.*3 GPU.*has 2"):
        greedy.run([1], backend=P)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    with pytest.raises(StageOptionError, match="has 0"):
        stage(ident, name="none", resources={"num_gpus": 1}).run([1], backend=P)


def test_the_device_list_is_read_from_the_environment_or_the_driver(
    monkeypatch: pytest.MonkeyPatch, tmp_path: os.PathLike[str]
) -> None:
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", " 2, 4 ,")
    assert gpus.visible_devices() == ["2", "4"]
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "-1")
    assert gpus.visible_devices() == []
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES")
    driver = os.path.join(tmp_path, "gpus")
    for bus in ("0000:01:00.0", "0000:02:00.0"):
        os.makedirs(os.path.join(driver, bus))
    monkeypatch.setattr(gpus, "NVIDIA_GPUS", driver)
    assert gpus.visible_devices() == ["0", "1"]
    monkeypatch.setattr(gpus, "NVIDIA_GPUS", os.path.join(tmp_path, "absent"))
    assert gpus.visible_devices() == []
