"""Gratuitous ARP (an RFC 5227 announcement) for an address that was just (re)added.

When an address moves to another container (or comes back with a new MAC) the peers' ARP caches
still point at the old MAC; an announcement corrects them at once instead of after their
timeouts. `announcement` builds the frame (pure); `announce` sends it from inside the
container's namespace (call it there).
"""

from __future__ import annotations

import ipaddress
import queue
import socket
import struct
import threading

ETH_P_ARP = 0x0806
ETH_P_IP = 0x0800
ARPHRD_ETHER = 1
ARPOP_REQUEST = 1
BROADCAST = b"\xff" * 6
MIN_FRAME = 60  # Ethernet minimum without the FCS


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


def announce(ifname: str, mac: str, ip: ipaddress.IPv4Address, count: int = 1) -> None:
    """Send the announcement out of `ifname` (in the calling thread's namespace).

    The packet socket is opened without a protocol (nothing to receive, so no packet hook is
    registered: a bind took ~12 ms waiting for the kernel's RCU grace period) and closed by
    a background thread (its close waits for one too, ~15 ms that were every attach's)."""
    frame = announcement(mac, ip)
    sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)
    try:
        for _ in range(count):
            sock.sendto(frame, (ifname, ETH_P_ARP))
    finally:
        _close_later(sock)


_closing: queue.SimpleQueue[socket.socket] = queue.SimpleQueue()
_closer: list[threading.Thread] = []
_closer_lock = threading.Lock()


def _close_later(sock: socket.socket) -> None:
    with _closer_lock:
        if not _closer:
            _closer.append(threading.Thread(target=_close_forever, name="arp-close", daemon=True))
            _closer[0].start()
    _closing.put(sock)


def _close_forever() -> None:
    while True:
        _closing.get().close()
