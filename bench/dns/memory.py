#!/usr/bin/env python3
"""What one weaveDNS name costs in memory (tracemalloc), at each --names size.

    .venv/bin/python bench/dns/memory.py [--names 5000 50000] [--origins 25]

In one process, for each size: a DnsService (the daemon's weaveDNS: zone, gossip channel,
answerer) receives the names as gossip from --origins peers (one gob payload each, decoded
as the daemon does; what a host holds of a mesh's names), then registers as many of its own
(attach's path: `register_container`), then answers one plain A query for every name (the
answer cache filled as under dnsperf). Printed: bytes per name held after each step, net of
the garbage collector, and the process's RSS. Run it against two trees (PYTHONPATH) to
compare before/after; the per-name figures are what the daemon's memory target adds up
(issue 16 target 2: 250 peers and 5 000 names <= 80 MB).
"""

from __future__ import annotations

import argparse
import gc
import struct
import sys
import time
import tracemalloc
from pathlib import Path

from weaved.dns.service import DnsConfig, DnsService
from weaved.dns.wire import encode_gossip
from weaved.dns.zone import Entry
from weaved.mesh.gossip_api import PeerName

OURSELVES = PeerName(0x0B00_0000_0001)


class Peers:
    """A mesh of `origins` peers besides us (no connections: the DNS channel only asks)."""

    def __init__(self, origins: int) -> None:
        self.peers = {PeerName(0x0A00_0000_0000 + p + 1): f"p{p}" for p in range(origins)}
        self.peers[OURSELVES] = "us"

    def our_name(self) -> PeerName:
        return OURSELVES

    def known_peers(self) -> dict[PeerName, str]:
        return self.peers

    def reachable_peers(self) -> set[PeerName]:
        return set(self.peers)


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def held() -> int:
    gc.collect()
    return tracemalloc.get_traced_memory()[0]


def query(name: str, qid: int) -> bytes:
    """A plain A query as dnsperf sends it (RD set, no EDNS0)."""
    qname = b"".join(bytes([len(x)]) + x.encode() for x in name.rstrip(".").split(".")) + b"\0"
    return struct.pack(">HHHHHH", qid & 0xFFFF, 0x0100, 1, 0, 0, 0) + qname + b"\0\1\0\1"


def measure(names: int, origins: int) -> None:
    peers = Peers(origins)
    payloads = []
    per_origin = names // origins
    for p, origin in enumerate(o for o in peers.peers if o != OURSELVES):
        entries = [
            Entry(f"{n:064x}", origin, (10 << 24) | (40 << 16) | n, f"r{n}.weave.local.")
            for n in range(p * per_origin, (p + 1) * per_origin)
        ]
        payloads.append(encode_gossip(int(time.time()), entries))
    gc.collect()
    tracemalloc.start()
    base = held()
    service = DnsService(DnsConfig(resolv_conf="/dev/null"), peers)
    start = time.process_time()
    for payload in payloads:
        service.gossiper.on_gossip_broadcast(OURSELVES, payload)
    del payloads
    received = held() - base
    for n in range(names):
        service.register_container(f"{n:064x}", [f"10.44.{n >> 8 & 255}.{n & 255}"], name=f"l{n}")
    registered = held() - base - received
    respond = service.answerer.respond
    for n in range(names):
        respond(query(f"r{n}.weave.local.", n))
        respond(query(f"l{n}.weave.local.", n))
    answered = held() - base - received - registered
    cpu = time.process_time() - start
    peak = tracemalloc.get_traced_memory()[1] - base
    tracemalloc.stop()
    total = len(service.zone)
    print(
        f"{names:6} names x2 ({total} entries): bytes/name  received {received / names:5.0f}"
        f"   registered {registered / names:5.0f}   answer cache {answered / (2 * names):5.0f}"
        f"   | all {(received + registered + answered) / (2 * names):5.0f} B/entry"
        f"   peak {peak / 2**20:5.1f} MiB   rss {rss_mb():5.1f} MB   cpu {cpu:5.2f} s"
    )
    assert len(service.answerer.lookup(f"r{names - 1}.weave.local")) == 1


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--names", type=int, nargs="+", default=[5000, 50000])
    p.add_argument("--origins", type=int, default=25, help="peers the received names come from")
    args = p.parse_args()
    for names in args.names:
        measure(names, args.origins)
    return 0


if __name__ == "__main__":
    sys.exit(main())
