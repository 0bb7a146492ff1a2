"""Stage options: one frozen record, validated when the stage is made."""

from __future__ import annotations

import math
from collections.abc import Callable, Hashable, Mapping
from typing import Any, Literal, cast

from .._errors import StageOptionError
from .._record import field_defaults, field_names, record
from .._runtime.backends.base import BACKENDS

DEFAULT_BATCH = 32
KEEP_ALIVE_SECONDS = 600.0  # ``keep_alive=True``: a kept worker idle this long is ended
OVERFLOWS = ("block", "drop_oldest", "drop_newest")

Overflow = Literal["block", "drop_oldest", "drop_newest"]
# For type checkers, which need the names spelled out: the registry (``BACKENDS``)
# is the list that counts, and tests/unit/test_layers.py checks the two agree.
BackendName = Literal["thread", "process", "ray"]
ErrorHandler = Callable[[Any, BaseException], object]
OnError = Literal["raise", "skip"] | ErrorHandler
KeyFunction = Callable[[Any], Hashable]


@record  # a frozen dataclass, without importing dataclasses (_record.py)
class StageOptions:
    """The options of one stage, after validation (``batch`` is ``None`` or a size)."""

    name: str
    workers: int = 1
    ordered: bool = True
    batch: int | None = None
    batch_timeout: float | None = None
    window: int | None = None
    stride: int = 1
    buffer: int | None = None  # None: sized automatically (see _transport/buffer.py)
    overflow: Overflow = "block"
    backend: BackendName | None = None
    retries: int = 0
    on_error: OnError = "raise"
    resources: Mapping[str, float] | None = None
    # Seconds a worker is kept idle after a run for the next run of an equal stage
    # (``keep_alive=True``: ``KEEP_ALIVE_SECONDS``); ``None``: ended with its run.
    keep_alive: float | None = None
    timeout: float | None = None  # seconds one call may take (see _runtime/core/timeouts.py)
    key: KeyFunction | None = None  # items with equal keys go to the same worker (keyed.py)
    # May run in one worker with its neighbours that say so too (``_plan/fuse.py``).
    fuse: bool = False

    def __hash__(self) -> int:
        # ``resources`` is a dict: hash its items so that stages with resources stay hashable.
        return hash(tuple(_hashable(getattr(self, n)) for n in field_names(StageOptions)))

    def replace(self, **changes: Any) -> StageOptions:
        if "name" in changes:
            check_name(self.name, changes["name"])
        merged = {n: getattr(self, n) for n in field_names(StageOptions)}
        merged.update(changes)
        return make_options(**merged)

    def describe(self) -> str:
        """The non-default options, as shown by ``print(pipe)``: ``x4,batch=32``."""
        parts: list[str] = []
        if self.workers != 1:
            parts.append(f"x{self.workers}")
        for name, default in field_defaults(StageOptions).items():
            if name == "workers":
                continue
            value = getattr(self, name)
            if value != default:
                shown = getattr(value, "__name__", None) if callable(value) else None
                parts.append(f"{name}={shown or repr(value)}")
        return ",".join(parts)


OPTION_NAMES = frozenset(field_names(StageOptions))


def _hashable(value: object) -> object:
    """``value``, or a mapping's sorted items (``resources``) as a tuple."""
    if isinstance(value, Mapping):
        # isinstance leaves the key and value types unknown; sorting needs none of them
        return tuple(sorted(cast("Mapping[object, object]", value).items()))
    return value


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _positive_int(name: str, option: str, value: object) -> int:
    if not _is_int(value) or value < 1:  # type: ignore[operator]
        raise StageOptionError(name, option, f"{value!r}: expected an int >= 1")
    return value  # type: ignore[return-value]


def _seconds(name: str, option: str, value: object) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise StageOptionError(name, option, f"{value!r}: expected seconds (a number) or None")
    if not math.isfinite(value) or value <= 0:
        raise StageOptionError(name, option, f"{value!r}: expected a positive number of seconds")
    return float(value)


def _batch(name: str, value: object) -> int | None:
    if value is False or value is None:
        return None
    if value is True:
        return DEFAULT_BATCH
    return _positive_int(name, "batch", value)


def _choice(name: str, option: str, value: object, choices: tuple[str, ...]) -> Any:
    if value not in choices:
        allowed = ", ".join(repr(c) for c in choices)
        raise StageOptionError(name, option, f"{value!r}: expected one of {allowed}")
    return value


def _on_error(name: str, value: object) -> OnError:
    if value in ("raise", "skip") or (callable(value) and not isinstance(value, str)):
        return value
    raise StageOptionError(
        name, "on_error", f"{value!r}: expected 'raise', 'skip' or a callable (item, exc)"
    )


def _resources(name: str, value: object) -> Mapping[str, float] | None:
    if value is None:
        return None
    if not isinstance(value, Mapping) or not all(
        isinstance(k, str) and isinstance(v, (int, float)) and not isinstance(v, bool) and v >= 0
        for k, v in cast("Mapping[object, object]", value).items()
    ):
        raise StageOptionError(
            name, "resources", f"{value!r}: expected a dict of resource name -> amount >= 0"
        )
    return dict(cast("Mapping[str, float]", value))  # checked just above


def check_name(stage: str, name: object) -> str:
    """``name=`` as given for the stage now called ``stage``: a non-empty string."""
    if not isinstance(name, str) or not name:
        raise StageOptionError(stage, "name", f"{name!r}: expected a non-empty string")
    return name


def closest_option(given: str) -> str | None:
    """The known option ``given`` most likely meant: ``batch_size`` -> ``batch``."""
    inside = [known for known in OPTION_NAMES if known in given]  # nworkers, buffer_size
    if inside:
        return max(inside, key=len)
    import difflib  # only for a misspelt option: a run never pays for its import

    close = difflib.get_close_matches(given, sorted(OPTION_NAMES), n=1)  # worker, retry
    return close[0] if close else None


