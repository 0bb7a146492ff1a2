"""Reaching Ray from the Ray backend: importing and connecting, shipping a stage to an
actor, and the actor options a stage's ``resources`` ask for (refused at start when no
node of the cluster has them)."""

from __future__ import annotations

import logging
import re
import sys
from typing import Any

import cloudpickle

from ..._errors import MissingExtra, StageOptionError

logger = logging.getLogger("flowpipe")

# Ray's own names for the resources it schedules by; anything else is a custom resource.
_NAMED = ("num_cpus", "num_gpus", "memory")


def import_ray() -> Any:
    try:
        import ray  # pyright: ignore[reportMissingImports]  # the optional extra flowpipe[ray]
    except ImportError as exc:
        raise MissingExtra(
            "backend='ray' needs Ray, which is the optional extra flowpipe[ray]: "
            "pip install -e '.[ray]' in the flowpipe checkout"
        ) from exc
    return ray


def dumps_for_ray(ray: Any, obj: Any) -> bytes:
    """``obj`` (a stage) pickled with Ray's own cloudpickle: the classes it ships by value
    (defined in ``__main__``, a cell, a function) are then the ones Ray's serializer
    knows, so an actor's outputs of such a class come back as the caller's own class
    (with another cloudpickle, Ray would rebuild a copy that ``isinstance`` and ``==``
    reject). Modules registered by value with cloudpickle are registered with Ray's too."""
    ray_pickle = ray.cloudpickle
    for name in cloudpickle.list_registry_pickle_by_value():
        module = sys.modules.get(name)
        if module is not None:
            ray_pickle.register_pickle_by_value(module)
    data: bytes = ray_pickle.dumps(obj)
    return data


def connect(ray: Any) -> None:
    """Use the Ray this process is connected to, or start (or join, with RAY_ADDRESS) one."""
    if not ray.is_initialized():
        logger.info("flowpipe: starting or connecting to Ray for backend='ray'")
        ray.init(include_dashboard=False, log_to_driver=True)


def actor_options(label: str, resources: Any) -> dict[str, Any]:
    """Ray actor options from a stage's ``resources``; 0 CPUs unless asked for.

    An actor that reserves a CPU by default would leave a pipeline with more
    workers than the cluster has CPUs waiting forever for a slot, so flowpipe's
    actors reserve nothing unless the stage says so.
    """
    given = dict(resources or {})
    options: dict[str, Any] = {"num_cpus": float(given.pop("num_cpus", 0))}
    for name in ("num_gpus", "memory"):
        if name in given:
            options[name] = float(given.pop(name))
    if given:
        options["resources"] = {k: float(v) for k, v in given.items()}
    return options


def check_resources(ray: Any, label: str, options: dict[str, Any]) -> None:
    """Refuse a stage whose resources no node of the cluster has (it would wait forever)."""
    total = ray.cluster_resources()
    wanted = {
        {"num_cpus": "CPU", "num_gpus": "GPU"}.get(k, k): v
        for k, v in options.items()
        if k in _NAMED and k != "memory" and v
    }
    wanted.update(options.get("resources", {}))
    for name, amount in wanted.items():
        if total.get(name, 0) < amount:
            have = total.get(name, 0)
            raise StageOptionError(
                label,
                "resources",
                f"asks for {amount:g} {name} per worker, the Ray cluster has {have:g}",
            )


# How Ray words the death of an actor whose node went away (``ActorDiedError``).
_NODE_DIED = re.compile(r"\bnode (has |was )?(died|dead|lost|removed)\b", re.IGNORECASE)


def node_lost(ray: Any, exc: BaseException) -> bool:
    """Whether an actor error says the actor's node is gone (or unreachable), not that
    an input killed it: ``ActorUnavailableError`` (no answer from its node), or an
    ``ActorDiedError`` that names the node's death."""
    unavailable = getattr(ray.exceptions, "ActorUnavailableError", None)
    if unavailable is not None and isinstance(exc, unavailable):
        return True
    return bool(_NODE_DIED.search(str(exc)))
