"""``_transport/conn.Connection``: frames over a socket pair, as ``wire`` uses them."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator

import pytest

from flowpipe._transport.conn import Connection


@pytest.fixture
def pair() -> Iterator[tuple[Connection, Connection]]:
    a, b = socket.socketpair()
    left, right = Connection(a.detach()), Connection(b.detach())
    yield left, right
    left.close()
    right.close()


def test_frames_arrive_whole_and_in_order_whatever_their_sizes(
    pair: tuple[Connection, Connection],
) -> None:
    left, right = pair
    sizes = [0, 1, 7, 8, 100, 65_535, 65_536, 65_537, 3 << 20, 5, 0, 200_000]
    sent = [bytes([i % 251]) * n for i, n in enumerate(sizes)]

    def write() -> None:  # large frames need a reader while they are written
        for i in range(0, len(sent), 2):
            left.send_frames(*sent[i : i + 2])  # pairs, as wire.send sends them

    writer = threading.Thread(target=write)
    writer.start()
    got = [right.recv_bytes() for _ in sent]
    writer.join(10)
    assert [len(g) for g in got] == sizes
    assert got == sent


def test_many_small_frames_are_read_from_one_buffer_and_poll_sees_them(
    pair: tuple[Connection, Connection],
) -> None:
    left, right = pair
    assert not right.poll(0.0)
    for i in range(50):
        left.send_bytes(b"x" * i)
    assert right.poll(5.0)
    assert right.recv_bytes() == b""
    assert right.poll(0.0)  # what the first read brought in is buffered here
    assert [len(right.recv_bytes()) for _ in range(49)] == list(range(1, 50))
    assert not right.poll(0.0)
    left.send_bytes(memoryview(bytearray(b"view")))
    assert right.recv_bytes() == b"view"


def test_the_other_end_closing_is_end_of_file(pair: tuple[Connection, Connection]) -> None:
    left, right = pair
    left.send_bytes(b"last")
    left.close()
    assert right.recv_bytes() == b"last"
    assert right.poll(1.0)  # end of file is readable
    with pytest.raises(EOFError):
        right.recv_bytes()


def test_a_frame_cut_short_by_the_end_of_file_is_end_of_file_too() -> None:
    a, b = socket.socketpair()
    right = Connection(b.detach())
    a.sendall((1000).to_bytes(8, "big") + b"only part of it")
    a.close()
    with pytest.raises(EOFError):
        right.recv_bytes()
    right.close()
