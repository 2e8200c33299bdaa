"""Memory of a daemon's mesh and weaveDNS state with 250 peers and 5 000 DNS names, and its
slope over a churn of peer restarts.

The process measured (the "target") runs what the daemon runs for these: a mesh Router with
the sleeve overlay and a DnsService on the `nameserver` channel (the kernel parts, which hold
nothing per peer, are left out so no root is needed). This process runs N fake peers
(real routers on loopback, the real protocol); peer 0 dials the target, the others form a
mesh among themselves (a ring plus a random link each, no discovery); the target discovers
them and connects to every one, as a daemon does. Once the target knows every peer, peer 0
gossips names/N DNS names per peer with that peer as origin. Printed: the target's RSS once
it holds every peer and every name (target: <= 80 MB), then during --churn seconds of peer
restarts (a random fake peer is stopped and started again with a new UID) the
RSS every few seconds and its least-squares slope in MB/min (target: flat).

The slope is fitted after the first tenth of the churn, and over each half (no growth: the
second half's slope about 0; the first holds the warm-up), and per restart over the second
half (a loaded machine restarts fewer peers a minute: compare runs by that). Beside it: the
target's threads and fds at the start and end of the churn; Python's allocated blocks (flat
blocks under a growing RSS: the allocator keeps pages, not a Python leak); the records held
by the target's topology decode cache (each restart brings new versions of a few peers'
records; it holds up to 2 048, ~2 kB each decoded here, ~4-6 MB when full: the RSS grows
while it fills, the first minutes of the churn).

    .venv/bin/python bench/memory/run.py [--peers 250] [--names 5000] [--churn 600]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import random
import resource
import signal
import subprocess
import sys
import time
from pathlib import Path

from weaved.daemon.memory import fix_mmap_threshold, give_back_freed_memory
from weaved.datapath.overlays import OVERLAYS
from weaved.dns.gossiper import DnsGossipData
from weaved.dns.service import DnsConfig, DnsService
from weaved.dns.zone import Entry
from weaved.mesh.gossip import SurrogateGossiper
from weaved.mesh.gossip_api import GossipData, PeerName
from weaved.mesh.router import MeshConfig, Router
from weaved.mesh.topology_wire import CODEC, PayloadCodec

TARGET_HOST = "127.5.0.1"
RSS_TARGET_MB = 80.0


def fake_host(i: int) -> str:
    return f"127.6.{i // 250}.{i % 250 + 1}"


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def threads_and_fds(pid: int) -> tuple[int, int]:
    return len(os.listdir(f"/proc/{pid}/task")), len(os.listdir(f"/proc/{pid}/fd"))


async def target_main(port: int, plain_allocator: bool) -> None:
    """The measured process: prints `peers names blocks` every 0.5 s until stdin closes.
    Its allocator is set up as `weaved daemon` sets up its own (weaved/daemon/memory.py:
    mallopt, malloc_trim every 10 s) unless `plain_allocator`."""
    trimming: asyncio.Task[None] | None = None
    if not plain_allocator:
        fix_mmap_threshold()
        trimming = asyncio.create_task(give_back_freed_memory())
    router = Router(
        MeshConfig(
            name=PeerName(0x0B00_0000_0001),
            nickname="target",
            host=TARGET_HOST,
            port=port,
            overlays=("sleeve",),
        ),
        overlay_factories=OVERLAYS,
    )
    dns = DnsService(
        DnsConfig(listen=f"{TARGET_HOST}:{port + 1}", resolv_conf="/dev/null"),
        router.peer_view(),
    )
    dns.join_mesh(router)
    await router.start()
    if os.environ.get("BENCH_MEMORY_TRACE") == "types":
        _count_types_on_signals()
    elif os.environ.get("BENCH_MEMORY_TRACE"):
        _trace_on_signals()
    server = asyncio.create_task(dns.run())
    loop = asyncio.get_running_loop()
    eof = loop.run_in_executor(None, sys.stdin.read)
    while not eof.done():
        live = sum(1 for e in dns.zone.entries() if e.live)
        # Python's live memory blocks: flat while RSS grows means the allocator keeps pages.
        status = {"peers": len(router.topology.peers), "names": live}
        status |= {"blocks": sys.getallocatedblocks(), "cached": CODEC.records_held()}
        print(json.dumps(status), flush=True)
        await asyncio.wait([eof], timeout=0.5)
    server.cancel()
    if trimming is not None:
        trimming.cancel()
    await router.stop()


def _trace_on_signals() -> None:
    """--trace: SIGUSR1 takes a tracemalloc snapshot, SIGUSR2 prints what grew since (stderr)."""
    import signal
    import tracemalloc

    tracemalloc.start(8)
    base: list[tracemalloc.Snapshot] = []

    def mark() -> None:
        base[:] = [tracemalloc.take_snapshot()]
        traced, peak = tracemalloc.get_traced_memory()
        print(f"trace: base {traced / 1e6:.1f} MB traced (peak {peak / 1e6:.1f})", file=sys.stderr)
        for stat in base[0].statistics("filename")[:15]:
            print(
                f"trace: by file {stat.size / 1e3:8.0f} kB {stat.count:7d} {stat.traceback}",
                file=sys.stderr,
            )
        for stat in base[0].statistics("lineno")[:25]:
            print(
                f"trace: by line {stat.size / 1e3:8.0f} kB {stat.count:7d} {stat.traceback}",
                file=sys.stderr,
            )

    def dump() -> None:
        try:
            _dump()
        except Exception:
            import traceback

            traceback.print_exc()

    def _dump() -> None:
        now = tracemalloc.take_snapshot()
        traced, peak = tracemalloc.get_traced_memory()
        print(f"trace: now {traced / 1e6:.1f} MB traced (peak {peak / 1e6:.1f})", file=sys.stderr)
        top = now.compare_to(base[0], "traceback") if base else now.statistics("traceback")
        for stat in top[:12]:
            print(f"trace: {stat.size_diff / 1e3:+.0f} kB {stat.count_diff:+d}", file=sys.stderr)
            for line in stat.traceback.format()[-8:]:
                print(f"trace:     {line}", file=sys.stderr)

    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGUSR1, mark)
    loop.add_signal_handler(signal.SIGUSR2, dump)


def _count_types_on_signals() -> None:
    """--count-types: SIGUSR1 counts live objects by type, SIGUSR2 prints which counts grew
    since (stderr); cheap enough not to change what is measured, unlike tracemalloc."""
    import collections
    import gc

    base: list[collections.Counter[str]] = []

    def count() -> collections.Counter[str]:
        gc.collect()
        return collections.Counter(type(o).__qualname__ for o in gc.get_objects())

    def mark() -> None:
        base[:] = [count()]

    def dump() -> None:
        now = count()
        grew = now - base[0] if base else now
        print(f"types: gc.garbage {len(gc.garbage)}; grew since the churn began:", file=sys.stderr)
        for name, n in grew.most_common(20):
            print(f"types: {n:+8d} {name} (now {now[name]})", file=sys.stderr)

    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGUSR1, mark)
    loop.add_signal_handler(signal.SIGUSR2, dump)


class SettledDns(SurrogateGossiper):
    """The `nameserver` channel of a fake peer that already holds every name: broadcasts are
    passed on along their tree (as weaveDNS does), gossip brings nothing new. Without it the
    fakes ran surrogates, which relay every distinct full state they see, so each full state
    the target sent a restarted peer came back through most of its 250 connections (5 000
    names each time): a mesh of peers without weaveDNS, not the daemon's case."""

    def on_gossip(self, payload: bytes) -> GossipData | None:
        return None


