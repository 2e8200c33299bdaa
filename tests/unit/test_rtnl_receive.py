"""rtnl.receive: one datagram read into the thread's buffer, copied out at its size."""

from __future__ import annotations

import errno
import socket
import threading

import pytest

from weaved.dataplane.rtnl import READ_SIZE, DumpError, receive


def test_each_read_is_one_datagram_at_its_own_size() -> None:
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
    with a, b:
        a.send(b"x" * 100)
        a.send(b"y" * 3)
        first = receive(b)
        assert receive(b) == b"yyy"
        assert first == b"x" * 100  # a copy: the next read did not overwrite it


def test_a_datagram_larger_than_the_buffer_is_an_error_not_a_truncated_answer() -> None:
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
    with a, b:
        a.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4 * READ_SIZE)
        b.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 * READ_SIZE)
        a.send(b"z" * (READ_SIZE + 1))
        with pytest.raises(DumpError) as caught:
            receive(b)
        assert caught.value.errno == errno.EMSGSIZE


def test_an_empty_non_blocking_socket_says_so() -> None:
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
    with a, b:
        b.setblocking(False)
        with pytest.raises(BlockingIOError):
            receive(b)


def test_threads_read_into_buffers_of_their_own() -> None:
    pairs = [socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM) for _ in range(4)]
    got: dict[int, list[bytes]] = {}

    def reader(i: int) -> None:
        got[i] = [receive(pairs[i][1]) for _ in range(200)]

    for i, (a, _b) in enumerate(pairs):
        a.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 1 << 20)
        for n in range(200):
            a.send(bytes([i]) * (n + 1))
    threads = [threading.Thread(target=reader, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    for a, b in pairs:
        a.close()
        b.close()
    assert all(got[i] == [bytes([i]) * (n + 1) for n in range(200)] for i in range(4))