def _unknown_option(name: str, option: str, value: object) -> StageOptionError:
    guess = closest_option(option)
    hint = f"did you mean `{guess}`? " if guess else ""
    known = ", ".join(sorted(OPTION_NAMES))
    return StageOptionError(name, option, f"{value!r:.40}: unknown option; {hint}known: {known}")


def make_options(*, name: object, **given: Any) -> StageOptions:
    """Validate raw ``@stage`` keyword options; raise ``StageOptionError`` naming the bad one."""
    name = check_name(str(name), name)
    unknown = sorted(set(given) - OPTION_NAMES)
    if unknown:
        raise _unknown_option(name, unknown[0], given[unknown[0]])
    d = StageOptions(name=name)
    workers = _positive_int(name, "workers", given.get("workers", d.workers))
    ordered = given.get("ordered", d.ordered)
    if not isinstance(ordered, bool):
        raise StageOptionError(name, "ordered", f"{ordered!r}: expected True or False")
    batch = _batch(name, given.get("batch", d.batch))
    batch_timeout = _seconds(name, "batch_timeout", given.get("batch_timeout"))
    if batch_timeout is not None and batch is None:
        raise StageOptionError(name, "batch_timeout", f"{batch_timeout!r}: needs batch= as well")
    window_raw = given.get("window")
    window = None if window_raw is None else _positive_int(name, "window", window_raw)
    stride = _positive_int(name, "stride", given.get("stride", d.stride))
    if window is not None and batch is not None:
        raise StageOptionError(name, "window", f"{window!r}: cannot be combined with batch=")
    if window is None and stride != 1:
        raise StageOptionError(name, "stride", f"{stride!r}: needs window= as well")
    return StageOptions(
        name=name,
        workers=workers,
        ordered=ordered,
        batch=batch,
        batch_timeout=batch_timeout,
        window=window,
        stride=stride,
        buffer=None
        if given.get("buffer") is None
        else _positive_int(name, "buffer", given["buffer"]),
        overflow=_choice(name, "overflow", given.get("overflow", d.overflow), OVERFLOWS),
        backend=None
        if given.get("backend") is None
        else _choice(name, "backend", given["backend"], BACKENDS),
        retries=_retries(name, given.get("retries", d.retries)),
        on_error=_on_error(name, given.get("on_error", d.on_error)),
        resources=_resources(name, given.get("resources")),
        keep_alive=_keep_alive(name, given.get("keep_alive")),
        timeout=_seconds(name, "timeout", given.get("timeout")),
        key=_key(name, given.get("key"), window),
        fuse=_fuse(name, given),
    )


# What a fused stage cannot have: each would make one stage's worker, buffer or error
# policy the whole group's (docs/processes.md, "Fusing cheap stages").
_UNFUSABLE = {
    "workers": (1, "a fused group has one worker"),
    "batch": (None, "a fused stage is called one item at a time"),
    "window": (None, "a fused stage is called one item at a time"),
    "key": (None, "a fused group has one worker"),
    "timeout": (None, "a timed call needs a worker of its own"),
    "retries": (0, "a retry or skip inside a group would shift the inputs of the stages after it"),
    "on_error": ("raise", "a skip inside a group would shift the inputs of the stages after it"),
    "overflow": ("block", "a fused stage has no input buffer of its own"),
    "keep_alive": (None, "a kept worker belongs to one stage"),
    "resources": (None, "a fused group's worker is placed for its first stage"),
}


def _fuse(name: str, given: dict[str, Any]) -> bool:
    """``fuse``: True or False; True only with options a fused stage can honour."""
    fuse = given.get("fuse", False)
    if not isinstance(fuse, bool):
        raise StageOptionError(name, "fuse", f"{fuse!r}: expected True or False")
    if fuse:
        for option, (default, why) in _UNFUSABLE.items():
            value = given.get(option, default)
            if value is not None and value is not False and value != default:
                shown = getattr(value, "__name__", None) if callable(value) else None
                raise StageOptionError(
                    name,
                    "fuse",
                    f"True cannot be combined with {option}={shown or repr(value)}: {why}",
                )
    return fuse


def _keep_alive(name: str, value: object) -> float | None:
    """``keep_alive``: False/None (ended with the run), True (the default idle time),
    or seconds a kept worker may stay idle."""
    if value is None or value is False:
        return None
    if value is True:
        return KEEP_ALIVE_SECONDS
    number = isinstance(value, (int, float)) and not isinstance(value, bool)
    if number and math.isfinite(value) and value > 0:  # type: ignore[arg-type,operator]
        return float(value)  # type: ignore[arg-type]
    raise StageOptionError(
        name, "keep_alive", f"{value!r}: expected True, False or a positive number of seconds"
    )


def _key(name: str, value: object, window: int | None) -> KeyFunction | None:
    if value is None:
        return None
    if not callable(value):
        raise StageOptionError(
            name,
            "key",
            f"{value!r:.40}: expected a callable item -> hashable, e.g. lambda f: f.camera",
        )
    if window is not None:
        # A window spans the stage's whole input; per-key windows are a keyed
        # class stage that keeps each key's last items (docs/stages.md).
        raise StageOptionError(name, "key", f"{value!r:.40}: cannot be combined with window=")
    return cast("KeyFunction", value)


def _retries(name: str, value: object) -> int:
    if not _is_int(value) or value < 0:  # type: ignore[operator]
        raise StageOptionError(name, "retries", f"{value!r}: expected an int >= 0")
    return value  # type: ignore[return-value]
