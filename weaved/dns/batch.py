"""UDP queries in and answers out by the batch: Linux's recvmmsg/sendmmsg through ctypes.

Reading and answering up to 64 queries with two system calls, instead of two per query and
a Python address tuple made and parsed for each, is what puts weaveDNS's CPU per query under
dnsmasq's (which polls, reads and sends: three calls per query). In one bench/dns run:
7.2 us/query (user 1.5) batched against 10.2 (user 3.7) one by one, dnsmasq 10.4. Each
answer leaves from the slot of its query, to the sockaddr the kernel wrote there. Where libc
has no recvmmsg, `PlainUdp` does the same with recvfrom/sendto.
"""

from __future__ import annotations

import ctypes
import errno
import logging
import socket
from collections.abc import Callable
from typing import Protocol

log = logging.getLogger(__name__)

Address = tuple[str, int] | tuple[str, int, int, int]
Respond = Callable[[bytes], bytes | None]
"""The answer to a query, None to forward it, b"" to drop it (`Answerer.respond`)."""

BATCH = 64
QUERY_SIZE = 4096  # bigger UDP queries do not exist; a 64 KiB buffer per read is slow
ANSWER_SIZE = 4096  # bigger answers (large EDNS0 sizes) are sent on their own
_NAME_SIZE = 128  # sockaddr_storage
_MSG_DONTWAIT = getattr(socket, "MSG_DONTWAIT", 0x40)
_AGAIN = (errno.EAGAIN, errno.EWOULDBLOCK)


class UdpBatcher(Protocol):
    def exchange(self, respond: Respond) -> tuple[int, list[tuple[bytes, Address]]]:
        """Read up to BATCH queries, answer them, send the answers; return (datagrams read,
        queries `respond` left to forward with their senders)."""
        ...


def _respond_safely(respond: Respond, query: bytes) -> bytes | None:
    try:
        return respond(query)
    except Exception:
        log.exception("dns answer failed (a weaved bug)")
        return b""


class PlainUdp:
    """One recvfrom and one sendto per query (any platform)."""

    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock

    def exchange(self, respond: Respond) -> tuple[int, list[tuple[bytes, Address]]]:
        recvfrom, sendto = self._sock.recvfrom, self._sock.sendto
        forwards: list[tuple[bytes, Address]] = []
        n = 0
        while n < BATCH:
            try:
                query, client = recvfrom(QUERY_SIZE)
            except BlockingIOError:
                break
            except OSError:
                n += 1  # an ICMP error from an earlier send: nothing to read there
                continue
            n += 1
            answer = _respond_safely(respond, query)
            if answer is None:
                forwards.append((query, client))
            elif answer:
                # A full send buffer drops the answer, as a lost datagram would. (Not
                # contextlib.suppress: a context manager per query costs ~10% here.)
                try:  # noqa: SIM105
                    sendto(answer, client)
                except OSError:
                    pass
        return n, forwards


class _Iovec(ctypes.Structure):
    _fields_ = [("iov_base", ctypes.c_void_p), ("iov_len", ctypes.c_size_t)]


class _Msghdr(ctypes.Structure):
    _fields_ = [
        ("msg_name", ctypes.c_void_p),
        ("msg_namelen", ctypes.c_uint32),
        ("msg_iov", ctypes.c_void_p),
        ("msg_iovlen", ctypes.c_size_t),
        ("msg_control", ctypes.c_void_p),
        ("msg_controllen", ctypes.c_size_t),
        ("msg_flags", ctypes.c_int),
    ]


class _Mmsghdr(ctypes.Structure):
    _fields_ = [("msg_hdr", _Msghdr), ("msg_len", ctypes.c_uint)]


_MSG = ctypes.sizeof(_Mmsghdr)
_IOV = ctypes.sizeof(_Iovec)
_U32 = ctypes.sizeof(ctypes.c_uint32)
_PTR = ctypes.sizeof(ctypes.c_void_p)
# Where the kernel's outputs and our per-answer inputs sit, as indexes into flat views.
_LEN_AT = _Mmsghdr.msg_len.offset // _U32
_IOV_LEN_AT = _Iovec.iov_len.offset // ctypes.sizeof(ctypes.c_size_t)
assert ctypes.sizeof(ctypes.c_size_t) == ctypes.sizeof(ctypes.c_ulong) == _PTR  # Linux


def _libc_calls() -> tuple[Callable[..., int], Callable[..., int]] | None:
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        recvmmsg, sendmmsg = libc.recvmmsg, libc.sendmmsg
    except (OSError, AttributeError):
        return None
    fd, ptr, uint = ctypes.c_int, ctypes.c_void_p, ctypes.c_uint
    recvmmsg.argtypes = [fd, ptr, uint, ctypes.c_int, ptr]
    recvmmsg.restype = ctypes.c_int
    sendmmsg.argtypes = [fd, ptr, uint, ctypes.c_int]
    sendmmsg.restype = ctypes.c_int
    return recvmmsg, sendmmsg


