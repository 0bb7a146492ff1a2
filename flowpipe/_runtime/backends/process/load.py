"""The process backend as ``load_backend("process")`` loads it: the fork server first.

Where the fork server is a copy of the caller (``callerfork``), it imports
what a worker needs (about 10 ms) while this process imports the backend
(about 25 ms: cloudpickle, the transport, the remote machinery), each on a
core of its own, and the first workers are forked as soon as the backend
asks. Started later, the server's imports came after the backend's, on the
way to the first result (issue 21). The backend asks for the server again
when each run starts (``ProcessBackend``): a later run finds it, or starts a
new one if it has ended.
"""

from __future__ import annotations

from . import forkserver

forkserver.server()

from .backend import backend_class as backend_class  # noqa: E402 - after the server's start
