"""weaveDNS in Weave Net 2.8.1's status layouts (outputs/*/status-dns.txt, status.txt, report.json,
name.json). Pure: the daemon passes the zone's entries and its settings in."""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from typing import Any

from weaved.dns.zone import Entry, store_order
from weaved.mesh.gossip_api import format_peer_name


def _table(entries: Iterable[Entry]) -> list[Entry]:
    return sorted(entries, key=store_order)


def render_status_dns(entries: Iterable[Entry], domain: str) -> str:
    """`weave status dns`: live entries, one line each, domain suffix trimmed, table order."""
    suffix = "." + domain
    lines = []
    for e in _table(entries):
        if not e.live:
            continue
        name = e.hostname[: -len(suffix)] if e.hostname.endswith(suffix) else e.hostname
        lines.append(
            f"{name:<12} {e.address:<15} {e.container_id[:12]:>12} {format_peer_name(e.origin)}\n"
        )
    return "".join(lines)


def render_status_summary(
    domain: str, upstream: Sequence[str], ttl: int, entries: Iterable[Entry]
) -> str:
    """The DNS block of `weave status`, starting with its blank separator line."""
    live = sum(1 for e in entries if e.live)
    return (
        "\n"
        "        Service: dns\n"
        f"         Domain: {domain}\n"
        f"       Upstream: {', '.join(upstream) if upstream else 'none'}\n"
        f"            TTL: {ttl}\n"
        f"        Entries: {live}\n"
    )


def report(
    domain: str, upstream: Sequence[str], address: str, ttl: int, entries: Iterable[Entry]
) -> dict[str, Any]:
    """The `DNS` object of `GET /report` (tombstones included; `Entries` null when empty)."""
    listed = [
        {
            "Hostname": e.hostname,
            "Origin": format_peer_name(e.origin),
            "ContainerID": e.container_id,
            "Address": e.address,
            "Version": e.version,
            "Tombstone": e.tombstone,
        }
        for e in _table(entries)
    ]
    return {
        "Domain": domain,
        "Upstream": list(upstream),
        "Address": address,
        "TTL": ttl,
        "Entries": listed or None,
    }


def name_listing(entries: Iterable[Entry]) -> list[dict[str, Any]] | None:
    """`GET /name` (JSON): every entry in table order, origins as integers; None when empty."""
    listed = [
        {
            "ContainerID": e.container_id,
            "Origin": int(e.origin),
            "Addr": e.address,
            "Hostname": e.hostname,
            "Version": e.version,
            "Tombstone": e.tombstone,
        }
        for e in _table(entries)
    ]
    return listed or None


def render_name_json(entries: Iterable[Entry]) -> str:
    """`GET /name` body exactly as Go's json.Encoder writes it (compact, newline-terminated)."""
    return json.dumps(name_listing(entries), separators=(",", ":"), ensure_ascii=False) + "\n"


def render_lookup(addresses: Sequence[str]) -> str:
    """`weave dns-lookup NAME` output (dig +short): one address a line."""
    return "".join(f"{a}\n" for a in addresses)
