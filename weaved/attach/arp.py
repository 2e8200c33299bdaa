"""Gratuitous ARP (an RFC 5227 announcement) for an address that was just (re)added.

When an address moves to another container (or comes back with a new MAC) the peers' ARP caches
still point at the old MAC; an announcement corrects them at once instead of after their
timeouts. `announcement` builds the frame (pure); `announce_soon` sends it from inside the
container's namespace (call it there).
"""

from __future__ import annotations

import errno
import ipaddress
import logging
import queue
import socket
import struct
import threading
import time

from weaved.attach.netns import join_the_process_netns

ETH_P_ARP = 0x0806
ETH_P_IP = 0x0800
ARPHRD_ETHER = 1
ARPOP_REQUEST = 1
BROADCAST = b"\xff" * 6
MIN_FRAME = 60  # Ethernet minimum without the FCS

log = logging.getLogger(__name__)


def mac_bytes(mac: str) -> bytes:
    parts = mac.split(":")
    if len(parts) != 6:
        raise ValueError(f"not a MAC address: {mac!r}")
    return bytes(int(p, 16) for p in parts)


def announcement(mac: str, ip: ipaddress.IPv4Address) -> bytes:
    """A broadcast ARP request with sender = target = `ip`, target MAC zero (RFC 5227 §2.3)."""
    src = mac_bytes(mac)
    header = BROADCAST + src + struct.pack("!H", ETH_P_ARP)
    body = struct.pack(
        "!HHBBH6s4s6s4s",
        ARPHRD_ETHER,
        ETH_P_IP,
        6,
        4,
        ARPOP_REQUEST,
        src,
        ip.packed,
        b"\x00" * 6,
        ip.packed,
    )
    frame = header + body
    return frame + b"\x00" * (MIN_FRAME - len(frame))


def announce_soon(
    ifname: str, mac: str, ips: list[ipaddress.IPv4Address], delay: float = 0.001
) -> None:
    """Announce `ips` out of `ifname` `delay` seconds from now, from a background thread: the
    socket is opened here (in the calling thread's namespace, which it keeps), the frames
    leave after the caller went on. A broadcast is flooded to every port of the bridge
    (~2 ms of kernel work with 1 000 containers) and Weave waits a moment after "up" before
    it (the first frame can miss the bridge): neither is an attach's to wait for. A failure
    to send is logged (peers' short ARP timeouts catch up). The packet socket is opened
    without a protocol (nothing to receive, so no packet hook is registered: a bind took ~12 ms
    waiting for the kernel's RCU grace period) and closed by that thread too (its close waits
    for one as well)."""
    sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)
    frames = [(ip, announcement(mac, ip)) for ip in ips]
    _later.put((sock, ifname, frames, time.monotonic() + delay))


class _Later:
    """One daemon thread that sends queued announcements when due and closes their sockets."""

    def __init__(self) -> None:
        self._queue: queue.SimpleQueue[_Job] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def put(self, job: _Job) -> None:
        with self._lock:
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="arp-later", daemon=True)
                self._thread.start()
        self._queue.put(job)

    def _run(self) -> None:
        join_the_process_netns()  # started by an attach's work inside its container
        while True:
            sock, ifname, frames, due = self._queue.get()
            try:
                if frames and (wait := due - time.monotonic()) > 0:
                    time.sleep(wait)
                for ip, frame in frames:
                    try:
                        sock.sendto(frame, (ifname, ETH_P_ARP))
                    except OSError as exc:
                        # ENODEV: the container was detached (or died) since: nothing to tell.
                        gone = exc.errno == errno.ENODEV
                        log.log(
                            logging.DEBUG if gone else logging.WARNING,
                            "gratuitous ARP failed ifname=%s ip=%s error=%s",
                            ifname,
                            ip,
                            exc,
                        )
            finally:
                sock.close()


_Job = tuple[socket.socket, str, list[tuple[ipaddress.IPv4Address, bytes]], float]
_later = _Later()