class BatchUdp:
    """recvmmsg into BATCH fixed slots, sendmmsg of the answers from BATCH more."""

    def __init__(self, sock: socket.socket) -> None:
        calls = _libc_calls()
        if calls is None:
            raise OSError(errno.ENOSYS, "no recvmmsg/sendmmsg in libc")
        self._recvmmsg, self._sendmmsg = calls
        self._sock = sock  # kept for big answers and for its descriptor's lifetime
        self._fd = sock.fileno()
        self._queries = ctypes.create_string_buffer(BATCH * QUERY_SIZE)
        self._names = ctypes.create_string_buffer(BATCH * _NAME_SIZE)
        self._answers = ctypes.create_string_buffer(BATCH * ANSWER_SIZE)
        self._in = (_Mmsghdr * BATCH)()
        self._out = (_Mmsghdr * BATCH)()
        self._in_iov = (_Iovec * BATCH)()
        self._out_iov = (_Iovec * BATCH)()
        queries, names = ctypes.addressof(self._queries), ctypes.addressof(self._names)
        answers = ctypes.addressof(self._answers)
        # The answer in slot i goes to the sender of query i: its sockaddr, in place.
        namelen = 28 if sock.family == socket.AF_INET6 else 16
        for i in range(BATCH):
            self._in_iov[i].iov_base, self._in_iov[i].iov_len = queries + i * QUERY_SIZE, QUERY_SIZE
            hdr = self._in[i].msg_hdr
            hdr.msg_name, hdr.msg_namelen = names + i * _NAME_SIZE, _NAME_SIZE
            hdr.msg_iov, hdr.msg_iovlen = ctypes.addressof(self._in_iov[i]), 1
            self._out_iov[i].iov_base = answers + i * ANSWER_SIZE
            out = self._out[i].msg_hdr
            out.msg_name, out.msg_namelen = names + i * _NAME_SIZE, namelen
            out.msg_iov, out.msg_iovlen = ctypes.addressof(self._out_iov[i]), 1
        # recvmmsg overwrites each msg_namelen: restored from this copy before every call.
        self._in_template = bytes(memoryview(self._in).cast("B"))
        self._in_addr = ctypes.addressof(self._in)
        self._out_addr = ctypes.addressof(self._out)
        self._query_view = memoryview(self._queries).cast("B")
        self._names_view = memoryview(self._names).cast("B")
        self._answer_view = memoryview(self._answers).cast("B")
        # Strided views: msg_len of each received message, iov_len of each answer.
        self._lengths = memoryview(self._in).cast("B").cast("I")[_LEN_AT :: _MSG // _U32]
        iov_words = memoryview(self._out_iov).cast("B").cast("L")  # size_t
        self._out_lengths = iov_words[_IOV_LEN_AT :: _IOV // _PTR]

    def exchange(self, respond: Respond) -> tuple[int, list[tuple[bytes, Address]]]:
        ctypes.memmove(self._in_addr, self._in_template, len(self._in_template))
        n = self._recvmmsg(self._fd, self._in_addr, BATCH, _MSG_DONTWAIT, None)
        if n <= 0:
            # Nothing to read, or an ICMP error from an earlier send (consumed by reading it).
            return (0, []) if ctypes.get_errno() in _AGAIN else (1, [])
        queries, answers = self._query_view, self._answer_view
        lengths, out_lengths = self._lengths, self._out_lengths
        forwards: list[tuple[bytes, Address]] = []
        first = 0  # answers i go out from slot i, by runs of consecutive answered queries
        for i in range(n):
            start = i * QUERY_SIZE
            try:  # (inline: a call per query costs more than the rest of this loop)
                answer = respond(queries[start : start + lengths[i]].tobytes())
            except Exception:
                log.exception("dns answer failed (a weaved bug)")
                answer = b""  # dropped: its slot must not go out
            if answer and len(answer) <= ANSWER_SIZE:
                at = i * ANSWER_SIZE
                answers[at : at + len(answer)] = answer
                out_lengths[i] = len(answer)
                continue
            self._send(first, i)
            first = i + 1
            if answer is None:
                start = i * QUERY_SIZE
                forwards.append((queries[start : start + lengths[i]].tobytes(), self._address(i)))
            elif answer:
                try:  # noqa: SIM105
                    self._sock.sendto(answer, self._address(i))
                except OSError:
                    pass
        self._send(first, n)
        return n, forwards

    def _send(self, first: int, end: int) -> None:
        while first < end:
            done = self._sendmmsg(self._fd, self._out_addr + first * _MSG, end - first, 0)
            if done > 0:
                first += done
                continue
            err = ctypes.get_errno()
            if err in _AGAIN:
                return  # a full send buffer drops the answers, as lost datagrams would be
            if err != errno.EINTR:
                first += 1  # that one could not go (its client is gone): the rest still go

    def _address(self, i: int) -> Address:
        """The sender of query `i` as Python's socket functions take it."""
        raw = self._names_view[i * _NAME_SIZE : (i + 1) * _NAME_SIZE].tobytes()
        family = int.from_bytes(raw[:2], "little" if _LITTLE else "big")
        port = int.from_bytes(raw[2:4], "big")
        if family == socket.AF_INET6:
            flow = int.from_bytes(raw[4:8], "big")
            scope = int.from_bytes(raw[24:28], "little" if _LITTLE else "big")
            return socket.inet_ntop(socket.AF_INET6, raw[8:24]), port, flow, scope
        return socket.inet_ntop(socket.AF_INET, raw[4:8]), port


_LITTLE = int.from_bytes(bytes(ctypes.c_uint16(1)), "little") == 1


def udp_batcher(sock: socket.socket) -> UdpBatcher:
    """The batching reader where libc offers it, else the plain one."""
    try:
        return BatchUdp(sock)
    except OSError as e:
        log.info("dns udp without batching error=%s", e)
        return PlainUdp(sock)
