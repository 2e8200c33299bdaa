"""How CNI attachments are shown (pure): `weaved ps` lines in Weave's layout, the `weaved status`
block, `weaved status cni` (one line per attachment) and the report's `CNI` key."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from weaved.attach.ps import ps_line
from weaved.cni.records import CniRecord


def ps_lines(records: Iterable[CniRecord]) -> str:
    """Weave's `weave ps` line per interface on the bridge: short container ID (as Docker's and
    podman's `ps` print it), the container side's MAC, its CIDRs. IPAM-only attachments (the
    interface is another plugin's, on another bridge) are not on weaved's network: not listed."""
    return "".join(
        ps_line(r.container_id[:12], r.mac, r.addresses) + "\n" for r in records if r.veth and r.mac
    )


def status_section(records: Iterable[CniRecord]) -> str | None:
    """The `weaved status` block; none on a host without CNI attachments (as Weave's status,
    which has no such block)."""
    recs = list(records)
    if not recs:
        return None
    plugged = sum(1 for r in recs if r.veth)
    return (
        "        Service: cni\n"
        f"    Attachments: {plugged} on the bridge, {len(recs) - plugged} IPAM only"
    )


def status_lines(records: Iterable[CniRecord]) -> str:
    """`weaved status cni`: CONTAINER IFNAME VETH CIDRS NETNS [dns=NAME], one per attachment."""
    lines = []
    for r in sorted(records, key=lambda r: r.key):
        words = [
            r.container_id[:12],
            r.ifname,
            r.veth or "-",
            ",".join(a.with_prefixlen for a in r.addresses) or "-",
            r.netns or "-",
        ]
        if r.dns_name:
            words.append(f"dns={r.dns_name}")
        if not r.weaved_ipam:
            words.append("ipam=chained")
        lines.append(" ".join(words) + "\n")
    return "".join(lines)


def report(records: Iterable[CniRecord]) -> dict[str, Any]:
    return {
        "Attachments": [
            {
                "ContainerID": r.container_id,
                "IfName": r.ifname,
                "Netns": r.netns,
                "Veth": r.veth,
                "MAC": r.mac,
                "Addresses": [a.with_prefixlen for a in r.addresses],
                "WeavedIPAM": r.weaved_ipam,
                "Hairpin": r.hairpin,
                "DNSName": r.dns_name or "",
            }
            for r in sorted(records, key=lambda r: r.key)
        ]
    }
