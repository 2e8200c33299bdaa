"""The sleeve socket's kernel options and its DF senders (Weave's `udpSenderDF`).

Two send paths, as Weave: the normal UDP socket with DF off (the kernel fragments), and DF
datagrams (heartbeats, MTU probes, the PMTU trigger whose EMSGSIZE reveals the path MTU).
DF datagrams leave through a raw IP socket that writes its own UDP header with checksum 0,
or, for runs of equal datagrams, through a send-only twin of the sleeve socket with DF set
(one UDP GSO send). Without CAP_NET_RAW the overlay falls back to the normal socket.
"""

from __future__ import annotations

import ctypes
import errno
import logging
import select
import socket
import struct
from collections.abc import Callable, Sequence

__all__ = [
    "IP_MTU",
    "IP_MTU_DISCOVER",
    "IP_PMTUDISC_DO",
    "IP_PMTUDISC_DONT",
    "SOL_UDP",
    "UDP_GRO",
    "UDP_SEGMENT",
    "Buffer",
    "RawDFSender",
    "open_df_twin",
    "path_mtu",
    "reuseport",
    "steer_to_first",
    "try_option",
    "wait_writable",
]

log = logging.getLogger(__name__)

Buffer = bytes | bytearray | memoryview

IP_MTU_DISCOVER = getattr(socket, "IP_MTU_DISCOVER", 10)
IP_PMTUDISC_DONT = getattr(socket, "IP_PMTUDISC_DONT", 0)
IP_PMTUDISC_DO = getattr(socket, "IP_PMTUDISC_DO", 2)
IP_MTU = getattr(socket, "IP_MTU", 14)
SOL_UDP = 17
UDP_SEGMENT = 103
UDP_GRO = 104
_SO_ATTACH_FILTER = 26
_SO_ATTACH_REUSEPORT_CBPF = 51
_SEND_WAIT_MS = 20  # how long a data-plane thread waits for a full send buffer


def _attach_return_zero(sock: socket.socket, option: int) -> None:
    """Attach the classic BPF program `return 0` (the kernel copies it at once)."""
    insn = struct.pack("HBBI", 0x06, 0, 0, 0)  # BPF_RET | BPF_K, 0
    buf = ctypes.create_string_buffer(insn)
    prog = struct.pack("HL", 1, ctypes.addressof(buf))
    sock.setsockopt(socket.SOL_SOCKET, option, prog)


def _drop_all_filter(sock: socket.socket) -> None:
    """A raw UDP socket gets a copy of every UDP packet; we only send on it."""
    _attach_return_zero(sock, _SO_ATTACH_FILTER)  # a socket filter: accept nothing


def steer_to_first(sock: socket.socket) -> None:
    """In `sock`'s SO_REUSEPORT group, every datagram goes to the group's first socket."""
    _attach_return_zero(sock, _SO_ATTACH_REUSEPORT_CBPF)  # a group program: socket index 0


def open_df_twin(sock: socket.socket) -> socket.socket | None:
    """A send-only twin of the sleeve socket, bound to the same address in its SO_REUSEPORT
    group, with DF set (IP_PMTUDISC_DO): DF datagrams can then leave in one UDP GSO send,
    which the raw DF sender cannot do. The group's program (attached to `sock` before the
    twin joins) keeps every received datagram on `sock`. None where the kernel refuses."""
    twin = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        twin.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        twin.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        twin.setsockopt(socket.IPPROTO_IP, IP_MTU_DISCOVER, IP_PMTUDISC_DO)
        twin.bind(sock.getsockname())
        twin.setblocking(False)
    except OSError as e:
        twin.close()
        log.info("sleeve: no DF twin socket, DF datagrams go one by one error=%s", e)
        return None
    return twin


class RawDFSender:
    """Weave's `udpSenderDF`: a raw IPPROTO_UDP socket with DF set that writes its own UDP
    header (checksum 0). One per local IP, shared by all forwarders (Weave opens one per
    connection; sharing keeps a large mesh within its file-descriptor budget)."""

    def __init__(self, local_ip: str, local_port: int) -> None:
        self._local_port = local_port
        sock = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_UDP)
        try:
            _drop_all_filter(sock)
            sock.setsockopt(socket.IPPROTO_IP, IP_MTU_DISCOVER, IP_PMTUDISC_DO)
            sock.setblocking(False)
            if local_ip and local_ip != "0.0.0.0":
                sock.bind((local_ip, 0))
        except OSError:
            sock.close()
            raise
        self._sock = sock

    def send(self, payload: Buffer, addr: tuple[str, int]) -> int | None:
        """Returns the path MTU if the kernel refused the size (EMSGSIZE)."""
        header = struct.pack(">HHHH", self._local_port, addr[1], 8 + len(payload), 0)
        try:
            self._sock.sendto(header + payload, (addr[0], 0))
        except BlockingIOError:
            return None  # a dropped datagram; heartbeats and probes are repeated
        except OSError as e:
            if e.errno != errno.EMSGSIZE:
                raise
            pmtu = path_mtu(addr)
            log.info(
                "sleeve EMSGSIZE on send, expecting PMTU update packet=%d pmtu=%d",
                len(payload) + 8 + 20,
                pmtu,
            )
            return pmtu
        return None

    def send_parts(self, parts: Sequence[Buffer], size: int, addr: tuple[str, int]) -> int | None:
        """`send` for a payload in pieces of `size` bytes in all (data-plane threads: waits
        briefly when the send buffer is full)."""
        header = struct.pack(">HHHH", self._local_port, addr[1], 8 + size, 0)
        dest = (addr[0], 0)
        try:
            try:
                self._sock.sendmsg((header, *parts), (), 0, dest)
            except BlockingIOError:
                if not wait_writable(self._sock):
                    return None
                self._sock.sendmsg((header, *parts), (), 0, dest)
        except BlockingIOError:
            return None
        except OSError as e:
            if e.errno != errno.EMSGSIZE:
                raise
            return path_mtu(addr)
        return None

    def close(self) -> None:
        self._sock.close()


def reuseport(sock: socket.socket) -> bool:
    return try_option(lambda s: s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1), sock)


def try_option(fn: Callable[[socket.socket], None], sock: socket.socket) -> bool:
    """Did `fn(sock)` succeed (an optional socket feature)?"""
    try:
        fn(sock)
    except OSError:
        return False
    return True


def wait_writable(sock: socket.socket) -> bool:
    poller = select.poll()
    poller.register(sock.fileno(), select.POLLOUT)
    return bool(poller.poll(_SEND_WAIT_MS))


def path_mtu(addr: tuple[str, int]) -> int:
    """The kernel's current path MTU towards `addr` (what EMSGSIZE just updated)."""
    probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        probe.setsockopt(socket.IPPROTO_IP, IP_MTU_DISCOVER, IP_PMTUDISC_DO)
        probe.connect(addr)
        return int(probe.getsockopt(socket.IPPROTO_IP, IP_MTU))
    finally:
        probe.close()
