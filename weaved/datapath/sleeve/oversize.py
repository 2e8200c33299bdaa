"""Frames from the mesh that are larger than our bridge lets through. Pure.

A Weave Net peer's containers have MTU 65535 and learn only the overlay's path MTU (1438
plain), while a weaved bridge may be smaller (1376 by default). A frame of 1377-1438 IP bytes
then arrives whole over sleeve, and the kernel bridge would drop it silently on the way to a
container port. Instead, as the capture side does for the overlay MTU (FACTS.md §7.3): a DF
IPv4 packet is answered with ICMP "fragmentation needed" (next-hop MTU = the bridge's)
towards its sender, so TCP and DF pings adapt; an IPv4 packet without DF is split into
fragments that fit (what a router on the way would do); anything else (IPv6, ARP of that
size) cannot be helped and is dropped and counted. A too-big broadcast gets no answer.
"""

from __future__ import annotations

from dataclasses import dataclass

from weaved.datapath.sleeve.ethernet import (
    ETH_HLEN,
    BytesLike,
    fragment_ipv4,
    icmp_frag_needed,
    is_ipv4,
)

__all__ = [
    "DROP_TOO_BIG",
    "DROP_TOO_BIG_BROADCAST",
    "InjectPlan",
    "plan_oversized_inject",
]

DROP_TOO_BIG = "too_big_for_bridge"
DROP_TOO_BIG_BROADCAST = "too_big_broadcast_for_bridge"


@dataclass(frozen=True, slots=True)
class InjectPlan:
    """What to do with a frame too big for our bridge: inject `frames`, send `icmp` back
    towards the frame's sender, count `drop`."""

    frames: tuple[bytes, ...] = ()
    icmp: bytes | None = None
    drop: str | None = None


def plan_oversized_inject(frame: BytesLike, mtu: int, broadcast: bool) -> InjectPlan:
    """`frame` (Ethernet, no virtio-net offloads) is longer than `mtu` + 14."""
    if not is_ipv4(frame):
        return InjectPlan(drop=DROP_TOO_BIG)
    if frame[20] & 0x40:  # DF
        if broadcast:
            return InjectPlan(drop=DROP_TOO_BIG_BROADCAST)
        icmp = icmp_frag_needed(frame, mtu)
        return InjectPlan(icmp=icmp, drop=None if icmp is not None else DROP_TOO_BIG)
    fragments = fragment_ipv4(frame, mtu)
    if any(len(f) > mtu + ETH_HLEN for f in fragments):  # cannot be split (bad header)
        return InjectPlan(drop=DROP_TOO_BIG)
    return InjectPlan(frames=tuple(fragments))