class FakePeer:
    def __init__(self, i: int, port: int, names: int, rng: random.Random) -> None:
        self.i, self.port, self.names, self.rng = i, port, names, rng
        self.router: Router | None = None
        self.dns: DnsService | None = None

    def inject_names(self, peers: int) -> int:
        """Peer 0 gossips `names` entries for each fake peer as their origin: what the target
        would hold had every peer registered its own (without 250 DNS channels relaying
        5 000 broadcasts inside this one process)."""
        assert self.dns is not None and self.dns.gossiper.sender is not None
        entries = []
        for p in range(peers):
            origin = PeerName(0x0A00_0000_0000 + p + 1)
            for k in range(self.names):
                n = p * self.names + k
                addr = (10 << 24) | (40 << 16) | n
                entries.append(Entry(f"cid{n}", origin, addr, f"c{n}.weave.local."))
        self.dns.zone.merge(entries)
        self.dns.gossiper.sender.gossip_broadcast(DnsGossipData(int(time.time()), entries))
        return len(entries)

    async def start(self, targets: list[str]) -> None:
        self.router = Router(
            MeshConfig(
                name=PeerName(0x0A00_0000_0000 + self.i + 1),
                nickname=f"fake{self.i}",
                host=fake_host(self.i),
                port=self.port,
                overlays=("sleeve",),
                # Fake peers keep to their ring and random links (discovery among 250 routers
                # in one process is 31 000 connections); the target discovers them all and
                # connects to each, as a daemon in a 250-peer mesh does.
                discovery=False,
                seed=self.rng.getrandbits(32),
            ),
            overlay_factories=OVERLAYS,
        )
        if self.i == 0:  # the DNS names all come through peer 0 (see inject_names)
            self.dns = DnsService(
                DnsConfig(listen="127.0.0.1:1", resolv_conf="/dev/null"), self.router.peer_view()
            )
            self.dns.join_mesh(self.router)
        else:
            self.router.add_channel("nameserver", SettledDns(time.monotonic))
        await self.router.start()
        self.router.set_targets(targets)

    async def stop(self) -> bool:
        """False if the router did not stop within 10 s (it is then abandoned)."""
        if self.router is None:
            return True
        task = asyncio.create_task(self.router.stop())
        done, _ = await asyncio.wait([task], timeout=10)
        self.router = None
        return bool(done)


