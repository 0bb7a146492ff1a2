"""Frames over a stream socket: how a worker process and its caller talk.

A frame is its length (8 bytes, big-endian) and its bytes. This is the part of
``multiprocessing.connection.Connection`` that ``wire`` used (``send_bytes``,
``recv_bytes``, ``poll``, ``close``), without importing ``multiprocessing``
(about 10 ms, in the caller and in every fresh interpreter, on the way to a
process run's first result; issue 21), and with two savings per message:

- ``send_frames`` sends a message's frames (``wire``'s header and payload) in
  one system call where they are small, instead of four;
- reading is buffered: one ``recv`` brings in as many small frames as have
  arrived, instead of two reads (length, then bytes) per frame.

A ``Connection`` may be read by one thread and written by another; two
threads that write must take turns, as with ``multiprocessing``'s. Its end of
file is ``EOFError``, as there.
"""

from __future__ import annotations

import select
import socket
import struct

Buffer = bytes | bytearray | memoryview
_LENGTH = struct.Struct("!Q")
_CHUNK = 1 << 16  # read this much at a time; send frames up to this size in one call


class Connection:
    """Frames over the stream socket whose descriptor is ``fd`` (now owned here)."""

    def __init__(self, fd: int) -> None:
        self._sock = socket.socket(fileno=fd)
        self._buf = bytearray()  # received, not yet taken
        self._at = 0  # where the next frame starts in ``_buf``

    def fileno(self) -> int:
        return self._sock.fileno()

    def send_bytes(self, data: Buffer) -> None:
        self.send_frames(data)

    def send_frames(self, *frames: Buffer) -> None:
        """Each of ``frames`` as a frame, in order; small ones in one system call."""
        views = [memoryview(f).cast("B") for f in frames]
        if sum(v.nbytes for v in views) <= _CHUNK:
            parts: list[Buffer] = []
            for v in views:
                parts += (_LENGTH.pack(v.nbytes), v)
            self._sock.sendall(b"".join(parts))
            return
        for v in views:
            self._sock.sendall(_LENGTH.pack(v.nbytes))
            self._sock.sendall(v)

    def recv_bytes(self) -> bytes:
        """The next frame; ``EOFError`` once the other end has closed."""
        (n,) = _LENGTH.unpack(self._take(_LENGTH.size))
        return self._take(n)

    def _take(self, n: int) -> bytes:
        have = len(self._buf) - self._at
        if have >= n:
            out = bytes(self._buf[self._at : self._at + n])
            self._at += n
            if self._at == len(self._buf):
                self._buf.clear()
                self._at = 0
            return out
        whole = bytearray(n)
        view = memoryview(whole)
        view[:have] = self._buf[self._at :]
        self._buf.clear()
        self._at = 0
        got = have
        while got < n:
            if n - got >= _CHUNK:  # a large frame: straight into its place
                k = self._sock.recv_into(view[got:])
                if k == 0:
                    raise EOFError
                got += k
                continue
            chunk = self._sock.recv(_CHUNK)  # and whatever follows it
            if not chunk:
                raise EOFError
            k = min(len(chunk), n - got)
            view[got : got + k] = chunk[:k]
            got += k
            self._buf += chunk[k:]
        return bytes(whole)

    def poll(self, timeout: float | None = 0.0) -> bool:
        """Whether a frame's bytes (or the end of file) can be read without waiting
        longer than ``timeout`` seconds (``None``: for as long as it takes)."""
        if len(self._buf) > self._at:
            return True
        ready, _, _ = select.select([self._sock], [], [], timeout)
        return bool(ready)

    def close(self) -> None:
        self._sock.close()
