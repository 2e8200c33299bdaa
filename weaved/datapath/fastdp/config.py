"""Names, numbers and timing of the fast datapath, and the MTU rule. Pure."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = [
    "DEFAULT_UNDERLAY_MTU",
    "DEVICE",
    "DISPLAY_NAME",
    "ETHERTYPE",
    "MIN_MTU",
    "OVERLAY_NAME",
    "VNI",
    "VXLAN_OVERHEAD",
    "Timing",
    "overlay_mtu",
]

OVERLAY_NAME = "weaved-vxlan"
"""Our name in the `Overlays` feature. Weave Net does not know it (its own `fastdp` needs Open
vSwitch), so with a Weave peer the common overlay is sleeve."""

DISPLAY_NAME = "fastdp"
"""How `status connections` names a connection carried by this overlay (Weave's word)."""

DEVICE = "vxlan-6784"
"""The one kernel VXLAN device, a port of the bridge; the name says it is weaved's."""

VNI = 6784
"""One VXLAN network identifier for every weaved peer."""

ETHERTYPE = 0x88B5
"""IEEE 802 "local experimental" EtherType of our heartbeat frames (never leaves the tunnel)."""

VXLAN_OVERHEAD = 50
"""Outer IPv4 (20) + UDP (8) + VXLAN (8) + the inner Ethernet header (14)."""

DEFAULT_UNDERLAY_MTU = 1500
MIN_MTU = 576


@dataclass(frozen=True)
class Timing:
    """Heartbeats through the tunnel, per connection and direction.

    Weave sends every 500 ms until the first ack, then every 10 s, and gives up after 60 s.
    We keep the 500 ms start but beat every second afterwards and call the path unhealthy
    after 5 s without heartbeats: a failed path moves to sleeve within seconds, which is what
    an operator (and a test) can wait for, at the cost of two small frames per peer and second.
    `recover` full-size heartbeats have to pass both ways after a failure before traffic moves
    back, so a flapping path does not flap the forwarding with it.
    """

    fast_interval: float = 0.5
    interval: float = 1.0
    timeout: float = 5.0
    recover: int = 2

    def __post_init__(self) -> None:
        if not 0 < self.fast_interval <= self.interval < self.timeout:
            raise ValueError("need 0 < fast_interval <= interval < timeout")
        if self.recover < 1:
            raise ValueError("recover must be at least 1")


def overlay_mtu(spec_mtu: int | None, underlay_mtu: int) -> int:
    """The fast datapath's MTU: the spec's `datapath.mtu` if set, else the underlay's MTU minus
    the VXLAN overhead (1500 → 1450), never below the IPv4 minimum."""
    if spec_mtu is not None:
        return spec_mtu
    return max(underlay_mtu - VXLAN_OVERHEAD, MIN_MTU)
