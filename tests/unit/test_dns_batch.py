"""UDP queries read and answered by the batch (recvmmsg/sendmmsg) and one by one (the
fallback): each client gets the answer to its own query, over loopback sockets."""

from __future__ import annotations

import logging
import socket
from collections.abc import Iterator

import pytest

from weaved.dns.batch import ANSWER_SIZE, BATCH, Address, BatchUdp, PlainUdp, UdpBatcher

KINDS = [BatchUdp, PlainUdp]


def _has_ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as s:
            s.bind(("::1", 0))
    except OSError:
        return False
    return True


@pytest.fixture(params=[socket.AF_INET, socket.AF_INET6], ids=["ipv4", "ipv6"])
def family(request: pytest.FixtureRequest) -> socket.AddressFamily:
    if request.param == socket.AF_INET6 and not _has_ipv6_loopback():
        pytest.skip("no IPv6 loopback here")
    return socket.AddressFamily(request.param)


def _loopback(family: socket.AddressFamily) -> str:
    return "::1" if family == socket.AF_INET6 else "127.0.0.1"


@pytest.fixture
def server(family: socket.AddressFamily) -> Iterator[socket.socket]:
    sock = socket.socket(family, socket.SOCK_DGRAM)
    sock.bind((_loopback(family), 0))
    sock.setblocking(False)
    yield sock
    sock.close()


def _clients(family: socket.AddressFamily, n: int) -> list[socket.socket]:
    clients = []
    for _ in range(n):
        c = socket.socket(family, socket.SOCK_DGRAM)
        c.bind((_loopback(family), 0))
        c.settimeout(2)
        clients.append(c)
    return clients


def _echo_upper(query: bytes) -> bytes | None:
    """Answers `ask:X` with `answer:X`, forwards `fwd:*`, drops `drop:*`."""
    if query.startswith(b"fwd:"):
        return None
    if query.startswith(b"drop:"):
        return b""
    if query.startswith(b"big:"):
        return b"B" * (ANSWER_SIZE + 100)
    if query.startswith(b"boom"):
        raise RuntimeError("a bug")
    return b"answer:" + query.split(b":", 1)[1]


def _exchange_all(io: UdpBatcher) -> tuple[int, list[tuple[bytes, Address]]]:
    handled, forwards = 0, list[tuple[bytes, Address]]()
    while True:
        n, f = io.exchange(_echo_upper)
        if n == 0:
            return handled, forwards
        handled += n
        forwards += f


@pytest.mark.parametrize("kind", KINDS)
def test_each_client_gets_the_answer_to_its_own_query(
    kind: type[BatchUdp] | type[PlainUdp], server: socket.socket, family: socket.AddressFamily
) -> None:
    clients = _clients(family, BATCH + 10)  # more than one batch
    try:
        for i, c in enumerate(clients):
            c.sendto(f"ask:{i}".encode(), server.getsockname())
        io = kind(server)
        handled, forwards = _exchange_all(io)
        assert (handled, forwards) == (len(clients), [])
        for i, c in enumerate(clients):
            assert c.recvfrom(ANSWER_SIZE)[0] == f"answer:{i}".encode()
    finally:
        for c in clients:
            c.close()


@pytest.mark.parametrize("kind", KINDS)
def test_forwards_drops_big_answers_and_bugs(
    kind: type[BatchUdp] | type[PlainUdp],
    server: socket.socket,
    family: socket.AddressFamily,
    caplog: pytest.LogCaptureFixture,
) -> None:
    fwd, drop, big, boom, ok = clients = _clients(family, 5)
    try:
        for c, text in zip(
            clients, [b"fwd:x", b"drop:y", b"big:z", b"boom", b"ask:ok"], strict=True
        ):
            c.sendto(text, server.getsockname())
        with caplog.at_level(logging.ERROR):
            handled, forwards = _exchange_all(kind(server))
        assert handled == 5
        # The forwarded query comes back with its sender in the form sendto takes.
        assert [q for q, _ in forwards] == [b"fwd:x"]
        server.sendto(b"late", forwards[0][1])
        assert fwd.recvfrom(100)[0] == b"late"
        assert big.recvfrom(2 * ANSWER_SIZE)[0] == b"B" * (ANSWER_SIZE + 100)
        assert ok.recvfrom(100)[0] == b"answer:ok"
        assert "a weaved bug" in caplog.text
        for silent in (drop, boom):
            silent.settimeout(0.2)
            with pytest.raises(TimeoutError):
                silent.recvfrom(100)
    finally:
        for c in clients:
            c.close()


@pytest.mark.parametrize("kind", KINDS)
def test_a_client_gone_does_not_stop_the_others(
    kind: type[BatchUdp] | type[PlainUdp], server: socket.socket, family: socket.AddressFamily
) -> None:
    gone, stays = _clients(family, 2)
    try:
        gone.sendto(b"ask:1", server.getsockname())
        gone_addr = gone.getsockname()
        gone.close()  # its answer meets a closed port: an ICMP error on the server socket
        io = kind(server)
        _exchange_all(io)
        stays.sendto(b"ask:2", server.getsockname())
        server.sendto(b"x", gone_addr)
        handled, _ = _exchange_all(io)
        assert handled >= 1
        assert stays.recvfrom(100)[0] == b"answer:2"
    finally:
        stays.close()
