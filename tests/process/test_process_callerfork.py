"""Process backend only: the fork server forked from a caller that runs one thread
(``backends/process/callerfork.py``), and booted afresh otherwise.

Each case runs a fresh program (the test process itself may run threads), which
prints what it saw as JSON.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

PROGRAM = r"""
import json, os, signal, sys, threading
import colorsys  # imported by the caller only: a worker of a copy has it too
from flowpipe import stage
from flowpipe._runtime.backends.process import callerfork, forkserver
from flowpipe._transport import recycle

MODE, LOG = sys.argv[1], sys.argv[2]
import logging
logging.basicConfig(filename=LOG, format="%(message)s")  # a file open in the caller
if MODE == "threaded":
    stop = threading.Event()
    helper = threading.Thread(target=stop.wait)
    helper.start()
if MODE == "large":
    callerfork.FORK_MAX_RSS = 1
recycle._adopted.add("caller-state")  # run state of the caller's: must not come along
signal.signal(signal.SIGTERM, lambda *_: None)
print("said once", end="\n", flush=False)  # still in the buffer at the fork

def look(_):
    from flowpipe._transport import recycle as fresh
    print("worker output", flush=True)
    logging.warning("logged in %s", os.getpid())  # to the caller's file, in a copy
    return {
        "colorsys": "colorsys" in sys.modules,
        "caller_state": "caller-state" in fresh._adopted,
        "sigterm_default": signal.getsignal(signal.SIGTERM) == signal.SIG_DFL,
        "stdin": os.readlink("/proc/self/fd/0"),
    }

(seen,) = stage(look).run([0], backend="process")
(again,) = stage(look).run([1], backend="process")
seen["twice"] = again == seen
server = forkserver._server
seen["copied"] = isinstance(server.proc, callerfork.Child)
seen["server_session"] = os.getsid(server.proc.pid) == server.proc.pid
if MODE == "threaded":
    stop.set()
    helper.join()
forkserver.shutdown()
seen["reaped"] = not os.path.exists(f"/proc/{server.proc.pid}")
print(json.dumps(seen))
"""


def run_program(mode: str, log: Path, **env: str) -> tuple[dict[str, Any], str]:
    done = subprocess.run(
        [sys.executable, "-c", PROGRAM, mode, str(log)],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
        # Block-buffered output, as a program's is when piped: what it printed is
        # still in its buffer at the fork.
        env={**{k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"}, **env},
    )
    lines = done.stdout.splitlines()
    return json.loads(lines[-1]), "\n".join(lines[:-1])


def test_a_caller_that_runs_one_thread_is_copied_into_a_fresh_flowpipe(tmp_path: Path) -> None:
    log = tmp_path / "caller.log"
    seen, printed = run_program("plain", log, FLOWPIPE_FRESH_WORKERS="")
    assert seen["copied"]
    assert seen["colorsys"]  # the caller's imports come along ...
    assert not seen["caller_state"]  # ... flowpipe's run state does not
    assert seen["sigterm_default"]  # nor a signal handler of the caller's
    assert seen["stdin"] == os.devnull
    assert seen["server_session"]
    assert seen["twice"] is True  # the next run is served the same way
    assert seen["reaped"]
    # What the caller had printed but not flushed is not written again by the copy.
    assert printed.splitlines().count("said once") == 1
    assert printed.splitlines().count("worker output") == 2
    # The caller's files stay open in the copy: its log file's handler works there.
    assert log.read_text().count("logged in") == 2


@pytest.mark.parametrize(
    ("mode", "env"),
    [
        ("threaded", {}),  # another thread runs: never fork
        ("large", {}),  # over FORK_MAX_RSS: its pages would stay with the server
        ("plain", {"FLOWPIPE_FRESH_WORKERS": "1"}),  # asked for
    ],
)
def test_otherwise_the_server_is_a_fresh_interpreter(
    mode: str, env: dict[str, str], tmp_path: Path
) -> None:
    seen, printed = run_program(mode, tmp_path / "caller.log", **env)
    assert not seen["copied"]
    assert not seen["colorsys"]
    assert not seen["caller_state"]
    assert seen["sigterm_default"]
    assert seen["reaped"]
    assert printed.splitlines().count("said once") == 1
