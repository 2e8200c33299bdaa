"""Mesh join benchmark: N routers in one process on loopback.

Every router listens on its own 127.1.0.x address (same port, like real peers). All are
started, then all get their targets at once: peer i dials peer i-1 and one random earlier
peer. We time how long until every router's topology holds the records of all N peers (a
peer known only as the far end of someone's connection does not count), and until every
connection is established (sleeve heartbeats acknowledged). Each size is bounded by
--timeout; all routers are stopped afterwards. Also printed: the process CPU time until full
topology, the part of it the bench's own convergence checks took ("check"), that CPU divided
by the topology updates applied (gossip CPU per update, every router's share included), how
many of the peer records received had to be gob-decoded (the rest were known bytes), and the
load average (other processes on the machine stretch the wall times, not the CPU). Targets
(issue 16): N=100 <= 2 s, N=250 <= 8 s (Weave Net's mesh aims at "order of 100 peers").

    sudo .venv/bin/python bench/mesh/run.py --sizes 25 100 250
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import random
import resource
import socket
import sys
import time
from dataclasses import dataclass

from weaved.datapath.overlays import OVERLAYS
from weaved.mesh import topology_wire
from weaved.mesh.gossip_api import PeerName
from weaved.mesh.router import MeshConfig, Router
from weaved.mesh.topology import Topology, UpdateResult

TARGETS = {100: 2.0, 250: 8.0}


@dataclass
class Result:
    n: int
    connections: int
    full_topology: float | None
    established: float | None
    started: float
    cpu: float  # process CPU seconds until full topology (or the timeout)
    check: float  # of which the bench's own convergence checks
    updates: int  # topology updates applied by all routers meanwhile
    records: int  # peer records in them
    decoded: int  # of which gob-decoded (not seen before)


def host(i: int) -> str:
    return f"127.1.{i // 250}.{i % 250 + 1}"


def free_port(n: int) -> int:
    rng = random.Random()
    for _ in range(100):
        port = rng.randrange(20000, 40000)
        try:
            for i in range(n):
                for kind in (socket.SOCK_STREAM, socket.SOCK_DGRAM):
                    with socket.socket(socket.AF_INET, kind) as s:
                        s.bind((host(i), port))
        except OSError:
            continue
        return port
    raise RuntimeError("no free port")


async def run_size(n: int, overlay: str, discovery: bool, timeout: float, seed: int) -> Result:
    rng = random.Random(seed)
    port = free_port(n)
    routers = [
        Router(
            MeshConfig(
                name=PeerName(0x0A00_0000_0000 + i + 1),
                nickname=f"bench{i}",
                host=host(i),
                port=port,
                discovery=discovery,
                overlays=(overlay,),
                seed=rng.getrandbits(32),
            ),
            overlay_factories=OVERLAYS,
        )
        for i in range(n)
    ]
    t_start = time.monotonic()
    await asyncio.gather(*(r.start() for r in routers))
    started = time.monotonic() - t_start
    targets = {0: set[int]()}
    for i in range(1, n):
        targets[i] = {i - 1, rng.randrange(i)}
    t0 = time.monotonic()
    for i, r in enumerate(routers):
        r.set_targets([host(t) for t in sorted(targets[i])])
    names = {r.us for r in routers}
    counted = _count_updates()
    stats = topology_wire.CODEC.stats
    records0, decoded0 = stats["records"], stats["decoded"]
    cpu0 = time.process_time()
    cpu: float | None = None
    check = 0.0
    full: float | None = None
    est: float | None = None
    # Routers not yet seen complete; once none is left, one pass over all confirms it (a
    # router may lose a peer again), so each check looks at few routers most of the time.
    pending = list(routers)
    try:
        while time.monotonic() - t0 < timeout and (full is None or est is None):
            now = time.monotonic() - t0
            c0 = time.process_time()
            if full is None:
                pending = [r for r in pending if not _complete(r, names)]
                if not pending:
                    pending = [r for r in routers if not _complete(r, names)]
                if not pending:
                    full = now
                    cpu = time.process_time() - cpu0
                    updates = counted[0]
                    records, decoded = stats["records"] - records0, stats["decoded"] - decoded0
            if est is None and all(
                len(r.connections) >= len(targets[i])
                and all(c.established for c in r.connections.values())
                for i, r in enumerate(routers)
            ):
                est = now
            if full is None:
                check += time.process_time() - c0
            await asyncio.sleep(0.02)
        conns = sum(len(r.connections) for r in routers) // 2
    finally:
        await asyncio.gather(*(r.stop() for r in routers), return_exceptions=True)
    if cpu is None:
        cpu, updates = time.process_time() - cpu0, counted[0]
        records, decoded = stats["records"] - records0, stats["decoded"] - decoded0
    return Result(n, conns, full, est, started, cpu, check, updates, records, decoded)


def _complete(router: Router, names: set[PeerName]) -> bool:
    """The router holds a record of every peer (none known only by name)."""
    peers = router.topology.peers
    return (
        len(peers) == len(names)
        and peers.keys() == names
        and not any(p.placeholder for p in peers.values())
    )


_original_apply = Topology.apply_update


def _count_updates() -> list[int]:
    """Count Topology.apply_update calls from now on (a fresh counter per size)."""
    counter = [0]

    def counting(self: Topology, payload: bytes, collect: bool = True) -> UpdateResult:
        counter[0] += 1
        return _original_apply(self, payload, collect)

    Topology.apply_update = counting  # type: ignore[method-assign]
    return counter


def fmt(x: float | None) -> str:
    return f"{x:8.2f}s" if x is not None else "  timeout"


async def main() -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--sizes", type=int, nargs="+", default=[25, 100, 250])
    ap.add_argument("--overlay", choices=["sleeve", "none"], default="sleeve")
    ap.add_argument("--discovery", action="store_true", help="let peers connect to everyone")
    ap.add_argument("--timeout", type=float, default=120.0, help="per size, seconds")
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    print(
        f"mesh join: overlay={args.overlay} discovery={args.discovery} "
        f"python={sys.version.split()[0]} cpus={os.cpu_count()} load={os.getloadavg()[0]:.1f}"
    )
    print(
        f"{'N':>5} {'conns':>6} {'start':>9} {'topology':>9} {'target':>7} {'established':>12}"
        f" {'cpu':>7} {'check':>6} {'updates':>8} {'cpu/update':>11} {'decoded/records':>16}"
        f" {'load':>5}"
    )
    for n in args.sizes:
        r = await run_size(n, args.overlay, args.discovery, args.timeout, args.seed)
        target = f"{TARGETS[n]:6.1f}s" if n in TARGETS else "      -"
        times = f"{r.started:8.2f}s {fmt(r.full_topology)} {target} {fmt(r.established):>12}"
        per_update = 1000 * r.cpu / max(r.updates, 1)
        cpu = f"{r.cpu:6.2f}s {r.check:5.2f}s {r.updates:>8} {per_update:>8.3f} ms"
        load = os.getloadavg()[0]
        print(
            f"{r.n:>5} {r.connections:>6} {times} {cpu} {r.decoded:>7}/{r.records:<8} {load:5.1f}"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(asyncio.run(main()))
