"""A sleeve forwarding thread: the TAP, the mesh's UDP socket, or both.

By default one thread polls both the TAP and the UDP socket (taken over from the event
loop) and drains each in turn, up to 64 frames or datagrams at a time; with `workers=2`
one thread captures and another receives. One is cheaper (measured: 10-30 % less CPU per
MB, as two threads hand the GIL over at every frame). A frame captured from the TAP
(non-blocking fd) teaches the switch its source MAC and goes where the `Switch` decides,
through the round's `Outbox` (send.py); a datagram goes to the `Receiver` (receive.py).
The socket reads with UDP GRO, so a run of datagrams from one peer is one read.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import errno
import logging
import os
import select
import socket
import sys
import threading
from typing import TYPE_CHECKING

from weaved.datapath.sleeve.counters import Counters
from weaved.datapath.sleeve.ethernet import ETH_HLEN
from weaved.datapath.sleeve.receive import Receiver
from weaved.datapath.sleeve.send import Outbox
from weaved.datapath.sleeve.sockets import SOL_UDP, UDP_GRO
from weaved.datapath.sleeve.vnet import VNET_HDR_LEN

if TYPE_CHECKING:
    from weaved.datapath.sleeve.datapath import SleeveDatapath

__all__ = ["BURST", "Worker"]

log = logging.getLogger(__name__)

READ_SIZE = 65536 + VNET_HDR_LEN + 64
RECV_SIZE = 65536
BURST = 64  # frames or datagrams read from one source before turning to the other
POLL_MS = 500
TAP_GONE = {errno.EBADFD, errno.ENODEV, errno.EIO, errno.ENXIO}
_CMSG_SPACE = socket.CMSG_SPACE(4)


def name_thread(name: str) -> None:
    """The kernel's thread name (top -H, /proc): helps to see where the CPU goes."""
    with contextlib.suppress(Exception):
        libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
        libc.prctl(15, name.encode()[:15], 0, 0, 0)  # PR_SET_NAME


class Worker:
    """One forwarding thread: the TAP, the UDP socket, or both."""

    def __init__(self, dp: SleeveDatapath, name: str, tap: bool, udp: bool) -> None:
        self.dp = dp
        self.name = name
        self.tap = tap
        self.udp = udp
        self.stats = Counters()
        self.out = Outbox(dp, self.stats)
        self.receiver = Receiver(dp, self.stats, self.out)
        self.wake_r, self.wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self.thread = threading.Thread(target=self.run, name=name, daemon=True)

    def wake(self) -> None:
        with contextlib.suppress(OSError):
            os.write(self.wake_w, b"x")

    def close(self) -> None:
        for fd in (self.wake_r, self.wake_w):
            with contextlib.suppress(OSError):
                os.close(fd)

    def run(self) -> None:
        name_thread(self.name)
        try:
            self._loop()
        except Exception:
            log.exception("sleeve worker failed worker=%s", self.name)

    def _loop(self) -> None:
        dp = self.dp
        sock = dp.overlay.sock if self.udp else None
        poller = select.poll()
        poller.register(self.wake_r, select.POLLIN)
        if sock is not None:
            poller.register(sock.fileno(), select.POLLIN)
        registered: int | None = None
        out = self.out
        clock = dp.clock
        stopping = dp.stopping
        sock_fd = sock.fileno() if sock is not None else -1
        # Read a source until it has nothing more (then wait for poll to say it has): one
        # EAGAIN per quiet period, not one per source and round.
        tap_ready = udp_ready = True
        while not stopping.is_set():
            fd = dp.tap_fd if self.tap and dp.tap_fd != dp.tap_dead else None
            if fd != registered:
                if registered is not None:
                    with contextlib.suppress(KeyError, ValueError, OSError):
                        poller.unregister(registered)
                if fd is not None:
                    poller.register(fd, select.POLLIN)
                registered = fd
                tap_ready = True
            now = clock()
            if fd is not None and tap_ready:
                tap_ready = self._drain_tap(fd, now) == BURST
            if sock is not None and udp_ready:
                udp_ready = self._drain_udp(sock, now) == BURST
            out.flush()
            if self.receiver.reassembly.pending:
                self.receiver.reassembly.sweep(now)
            if (tap_ready and fd is not None) or (udp_ready and sock is not None):
                continue
            for efd, events in poller.poll(POLL_MS):
                if efd == self.wake_r:
                    with contextlib.suppress(OSError):
                        os.read(self.wake_r, 512)
                elif efd == sock_fd:
                    udp_ready = True
                elif efd == registered:
                    tap_ready = True
                    if events & (select.POLLERR | select.POLLHUP | select.POLLNVAL):
                        dp.tap_failed(efd, "poll error")

    def _drain_tap(self, fd: int, now: float) -> int:
        read = os.read
        captured = self.captured
        for n in range(BURST):
            try:
                pkt = read(fd, READ_SIZE)
            except BlockingIOError:
                return n
            except OSError as e:
                if e.errno in TAP_GONE:
                    self.dp.tap_failed(fd, e.strerror or str(e))
                else:
                    log.warning("sleeve TAP read failed error=%s", e)
                return n
            captured(pkt, now)
        return BURST

    def _drain_udp(self, sock: socket.socket, now: float) -> int:
        if self.dp.gro:
            return self._drain_udp_gro(sock, now)
        recvfrom = sock.recvfrom
        received = self.receiver.received
        for n in range(BURST):
            try:
                data, addr = recvfrom(RECV_SIZE)
            except BlockingIOError:
                return n
            except OSError as e:
                log.debug("sleeve UDP receive error error=%s", e)
                return n
            received(data, addr, now)
        return BURST

    def _drain_udp_gro(self, sock: socket.socket, now: float) -> int:
        """With UDP_GRO, one read may hold a run of datagrams of one size from one peer."""
        recvmsg = sock.recvmsg
        received = self.receiver.received
        segment_run = self.receiver.segment_run
        for n in range(BURST):
            try:
                data, ancillary, _flags, addr = recvmsg(RECV_SIZE, _CMSG_SPACE)
            except BlockingIOError:
                return n
            except OSError as e:
                log.debug("sleeve UDP receive error error=%s", e)
                return n
            size = len(data)
            for level, kind, value in ancillary:
                if level == SOL_UDP and kind == UDP_GRO and len(value) >= 4:
                    size = int.from_bytes(value[:4], sys.byteorder) or size
            if size >= len(data):
                received(data, addr, now)
                continue
            self.stats.gro_runs += 1
            if not segment_run(data, size, addr, now):
                for start in range(0, len(data), size):
                    received(data[start : start + size], addr, now)
        return BURST

    def captured(self, pkt: bytes, now: float) -> None:
        stats = self.stats
        stats.captured += 1
        stats.captured_bytes += len(pkt) - VNET_HDR_LEN
        if len(pkt) < VNET_HDR_LEN + ETH_HLEN:
            stats.drops["runt"] += 1
            return
        dp = self.dp
        decision = dp.switch.captured(pkt[16:22], pkt[10:16], now)
        if decision.drop is not None:
            stats.drops[decision.drop] += 1
            return
        view = memoryview(pkt)
        if pkt[1]:
            stats.superframes += 1
        vnet = view[:VNET_HDR_LEN]
        frame = view[VNET_HDR_LEN:]
        us = dp.us
        out = self.out
        if not decision.broadcast:
            hop, dst = decision.sends[0]
            link = dp.links.get(hop)
            if link is not None and link.offload:
                out.stage(link, dst, vnet, frame)
                return
        send = out.send
        for hop, dst in decision.sends:
            send(hop, us, dst, vnet, frame, decision.broadcast)
