"""IPAM's part of Weave's status outputs, text and JSON, exactly as Weave 2.8.1 lays them out.

* `status_ipam_text`: the body of `GET /status/ipam` (`weave status ipam`);
* `status_section`: the `Service: ipam` block of `GET /status` (`weave status`);
* `report_ipam`: the `IPAM` object of `GET /report` (JSON; key order as Weave's);
* `ip_json` / `owned_rows`: `GET /ip` and the data for a `weave ps`-style listing;
* `unreachable_share`: how much of the range sits with unreachable peers (for rmpeer hints).

Pure: everything is computed from an `IpamStatus` snapshot taken with `ipam_status`.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Any

from weaved.ipam.address import CIDR, format_ip
from weaved.ipam.allocator import Allocator, PendingAllocateInfo, PendingClaimInfo
from weaved.ipam.paxos import PaxosStatus
from weaved.mesh.gossip_api import PeerName, format_peer_name


@dataclass(frozen=True)
class EntryStatus:
    token: int
    size: int
    peer: PeerName
    nickname: str
    is_known_peer: bool
    version: int


@dataclass(frozen=True)
class IpamStatus:
    our_name: PeerName
    paxos: PaxosStatus | None
    range: CIDR
    default_subnet: CIDR
    active_ips: int
    entries: tuple[EntryStatus, ...]
    pending_claims: tuple[PendingClaimInfo, ...]
    pending_allocates: tuple[PendingAllocateInfo, ...]
    owned: tuple[tuple[str, tuple[CIDR, ...]], ...]

    @property
    def range_num_ips(self) -> int:
        return self.range.size


def ipam_status(allocator: Allocator, default_subnet: CIDR) -> IpamStatus:
    """A snapshot of everything the status views need."""
    entries = tuple(
        EntryStatus(
            info.range.start,
            info.range.size,
            info.peer,
            allocator.nicknames.get(info.peer, ""),
            allocator.is_reachable(info.peer),
            info.version,
        )
        for info in allocator.ring.all_range_info()
    )
    return IpamStatus(
        our_name=allocator.our_name,
        paxos=allocator.paxos_status(),
        range=allocator.universe,
        default_subnet=default_subnet,
        active_ips=allocator.space.num_allocated(),
        entries=entries,
        pending_claims=tuple(allocator.pending_claim_info()),
        pending_allocates=tuple(allocator.pending_allocate_info()),
        owned=tuple(allocator.owned_addresses().items()),
    )


def _f32(x: float) -> float:
    """Round to float32: Weave computes the percentage in float32."""
    return float(struct.unpack("f", struct.pack("f", x))[0])


@dataclass(frozen=True)
class PeerShare:
    peer: PeerName
    nickname: str
    reachable: bool
    ips: int


def peer_shares(status: IpamStatus) -> list[PeerShare]:
    """Addresses per peer, in order of first appearance in the ring."""
    shares: dict[PeerName, PeerShare] = {}
    for e in status.entries:
        prev = shares.get(e.peer)
        if prev is None:
            shares[e.peer] = PeerShare(e.peer, e.nickname, e.is_known_peer, e.size)
        else:
            shares[e.peer] = PeerShare(prev.peer, prev.nickname, prev.reachable, prev.ips + e.size)
    return list(shares.values())


def status_ipam_text(status: IpamStatus) -> str:
    """`weave status ipam`: our line first with the active count, then the others (Weave
    prints those in Go map order; we use ring order). A line with no info keeps its trailing
    space, as Weave's."""
    lines = []
    shares = peer_shares(status)
    ours = [s for s in shares if s.peer == status.our_name]
    others = [s for s in shares if s.peer != status.our_name]
    for share in ours:
        lines.append(_owned_line(status, share, f"({status.active_ips} active)"))
    for share in others:
        lines.append(_owned_line(status, share, "" if share.reachable else "- unreachable!"))
    return "".join(lines)


def _owned_line(status: IpamStatus, share: PeerShare, info: str) -> str:
    percent = _f32(_f32(_f32(share.ips) * _f32(100.0)) / _f32(status.range_num_ips))
    display = f"{format_peer_name(share.peer)}({share.nickname})"
    return f"{display:<37} {share.ips:8d} IPs ({percent:04.1f}% of total) {info}\n"


def status_line(status: IpamStatus) -> str:
    """The value of the `Status:` line."""
    if status.entries:
        if all(not (e.size > 0 and e.is_known_peer) for e in status.entries):
            return "all IP ranges owned by unreachable peers - use 'rmpeer' if they are dead"
        if status.pending_allocates:
            return "waiting for IP(s) to become available"
        return "ready"
    if status.paxos is not None:
        if status.paxos.elector:
            return (
                f"awaiting consensus (quorum: {status.paxos.quorum}, "
                f"known: {status.paxos.known_nodes})"
            )
        return "priming"
    return "idle"


def status_section(status: IpamStatus) -> str:
    """The `Service: ipam` block of `weave status` (the caller adds the blank line before)."""
    return (
        "        Service: ipam\n"
        f"         Status: {status_line(status)}\n"
        f"          Range: {status.range}\n"
        f"  DefaultSubnet: {status.default_subnet}\n"
    )


def report_ipam(status: IpamStatus) -> dict[str, Any]:
    """The `IPAM` member of `GET /report` (Go's nil slices are `null`)."""
    paxos = (
        None
        if status.paxos is None
        else {
            "Elector": status.paxos.elector,
            "KnownNodes": status.paxos.known_nodes,
            "Quorum": status.paxos.quorum,
        }
    )
    entries = [
        {
            "Token": format_ip(e.token),
            "Size": e.size,
            "Peer": format_peer_name(e.peer),
            "Nickname": e.nickname,
            "IsKnownPeer": e.is_known_peer,
            "Version": e.version,
        }
        for e in status.entries
    ]
    claims = [
        {"Ident": c.ident, "CIDR": {"Addr": format_ip(c.cidr.addr), "PrefixLen": c.cidr.prefix_len}}
        for c in status.pending_claims
    ]
    allocates = [f"{a.ident} {a.subnet}" for a in status.pending_allocates]
    return {
        "Paxos": paxos,
        "Range": str(status.range),
        "RangeNumIPs": status.range_num_ips,
        "ActiveIPs": status.active_ips,
        "DefaultSubnet": str(status.default_subnet),
        "Entries": entries or None,
        "PendingClaims": claims or None,
        "PendingAllocates": allocates or None,
    }


def ip_json(status: IpamStatus) -> dict[str, Any]:
    """`GET /ip`: `{"owned": [{"containerid": ..., "addrs": [...]}]}`."""
    return {
        "owned": [
            {"containerid": ident, "addrs": [str(c) for c in cidrs]}
            for ident, cidrs in status.owned
        ]
    }


def owned_rows(status: IpamStatus) -> list[tuple[str, tuple[CIDR, ...]]]:
    """(identifier, addresses) for a `weave ps`-style listing; the caller adds MACs."""
    return list(status.owned)


@dataclass(frozen=True)
class UnreachableShare:
    peers: tuple[PeerShare, ...]
    ips: int
    fraction: float
    """Share of the whole range held by unreachable peers (0.0 - 1.0)."""


def unreachable_share(status: IpamStatus) -> UnreachableShare:
    """Who holds space but cannot be reached: candidates for `rmpeer` if they are dead."""
    dead = tuple(s for s in peer_shares(status) if not s.reachable)
    ips = sum(s.ips for s in dead)
    return UnreachableShare(dead, ips, ips / status.range_num_ips)