async def driver(args: argparse.Namespace) -> int:
    rng = random.Random(args.seed)
    port = rng.randrange(20000, 40000)
    env = None
    if args.trace or args.count_types:
        env = dict(os.environ, BENCH_MEMORY_TRACE="1" if args.trace else "types")
    plain = ["--plain-allocator"] if args.plain_allocator else []
    target = subprocess.Popen(
        [sys.executable, __file__, "--target", str(port), *plain],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env=env,
    )
    assert target.stdout is not None and target.stdin is not None
    latest = {"peers": 0, "names": 0, "blocks": 0, "cached": 0}

    async def read_target() -> None:
        loop = asyncio.get_running_loop()
        assert target.stdout is not None
        while True:
            line = await loop.run_in_executor(None, target.stdout.readline)
            if not line:
                return
            latest.update(json.loads(line))

    reader = asyncio.create_task(read_target())
    per_peer = args.names // args.peers
    fakes = [FakePeer(i, port, per_peer, rng) for i in range(args.peers)]
    targets = {
        i: [fake_host(i - 1), fake_host(rng.randrange(i))] if i else [f"{TARGET_HOST}"]
        for i in range(args.peers)
    }
    try:
        await asyncio.sleep(1.0)
        rss0 = rss_mb(target.pid)
        t0 = time.monotonic()
        await asyncio.gather(*(f.start(targets[f.i]) for f in fakes))
        want_peers, want_names = args.peers + 1, per_peer * args.peers
        while time.monotonic() - t0 < args.timeout and latest["peers"] < want_peers:
            await asyncio.sleep(0.5)
        fakes[0].inject_names(args.peers)
        while time.monotonic() - t0 < args.timeout and latest["names"] < want_names:
            await asyncio.sleep(0.5)
        full = time.monotonic() - t0
        await asyncio.sleep(2.0)
        rss1 = rss_mb(target.pid)
        print(f"target idle: RSS {rss0:.1f} MB")
        print(
            f"target with {latest['peers'] - 1} peers and {latest['names']} names "
            f"(after {full:.1f} s): RSS {rss1:.1f} MB (target <= {RSS_TARGET_MB:.0f} MB)"
        )
        if args.trace or args.count_types:
            target.send_signal(signal.SIGUSR1)
        threads_fds = [threads_and_fds(target.pid)]
        samples: list[tuple[float, float]] = []
        blocks: list[tuple[float, float]] = []
        cached: list[tuple[float, int]] = []  # the topology decode cache's records
        done: list[float] = []  # restarts made at each RSS sample
        restarts = hung = 0
        c0 = time.monotonic()
        next_sample = c0
        while time.monotonic() - c0 < args.churn:
            f = fakes[rng.randrange(1, args.peers)]
            if not await f.stop():
                hung += 1
            await asyncio.sleep(args.restart_gap)
            await f.start(targets[f.i])
            restarts += 1
            if time.monotonic() >= next_sample:
                samples.append((time.monotonic() - c0, rss_mb(target.pid)))
                blocks.append((time.monotonic() - c0, float(latest["blocks"])))
                cached.append((time.monotonic() - c0, latest["cached"]))
                done.append(restarts)
                next_sample += args.sample
        await asyncio.sleep(1.0)  # the target's last line is of after the churn
        samples.append((time.monotonic() - c0, rss_mb(target.pid)))
        blocks.append((time.monotonic() - c0, float(latest["blocks"])))
        cached.append((time.monotonic() - c0, latest["cached"]))
        done.append(restarts)
        warm = [s for s in samples if s[0] >= args.churn / 10]
        warm_blocks = [b for b in blocks if b[0] >= args.churn / 10]
        half = args.churn / 2
        first, second = [s for s in samples if s[0] <= half], [s for s in samples if s[0] >= half]
        # Per restart: a loaded machine restarts fewer peers a minute (compare runs by this).
        per_restart = [(n, r) for n, (t, r) in zip(done, samples, strict=True) if t >= half]
        print(
            f"churn: {restarts} peer restarts ({hung} did not stop within 10 s) in "
            f"{args.churn:.0f} s; RSS MB at t(s): "
            + " ".join(f"{t:.0f}:{r:.1f}" for t, r in samples)
        )
        print(
            f"churn: RSS slope {slope(warm) * 60:+.2f} MB/min after the first tenth "
            f"({slope(samples) * 60:+.2f} over all; first {samples[0][1]:.1f}, "
            f"last {samples[-1][1]:.1f}; target flat; allocator: "
            f"{'plain glibc' if args.plain_allocator else 'as the daemon'})"
        )
        print(
            f"churn: RSS slope over the first half {slope(first) * 60:+.2f} MB/min, over the "
            f"second half {slope(second) * 60:+.2f} MB/min (no growth: the second about 0); "
            f"RSS at the start {samples[0][1]:.1f}, half-way {second[0][1]:.1f}, end "
            f"{samples[-1][1]:.1f} MB; {slope(per_restart) * 1024:+.1f} kB per restart over the "
            f"second half; threads, fds at the start {threads_fds[0]}, end "
            f"{threads_and_fds(target.pid)}"
        )
        print(
            f"churn: Python's allocated blocks slope {slope(warm_blocks) * 60:+.0f}/min "
            f"after the first tenth (at t(s): "
            + " ".join(f"{t:.0f}:{n / 1000:.0f}k" for t, n in blocks[:: max(1, len(blocks) // 12)])
            + f" end:{blocks[-1][1] / 1000:.0f}k)"
        )
        print(
            "churn: the topology decode cache's records at t(s): "
            + " ".join(f"{t:.0f}:{n}" for t, n in cached[:: max(1, len(cached) // 12)])
            + f" end:{cached[-1][1]} (its bound: {PayloadCodec._MAX_DECODED} records, "
            f"{PayloadCodec._MAX_DECODED_BYTES >> 10} kB of them; ~2 kB each here, decoded: "
            "RSS grows while it fills)"
        )
        if args.trace or args.count_types:
            target.send_signal(signal.SIGUSR2)
            await asyncio.sleep(30.0 if args.trace else 5.0)
    finally:
        await asyncio.gather(*(f.stop() for f in fakes), return_exceptions=True)
        target.stdin.close()
        try:
            target.wait(timeout=10)
        except subprocess.TimeoutExpired:
            target.kill()
            target.wait()
        reader.cancel()
    return 0


def slope(samples: list[tuple[float, float]]) -> float:
    """Least-squares MB per second."""
    if len(samples) < 2:
        return 0.0
    n = len(samples)
    mt = sum(t for t, _ in samples) / n
    mr = sum(r for _, r in samples) / n
    var = sum((t - mt) ** 2 for t, _ in samples)
    return sum((t - mt) * (r - mr) for t, r in samples) / var if var else 0.0


def main() -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--peers", type=int, default=250)
    ap.add_argument("--names", type=int, default=5000)
    ap.add_argument(
        "--churn", type=float, default=600.0, help="seconds of peer restarts (issue 16: 10 min)"
    )
    ap.add_argument("--restart-gap", type=float, default=0.5, help="seconds a peer stays down")
    ap.add_argument("--sample", type=float, default=10.0, help="seconds between RSS samples")
    ap.add_argument("--timeout", type=float, default=300.0)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument(
        "--trace", action="store_true", help="the target prints what tracemalloc saw grow"
    )
    ap.add_argument(
        "--count-types",
        action="store_true",
        help="the target prints which object types grew over the churn (cheaper than --trace)",
    )
    ap.add_argument(
        "--plain-allocator",
        action="store_true",
        help="the target leaves glibc's malloc as it is (the daemon tunes it: memory.py)",
    )
    ap.add_argument("--target", type=int, help=argparse.SUPPRESS)
    args = ap.parse_args()
    logging.basicConfig(level=logging.CRITICAL)  # stopping routers by the hundred is noisy
    if args.target is not None:
        asyncio.run(target_main(args.target, args.plain_allocator))
        return 0
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    print(
        f"memory: peers={args.peers} names={args.names} python={sys.version.split()[0]} "
        f"cpus={os.cpu_count()} load={os.getloadavg()[0]:.1f}"
    )
    return asyncio.run(driver(args))


if __name__ == "__main__":
    raise SystemExit(main())
