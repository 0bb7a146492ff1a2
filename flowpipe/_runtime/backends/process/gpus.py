"""GPUs per worker process: ``resources={"num_gpus": n}`` on the process backend.

Each worker process of such a stage sees its own devices: ``CUDA_VISIBLE_DEVICES``
is set in its environment before anything runs in it (so CUDA, PyTorch and
friends number its devices from 0), taken round-robin over the devices this
process sees. Those are the ones its own ``CUDA_VISIBLE_DEVICES`` lists when
it is set (an empty value or ``-1``: none), else the NVIDIA devices the driver
shows (``/proc/driver/nvidia/gpus``). A fraction (``0.5``) shares a device
round-robin like a whole one; more devices per worker than the machine has is
refused when the run starts, naming the stage.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping

from ...._errors import StageOptionError

NVIDIA_GPUS = "/proc/driver/nvidia/gpus"


def visible_devices() -> list[str]:
    """The devices this process may hand out, as ``CUDA_VISIBLE_DEVICES`` names them."""
    listed = os.environ.get("CUDA_VISIBLE_DEVICES")
    if listed is not None:
        names = [d.strip() for d in listed.split(",") if d.strip()]
        return [] if names[:1] == ["-1"] else names
    try:
        return [str(k) for k in range(len(os.listdir(NVIDIA_GPUS)))]
    except OSError:  # no NVIDIA driver here
        return []


def gpus_per_worker(resources: Mapping[str, float] | None) -> int:
    """Whole devices each worker gets (a fraction counts as one shared device)."""
    amount = float((resources or {}).get("num_gpus", 0))
    return math.ceil(amount) if amount > 0 else 0


class DeviceDealer:
    """Deals devices to a run's GPU workers in turn, across its stages."""

    def __init__(self) -> None:
        self.devices: list[str] | None = None  # read once per run, when first needed
        self.next = 0

    def deal(self, label: str, per_worker: int, workers: int) -> list[str]:
        """``CUDA_VISIBLE_DEVICES`` for each of a stage's workers."""
        if self.devices is None:
            self.devices = visible_devices()
        have = len(self.devices)
        if per_worker > have:
            seen = os.environ.get("CUDA_VISIBLE_DEVICES")
            where = f"CUDA_VISIBLE_DEVICES={seen!r}" if seen is not None else "the NVIDIA driver"
            raise StageOptionError(
                label,
                "resources",
                f"asks for {per_worker} GPU(s) per worker; this machine has {have} ({where})",
            )
        dealt: list[str] = []
        for _ in range(workers):
            picks = [self.devices[(self.next + k) % have] for k in range(per_worker)]
            self.next = (self.next + per_worker) % have
            dealt.append(",".join(picks))
        return dealt
