"""What the sleeve data path shows: `weaved status` (`Service: sleeve`), `weaved report`
("Sleeve": everything it counts) and Weave's `Interface`, `CaptureStats` and `MACs` keys of
the report's `Router` object."""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import fields
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from weaved.mesh.gossip_api import PeerName
from weaved.mesh.peername import format_peer_name

if TYPE_CHECKING:
    from weaved.datapath.sleeve.datapath import SleeveDatapath

__all__ = ["report", "router_extra", "status_text"]


def interface(dp: SleeveDatapath) -> str:
    return f"{dp.tap_name} (via tap)"


def tap_kernel_drops(dp: SleeveDatapath) -> int:
    path = Path(f"/sys/class/net/{dp.tap_name}/statistics/tx_dropped")
    try:
        return int(path.read_text().strip())
    except (OSError, ValueError):
        return 0


def capture_stats_report(dp: SleeveDatapath) -> dict[str, int]:
    """Weave's `CaptureStats` (pcap's names): frames read from the TAP, frames we
    dropped, frames the kernel dropped because we did not read fast enough."""
    c = dp.counters
    return {
        "PacketsDropped": sum(c.drops.values()) + c.no_link,
        "PacketsIfDropped": tap_kernel_drops(dp),
        "PacketsReceived": c.captured,
    }


def macs_report(dp: SleeveDatapath) -> list[dict[str, Any]]:
    """Weave's `MACs`: every MAC with its peer and when it was last seen."""
    nicknames = dp.router.topology.nicknames()
    offset = time.time() - dp.clock()
    out = []
    for mac, entry in dp.switch.macs.entries():
        peer = PeerName(int.from_bytes(entry.peer, "big"))
        out.append(
            {
                "Mac": mac.hex(":"),
                "Name": format_peer_name(peer),
                "NickName": nicknames.get(peer, ""),
                "LastSeen": rfc3339_nano(entry.last_seen + offset),
            }
        )
    return out


def router_extra(dp: SleeveDatapath) -> dict[str, Any]:
    """The data plane's keys of Weave's `Router` report object."""
    return {
        "Interface": interface(dp),
        "CaptureStats": capture_stats_report(dp),
        "MACs": macs_report(dp) or None,
    }


def report(dp: SleeveDatapath) -> dict[str, Any]:
    """Everything the data path counts, for `weaved report`."""
    c = dp.counters
    counters: dict[str, Any] = {}
    for f in fields(c):
        value = getattr(c, f.name)
        counters[f.name] = dict(sorted(value.items())) if isinstance(value, Counter) else value
    links = []
    for link in list(dp.links.values()):
        ctl = link.fwd.control
        links.append(
            {
                "Peer": format_peer_name(link.fwd.remote),
                "Offload": link.offload,
                "Encrypted": link.fwd.encrypted,
                "MTU": ctl.mtu,
                "StackFragmentation": ctl.stack_frag,
            }
        )
    return {
        "Interface": interface(dp),
        "TapReady": dp.tap_fd is not None and dp.tap_fd != dp.tap_dead,
        "TapError": dp.tap_error,
        "TapCreated": dp.tap_created,
        "TapOffloads": dp.tap_offload,
        "OffloadAnnounced": dp.offload,
        "Workers": len(dp.workers),
        "Links": links,
        "MACs": len(dp.switch.macs),
        "Counters": counters,
    }


def status_text(dp: SleeveDatapath) -> str:
    c = dp.counters
    offload_peers = sum(1 for link in dp.links.values() if link.offload)
    ready = dp.tap_fd is not None and dp.tap_fd != dp.tap_dead
    state = "ready" if ready else f"not ready ({dp.tap_error or 'waiting'})"
    return (
        "        Service: sleeve\n"
        f"      Interface: {interface(dp)} {state}\n"
        f"       Offloads: {'on' if dp.tap_offload else 'off'}"
        f" ({offload_peers} of {len(dp.links)} peers)\n"
        f"           MACs: {len(dp.switch.macs)}\n"
        f"       Captured: {c.captured} frames; {c.datagrams_sent} datagrams sent\n"
        f"       Received: {c.datagrams_received} datagrams; {c.injected} frames injected,"
        f" {c.relayed} relayed\n"
        f"        Dropped: {c.decrypt_failed} undecryptable, {c.replayed} replayed,"
        f" {c.unknown_sender} from unknown peers\n"
        f"        Too big: {c.too_big_answered} answered (ICMP frag-needed, bridge MTU"
        f" {dp.bridge_mtu}), {c.too_big_fragmented} fragmented\n"
    )


def rfc3339_nano(wall: float) -> str:
    """Go's RFC3339Nano in UTC (trailing zeros of the fraction trimmed)."""
    ns = round(wall * 1e9)
    seconds, nanos = divmod(ns, 1_000_000_000)
    stamp = datetime.fromtimestamp(seconds, tz=UTC).strftime("%Y-%m-%dT%H:%M:%S")
    frac = f".{nanos:09d}".rstrip("0") if nanos else ""
    return f"{stamp}{frac}Z"
