"""Gob decoding speed: what used to be a timed unit test, plus topology payloads.

- 30 kB of IPAM gossip (1 500 ring entries) decoded typed and generically; target < 10 ms each
  (best of --repeat).
- A full topology payload of N peers decoded cold (fresh records), then warm (all records
  known), then an incremental update of one changed peer against the warm cache: the last
  is what a busy mesh pays per gossip message.

    .venv/bin/python bench/gob/run.py
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable
from typing import Any

from weaved.mesh.gob import decode_one, encode_one
from weaved.mesh.gob import weave_types as wt
from weaved.mesh.gossip_api import PeerName
from weaved.mesh.topology_wire import ConnectionInfo, PayloadCodec, Peer

BASE = 0x3E80E75A63A7


def ipam_state(entries: int) -> dict[str, Any]:
    return {
        "Now": 1795304274,
        "Nicknames": {BASE + k: f"host{k}" for k in range(32)},
        "Ring": {
            "Start": 0x0A200000,
            "End": 0x0A300000,
            "Peer": BASE,
            "Entries": [
                {"Token": 0x0A200000 + 256 * k, "Peer": BASE + k % 32, "Version": k % 7}
                | {"Free": 200}
                for k in range(entries)
            ],
            "Seeds": [BASE + k for k in range(32)],
        },
    }


def best_of(repeat: int, fn: Callable[[], object]) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def payload_of(n: int, changed: int = -1, version: int = 1) -> bytes:
    peers = []
    for i in range(n):
        remotes = [PeerName(BASE + j) for j in ((i + 1) % n, (i + 7) % n)]
        conns = {
            r: ConnectionInfo(r, f"10.0.{i // 250}.{i % 250}:6783", True, True) for r in remotes
        }
        v = version + (1 if i == changed else 0)
        peers.append(Peer(PeerName(BASE + i), f"host{i}", 1000 + i, v, i + 1, True, conns))
    return PayloadCodec().encode(peers)


def topology_case(n: int, repeat: int) -> None:
    full, one = payload_of(n), payload_of(n, changed=n // 2)
    cold = best_of(repeat, lambda: PayloadCodec().decode(full))
    codec = PayloadCodec()
    codec.decode(full)
    warm = best_of(repeat, lambda: codec.decode(full))
    incr = best_of(1, lambda: codec.decode(one))
    print(
        f"topology {n} peers ({len(full)} bytes): cold {cold * 1000:.2f} ms, "
        f"warm {warm * 1000:.2f} ms, one peer changed {incr * 1000:.2f} ms"
    )


def main() -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--peers", type=int, nargs="+", default=[100, 250])
    args = ap.parse_args()
    print(
        f"gob decode: python={sys.version.split()[0]} cpus={os.cpu_count()} "
        f"load={os.getloadavg()[0]:.1f}"
    )
    data = encode_one(wt.GOSSIP_STATE, ipam_state(1500))
    typed = best_of(args.repeat, lambda: decode_one(data, wt.GOSSIP_STATE))
    generic = best_of(args.repeat, lambda: decode_one(data))
    print(
        f"IPAM gossip {len(data)} bytes: typed {typed * 1000:.2f} ms, generic "
        f"{generic * 1000:.2f} ms (target < 10 ms each)"
    )
    for n in args.peers:
        topology_case(n, args.repeat)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
