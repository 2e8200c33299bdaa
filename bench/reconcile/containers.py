"""bench/reconcile/containers.py: one daemon with many attached (namespace) containers.

Prints, each next to a baseline from the same run:
- attach latency p50/p99/max: while filling the host (all, and the last tenth), one at a time
  with N attached, and with 10 attaches in flight at once with N attached; baseline: what an
  attach does (veth into the namespace, address, up) with plain `ip` commands, one at a time
  and 10 at once, and 10 at once into the daemon's bridge with N attached; and the kernel's
  share at that size (each port more costs more under the rtnl lock, each broadcast is copied
  into every container): the same steps asked for over netlink from the bench's own process,
  with Weave's gratuitous ARP, 10 at once into the daemon's bridge just before weaved's 10 at
  once (an `ip` process per step costs more than the kernel work it asks for), and the same
  with every other kernel step of weaved's attach (the port's anti-spoofing element and the
  port up first, Weave's ARP settings, accept_ra 0 and the multicast route inside: what the
  kernel alone makes of an attach as weaved makes it, with its bursts' CPU); all in 3
  bursts of 50 (weaved's detached after each but the last), with each burst's p50 as well
  (one burst's p50 varies by ±20 % between runs on a 2-core machine); each burst starts once
  the CPUs are 90 % idle (at most 20 s; the waits are printed): the burst before leaves ~50
  namespaces to destroy, under the rtnl lock every attach needs too; and each of weaved's
  bursts' CPU ms per attach, all CPUs' and the daemon's own (the kernel's flooding of the new
  containers' frames into every other container counts in the first only);
- sustained: the filling's last quarter (at most 250) at the filling's pace, against
  as many asked for over netlink by the bench just before them (the steps above; their
  namespaces deleted afterwards), each starting on quiet CPUs: latency p50/p99/max and all
  CPUs' busy ms per attach (and the daemon's), counted until LINGER s after the last, so a new
  container's IPv6 announcements, flooded into every other one, are in both: what an agent
  that costs nothing would reach on this machine, against weaved;
- the daemon's idle CPU and a no-op `plan` answered by the daemon, with 10 and with N attached;
  with `--services K` the daemon's spec holds K export rules (issue 16's host: 1 000), and
  with N attached the daemon's edit of one rule → the kernel's nftables show it (five edits);
- RSS after attaching and over K detach+attach cycles of 10 containers: the samples and the
  slope per cycle (least squares over the samples after the first tenth of the cycles, and
  over each half: no growth is a second half's slope about 0), the RSS at the start, half-way
  and end, and the daemon's threads and fds at the start and end of the churn;
- the daemon's CPU-seconds for the whole run, the bench's wall time and the load average at
  its start and end (others share the machine: compare runs made in the same minutes).

Run as root: python bench/reconcile/containers.py [--containers 200] [--cycles 100]
[--idle 30] [--fill-in-flight 1] [--container-ipv6 on|off] [--services 0]; --containers 1000
--services 1000 for the large host (with --fill-in-flight 10 it fills in minutes; the filling
figures are then 10 at once).
The containers are bare namespaces, with IPv6 on as the kernel makes them (a CNI pod's are
so too); `--container-ipv6 off` makes them as Docker makes its containers, IPv6 disabled in
each (add_namespaces): then a new container sends no IPv6 announcements (its MLD reports,
its address check) for the bridge to flood into every other one.
Everything lives in namespaces named `wdas-*` (`--prefix`: another name, e.g. when two
people run it at once) (the daemon's host, the containers, the baseline's) that are deleted
at the end, also on failure or Ctrl-C. Profiling:
BENCH_PYSPY=FILE records the daemon with py-spy; HS_TRACE=1 signals SIGUSR2 before and after
the churn (for a sitecustomize that dumps tracemalloc snapshots).
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import os
import secrets
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from bench.reconcile.run import cpu_seconds, edits_until_shown, export_rules
from tests.helpers import Netns, sh, stop_process, wait_for
from weaved.attach.arp import announce_soon
from weaved.attach.inside import ARP_CACHE
from weaved.attach.kernel import MAIN_TABLE, RT_SCOPE_LINK
from weaved.attach.model import MULTICAST_NET
from weaved.attach.netns import opened, run_in_netns
from weaved.attach.nlsock import Netlink
from weaved.compile.antispoof import Pair
from weaved.control import Client
from weaved.dataplane.nftsets import add_elements, remove_elements
from weaved.dataplane.sysctl import write_proc_sys
from weaved.model.resources import BRIDGE

SPEC = """\
version: 1
peer: {name: "3e:80:e7:5a:63:b1"}
ipalloc:
  range: 10.32.0.0/12
  init: {mode: consensus, peer_count: 1}
dns: {enabled: false}
"""
CLK_TCK = os.sysconf("SC_CLK_TCK")
AT_ONCE = 10
BURSTS = 3  # of 50 attaches 10 at once at the full size: one burst's p50 varies by ±20 %
SETTLE_IDLE, SETTLE_S = 0.9, 20.0  # each burst starts once the CPUs are this idle (or after)
SUSTAINED = 250  # the filling's last attaches, and as many over netlink just before them
SERVICES_SUBNET = "10.32.0"  # where `--services` rules send to: addresses in SPEC's range
# 20 one at a time, a burst of 50, the first 10, and 4 to fill from (one of them sustained)
MIN_CONTAINERS = 20 + 5 * AT_ONCE + 10 + 4
LINGER = 1.5  # s after the last attach still counted: a new container announces itself for ~1 s


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def load_average() -> list[float]:
    return [float(x) for x in Path("/proc/loadavg").read_text().split()[:3]]


def cpu_idle_ticks() -> tuple[int, int]:
    """(idle, all) ticks of every CPU so far (/proc/stat: idle and iowait are idle)."""
    ticks = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    return ticks[3] + ticks[4], sum(ticks)


def busy_ms(idle: int, ticks: int, count: int) -> float:
    """All CPUs' busy ms per attach since (idle, ticks) (`cpu_idle_ticks`)."""
    now_idle, now_ticks = cpu_idle_ticks()
    busy = (now_ticks - ticks) - (now_idle - idle)
    return round(busy / CLK_TCK * 1000 / count, 1)


def per_attach_ms(
    idle: int, ticks: int, daemon: float, pid: int, count: int
) -> tuple[float, float]:
    """CPU ms per attach since (idle, ticks) of every CPU and the daemon's `daemon` seconds:
    all CPUs' busy time (the kernel's flooding of the new containers' frames shows only here)
    and the daemon's own."""
    return (
        busy_ms(idle, ticks, count),
        round((cpu_seconds(pid) - daemon) * 1000 / count, 1),
    )


def settle(longest: float = SETTLE_S, window: float = 0.5) -> float:
    """Wait until the CPUs were SETTLE_IDLE idle over `window` (what the burst before left
    behind is done: its namespaces' destruction, their IPv6 announcements) or `longest` has
    passed; the seconds waited. Baseline and weaved bursts start from the same quiet."""
    start = time.monotonic()
    while True:
        idle0, all0 = cpu_idle_ticks()
        time.sleep(window)
        idle1, all1 = cpu_idle_ticks()
        waited = time.monotonic() - start
        if (idle1 - idle0) >= SETTLE_IDLE * max(1, all1 - all0) or waited >= longest:
            return round(waited, 1)


def pct(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def timed(fn: Callable[[], Any]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def summary(samples: list[float]) -> dict[str, float]:
    if not samples:
        return {}
    return {
        "n": len(samples),
        "p50_ms": round(pct(samples, 0.5) * 1000, 1),
        "p99_ms": round(pct(samples, 0.99) * 1000, 1),
        "max_ms": round(max(samples) * 1000, 1),
    }


def slope(points: list[tuple[float, float]]) -> float:
    """Least-squares slope of y over x (0 with fewer than two points)."""
    if len(points) < 2:
        return 0.0
    mx = statistics.fmean(x for x, _ in points)
    my = statistics.fmean(y for _, y in points)
    den = sum((x - mx) ** 2 for x, _ in points)
    return sum((x - mx) * (y - my) for x, y in points) / den if den else 0.0


def ip_batch(lines: Iterable[str], *, check: bool = True) -> None:
    """Many `ip` commands in one process (`ip -batch`): a thousand namespaces in seconds."""
    text = "".join(f"{line}\n" for line in lines)
    if not text:
        return
    proc = subprocess.run(
        ["ip", "-force", "-batch", "-"], input=text, capture_output=True, text=True, timeout=600
    )
    if check and proc.returncode != 0:
        raise AssertionError(f"ip -batch → {proc.returncode}\n{proc.stderr[-2000:]}")


def add_namespaces(names: list[str], ipv6: bool) -> None:
    """Named network namespaces, as containers: `ipv6` False makes them as Docker makes its
    containers (Debian 12's docker.io 20.10 sets net.ipv6.conf.all and .default.disable_ipv6
    in each), so their ethwe has no IPv6 either; True leaves the kernel's defaults (a bare
    `ip netns add`, a CNI pod's namespace): each new ethwe then sends its MLD reports and
    address check, which the bridge floods into every container."""
    ip_batch(f"netns add {name}" for name in names)
    if ipv6:
        return

    def off() -> None:
        for key in ("all", "default"):
            Path(f"/proc/sys/net/ipv6/conf/{key}/disable_ipv6").write_text("1")

    for name in names:
        with opened(f"/run/netns/{name}") as fd:
            run_in_netns(fd, off)


class Bench:
    def __init__(self, client: Client, pid: int, tag: str, ipv6: bool = True) -> None:
        self.client, self.pid, self.tag = client, pid, tag  # tag: PREFIX-RANDOM
        self.ipv6 = ipv6  # the containers' own IPv6 (add_namespaces)
        self.names: list[str] = []

    def new_namespaces(self, count: int) -> list[str]:
        names = [f"{self.tag}-{len(self.names) + i}" for i in range(count)]
        self.names += names  # before they exist: cleaned up even if creating fails half-way
        add_namespaces(names, self.ipv6)
        return names

    def attach(self, name: str) -> float:
        body = {"target": f"netns:{name}", "addresses": [], "request_id": secrets.token_hex(4)}
        return timed(lambda: self.client.call("POST", "/attach", body, timeout=120))

    def detach(self, name: str) -> float:
        body = {"target": f"netns:{name}", "addresses": []}
        return timed(lambda: self.client.call("POST", "/detach", body, timeout=120))

    def at_once(self, names: list[str], in_flight: int = AT_ONCE) -> list[float]:
        if in_flight == 1:
            return [self.attach(name) for name in names]
        with ThreadPoolExecutor(in_flight) as pool:
            return list(pool.map(self.attach, names))

    def plan_ms(self) -> float:
        samples = [timed(lambda: self.client.call("POST", "/plan", {})) for _ in range(5)]
        return round(statistics.median(samples) * 1000, 1)

    def idle_cpu_pct(self, seconds: float) -> float:
        before, start = cpu_seconds(self.pid), time.monotonic()
        time.sleep(seconds)
        return round(100 * (cpu_seconds(self.pid) - before) / (time.monotonic() - start), 2)

    def snapshot(self, idle: float) -> dict[str, float]:
        time.sleep(1)
        return {
            "noop_plan_ms": self.plan_ms(),
            "idle_cpu_pct": self.idle_cpu_pct(idle),
            "rss_mb": round(rss_mb(self.pid), 1),
        }

    def remove(self, names: list[str]) -> None:
        """Detach these containers and delete their namespaces."""
        for name in names:
            self.detach(name)
        ip_batch(f"netns delete {name}" for name in names)
        gone = set(names)
        self.names = [n for n in self.names if n not in gone]

    def cleanup(self) -> None:
        ip_batch((f"netns delete {name}" for name in self.names), check=False)
        self.names = []


def plain_ip(
    host: Netns, tag: str, count: int, at_once: int, ipv6: bool, bridge: str = ""
) -> list[float]:
    """Baseline: what an attach does, by hand (veth into the namespace, address, up; with
    `bridge`, the host end made its port), with `at_once` of them in flight, into namespaces
    made as the containers are (`ipv6`: add_namespaces)."""
    names = [f"{tag}-b{at_once}{bridge[:1]}x{i}" for i in range(count)]
    master = ["master", bridge] if bridge else []

    def ip(ns: str, *args: str) -> None:
        # nsenter, not `ip -n`: that one copies the mount namespace, whose cost grows with the
        # namespaces mounted under /run/netns (~4 ms a command more with 1 000 of them).
        sh(["nsenter", f"--net=/run/netns/{ns}", "ip", *args])

    def one(i: int) -> float:
        ns, veth = names[i], f"vb{at_once}{bridge[:1]}x{i}"
        start = time.perf_counter()
        ip(host.name, "link", "add", veth, "type", "veth", "peer", "ethwe", "netns", ns)
        ip(ns, "addr", "add", f"10.99.{i // 250}.{i % 250 + 1}/12", "dev", "ethwe")
        ip(ns, "link", "set", "ethwe", "up")
        ip(host.name, "link", "set", veth, *master, "up")
        return time.perf_counter() - start

    try:
        add_namespaces(names, ipv6)
        with ThreadPoolExecutor(at_once) as pool:
            return list(pool.map(one, range(count)))
    finally:
        ip_batch((f"netns delete {name}" for name in names), check=False)


def netlink_floor(
    host: Netns,
    tag: str,
    count: int,
    at_once: int,
    ipv6: bool,
    burst: int = 0,
    cpu: list[float] | None = None,
    *,
    linger: float = LINGER,
    weaveds_steps: bool = False,
) -> list[float]:
    """Baseline: the kernel's share of an attach into the daemon's bridge, asked for over
    netlink from this process (no `ip` process started per step): the veth into the namespace,
    address and up inside and the gratuitous ARP that Weave's attach sends (weaved's too), the
    host end a port of the bridge (without a link-local address, as weaved makes it) and up;
    `at_once` in flight, into namespaces made as the containers are (`ipv6`). The namespaces
    stay until the batch is done, so their IPv6 announcements (if any) flood the bridge
    meanwhile, as a container's do. Each broadcast costs the
    kernel a copy into every container (5-6 ms of CPU a frame with 800: floods.py). With
    `cpu`, the namespaces stay `linger` s longer (their announcements land) and all CPUs'
    busy ms per attach from the first to then is appended to it. `weaveds_steps`: every kernel
    step of weaved's attach besides, in its order: the port's anti-spoofing element, the port
    up before the inside, Weave's ARP settings and accept_ra 0 inside, the multicast route."""
    kind = "w" if weaveds_steps else "n"  # the two of a burst never share a name
    names = [f"{tag}-{kind}{burst}x{at_once}x{i}" for i in range(count)]
    steps: list[Pair] = []

    def one(i: int) -> float:
        with Netlink() as nls, opened(f"/run/netns/{names[i]}") as fd:
            bridge = nls.link(name=BRIDGE)
            assert bridge is not None, "the daemon's bridge is gone"
            veth = f"v{kind}{burst}x{at_once}x{i}"
            address = ipaddress.IPv4Interface(f"10.98.{i // 250}.{i % 250 + 1}/12")
            start = time.perf_counter()
            port = nls.add_veth(veth, "ethwe", bridge.mtu, fd)
            assert port is not None, "a kernel that does not echo new links (before 6.3)"
            if weaveds_steps:
                steps.append((veth, address.ip))
                add_elements([(veth, address.ip)])
                plug(nls, port.index, bridge.index)

            def inside() -> None:
                with Netlink() as own:
                    ethwe = own.link(name="ethwe")
                    assert ethwe is not None
                    if weaveds_steps:
                        own.set_arp_params(ethwe.index, {k: int(v) for k, v in ARP_CACHE.items()})
                        if ethwe.accept_ra:
                            write_proc_sys("net/ipv6/conf/ethwe/accept_ra", "0")
                    own.add_address(ethwe.index, address)
                    own.set_link(ethwe.index, up=True)
                    announce_soon("ethwe", ethwe.mac, [address.ip])
                    if weaveds_steps:
                        own.add_route(MULTICAST_NET, ethwe.index, RT_SCOPE_LINK, MAIN_TABLE)

            run_in_netns(fd, inside)
            if not weaveds_steps:
                plug(nls, port.index, bridge.index)
            return time.perf_counter() - start

    host_fd = os.open(f"/run/netns/{host.name}", os.O_RDONLY)
    try:
        add_namespaces(names, ipv6)
        idle, ticks = cpu_idle_ticks()
        with ThreadPoolExecutor(at_once) as pool:
            took = list(pool.map(lambda i: run_in_netns(host_fd, lambda: one(i)), range(count)))
        if cpu is not None:
            time.sleep(linger)
            cpu.append(busy_ms(idle, ticks, count))
        return took
    finally:
        ip_batch((f"netns delete {name}" for name in names), check=False)
        if steps:  # of links gone with their namespaces (else the daemon's next converge)
            run_in_netns(host_fd, lambda: remove_elements(steps))
        os.close(host_fd)


def plug(nls: Netlink, index: int, bridge: int) -> None:
    """The host end a port of the bridge, without a link-local address, and up."""
    nls.set_no_link_local(index)
    nls.set_link(index, master=bridge, up=True)


def threads_and_fds(pid: int) -> tuple[int, int]:
    """The process's threads and open fds (a thread, netlink socket or namespace fd kept per
    attach would show here)."""
    return len(os.listdir(f"/proc/{pid}/task")), len(os.listdir(f"/proc/{pid}/fd"))


def service_edits(host: Netns, spec: Path, pid: int, count: int) -> dict[str, Any]:
    """The daemon's edit of one of the spec's `count` export rules → the edited rule in the
    kernel's nftables (bench/reconcile/run.py's watch), five times: seconds and the daemon's
    CPU-seconds per edit."""
    with opened(f"/run/netns/{host.name}") as fd:
        edits = list(
            edits_until_shown(
                fd, pid, lambda port: spec.write_text(spec_text(count, port)), SERVICES_SUBNET
            )
        )
    took = [e.seconds for e in edits]
    return {
        "samples_s": [round(x, 3) for x in took],
        "median_s": round(statistics.median(took), 3),
        "daemon_cpu_s_per_edit": round(statistics.median(e.cpu_s for e in edits), 3),
    }


def spec_text(services: int, edited_port: int = 80) -> str:
    """SPEC with `services` export rules (none: SPEC as it is)."""
    if not services:
        return SPEC
    return SPEC + "\n".join(export_rules(services, SERVICES_SUBNET, edited_port)) + "\n"


def churn(bench: Bench, names: list[str], cycles: int) -> dict[str, Any]:
    """Detach and attach again, `cycles` times over `names`; RSS every 10 cycles. "No growth"
    reads as: the slope over the second half about 0 (the first half holds the warm-up), the
    threads and fds the same at the end as at the start."""
    rss = [(0.0, rss_mb(bench.pid))]
    threads_fds = [threads_and_fds(bench.pid)]
    began = time.monotonic()
    detach_s: list[float] = []
    trace = bool(os.environ.get("HS_TRACE"))
    if trace:
        os.kill(bench.pid, signal.SIGUSR2)
    for cycle in range(cycles):
        name = names[cycle % len(names)]
        detach_s.append(bench.detach(name))
        bench.attach(name)
        if cycle % 10 == 9:
            rss.append((cycle + 1.0, rss_mb(bench.pid)))
    took = time.monotonic() - began
    if rss[-1][0] < cycles:  # a last sample at the end (fewer than 10 cycles since one)
        rss.append((float(cycles), rss_mb(bench.pid)))
    if trace:
        os.kill(bench.pid, signal.SIGUSR2)
        time.sleep(5)
    threads_fds.append(threads_and_fds(bench.pid))
    warm = [p for p in rss if p[0] >= cycles / 10]
    first = [p for p in rss if p[0] <= cycles / 2]
    second = [p for p in rss if p[0] >= cycles / 2]
    return {
        "detach": summary(detach_s),
        "cycles": cycles,
        "churn_s": round(took, 1),
        "rss_samples_mb": [round(y, 1) for _, y in rss],
        "rss_slope_kb_per_cycle": round(slope(warm) * 1024, 1),
        "rss_slope_kb_per_cycle_first_half": round(slope(first) * 1024, 1),
        "rss_slope_kb_per_cycle_second_half": round(slope(second) * 1024, 1),
        "rss_mb_start_half_end": [
            round(rss[0][1], 1),
            round(second[0][1], 1),
            round(rss[-1][1], 1),
        ],
        "threads_fds_start_end": threads_fds,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--containers", type=int, default=200, help=f"attached at once (≥ {MIN_CONTAINERS})"
    )
    parser.add_argument("--cycles", type=int, default=100, help="detach+attach cycles for RSS")
    parser.add_argument(
        "--idle",
        type=float,
        default=30.0,
        help="seconds of idle CPU sampling (60 spans the full check the daemon makes each minute)",
    )
    parser.add_argument("--prefix", default="wdas", help="of every namespace made (≤ 8 chars)")
    parser.add_argument(
        "--fill-in-flight",
        type=int,
        default=1,
        help="attaches in flight while filling the host (10: a large host filled faster)",
    )
    parser.add_argument(
        "--container-ipv6",
        choices=("on", "off"),
        default="on",
        help="the containers' own IPv6: on, the kernel's defaults (a bare namespace, a CNI"
        " pod's); off, as Docker makes its containers (IPv6 disabled in each)",
    )
    parser.add_argument(
        "--services",
        type=int,
        default=0,
        help="export rules in the daemon's spec (1 000: issue 16's host); with N attached,"
        " the edit of one until the kernel's nftables show it, five times",
    )
    args = parser.parse_args()
    ipv6 = args.container_ipv6 == "on"
    if args.containers < MIN_CONTAINERS:
        parser.error(f"--containers must be at least {MIN_CONTAINERS}")
    # SIGTERM as Ctrl-C: the finally blocks delete every namespace made.
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    if not 0 < len(args.prefix) <= 8 or not args.prefix.replace("-", "").isalnum():
        parser.error("--prefix: 1 to 8 letters, digits or dashes")
    tag = f"{args.prefix}-{secrets.token_hex(2)}"
    began, load_start = time.perf_counter(), load_average()
    result: dict[str, Any] = {
        "containers": args.containers,
        "container_ipv6": args.container_ipv6,
        "services": args.services,
    }
    fill_n = args.containers - 20 - 5 * AT_ONCE
    with tempfile.TemporaryDirectory() as tmp, Netns(args.prefix) as host:
        spec = Path(tmp) / "weave.yaml"
        spec.write_text(spec_text(args.services))
        proc = host.popen_weaved(spec, "daemon", log=Path(tmp) / "daemon.log")
        client = Client(str(Path(tmp) / "weaved.sock"), timeout=120)
        bench = Bench(client, proc.pid, tag, ipv6)
        try:
            wait_for(client.alive, timeout=120, interval=0.1)
            if os.environ.get("BENCH_PYSPY"):  # a flame graph of the daemon for the whole run
                out = os.environ["BENCH_PYSPY"]
                spy = ["py-spy", "record", "-p", str(proc.pid), "-o", out, "-f", "raw"]
                subprocess.Popen([*spy, "--nonblocking", "--threads"])
            base_one = plain_ip(host, tag, 20, 1, ipv6)
            base_many = plain_ip(host, tag, 5 * AT_ONCE, AT_ONCE, ipv6)
            first = [bench.attach(name) for name in bench.new_namespaces(10)]
            small = bench.snapshot(args.idle)
            rest = bench.new_namespaces(fill_n - 10)
            sustained = min(SUSTAINED, len(rest) // 4)
            head, tail = rest[: len(rest) - sustained], rest[len(rest) - sustained :]
            fill = first + bench.at_once(head, args.fill_in_flight)
            # The filling's tail against the same kernel work asked for by this process, both
            # at the filling's pace with their announcements' floods landing (counted LINGER s
            # longer): what an agent that costs nothing would reach on this machine.
            steady_waits = [settle()]
            steady_cpu: list[float] = []
            steady_floor = netlink_floor(
                host, tag, sustained, args.fill_in_flight, ipv6, BURSTS, cpu=steady_cpu
            )
            steady_waits.append(settle())
            idle, ticks, daemon = *cpu_idle_ticks(), cpu_seconds(proc.pid)
            steady_weaved = bench.at_once(tail, args.fill_in_flight)
            time.sleep(LINGER)
            steady_cpu += per_attach_ms(idle, ticks, daemon, proc.pid, len(tail))
            fill += steady_weaved
            one = [bench.attach(name) for name in bench.new_namespaces(20)]
            # The kernel's share at this size, just before weaved's 10 at once (each after a
            # burst: the one before's broadcasts still flood): a port more on a bridge of ~N
            # ports costs more (rtnl held for bridge work, broadcasts flooding every port).
            floor: list[float] = []
            stepped: list[float] = []  # the same with every kernel step of weaved's attach
            stepped_cpu: list[float] = []  # all CPUs' ms per attach of each of those bursts
            many: list[float] = []
            each: list[list[float]] = []  # each burst's p50s (ms): netlink, stepped, weaved
            waits: list[float] = []  # seconds each burst waited for a quiet machine
            cpu: list[tuple[float, float]] = []  # each burst's CPU ms per attach: all, daemon
            for burst in range(BURSTS):  # ≤ 1 024 ports: each burst but the last detached
                waits.append(settle())
                base = netlink_floor(host, tag, 5 * AT_ONCE, AT_ONCE, ipv6, burst)
                waits.append(settle())
                steps = netlink_floor(
                    host,
                    tag,
                    5 * AT_ONCE,
                    AT_ONCE,
                    ipv6,
                    burst,
                    stepped_cpu,
                    linger=0,
                    weaveds_steps=True,
                )
                names = bench.new_namespaces(5 * AT_ONCE)
                waits.append(settle())
                idle, ticks, daemon = *cpu_idle_ticks(), cpu_seconds(proc.pid)
                took = bench.at_once(names)
                cpu.append(per_attach_ms(idle, ticks, daemon, proc.pid, len(names)))
                floor += base
                stepped += steps
                many += took
                each.append([round(pct(x, 0.5) * 1000, 1) for x in (base, steps, took)])
                if burst < BURSTS - 1:
                    bench.remove(names)
            base_full = plain_ip(host, tag, 2 * AT_ONCE, AT_ONCE, ipv6, BRIDGE)
            large = bench.snapshot(args.idle)
            edits = service_edits(host, spec, proc.pid, args.services) if args.services else {}
            result.update(
                {
                    "baseline_plain_ip_one_at_a_time": summary(base_one),
                    "attach_filling_all": summary(fill),
                    "attach_filling_last_tenth": summary(fill[-max(1, len(fill) // 10) :]),
                    f"sustained_{sustained}_at_{args.fill_in_flight}_in_flight_from_"
                    f"{fill_n - sustained}": {
                        "baseline_netlink": summary(steady_floor),
                        "weaved": summary(steady_weaved),
                        "cpu_ms_per_attach_all_cpus_baseline_and_weaved_and_daemon": steady_cpu,
                        "seconds_waited_for_quiet_cpus_before_each": steady_waits,
                    },
                    f"attach_one_at_a_time_with_{args.containers - 20}": summary(one),
                    f"baseline_plain_ip_{AT_ONCE}_at_once": summary(base_many),
                    f"attach_{AT_ONCE}_at_once_with_{fill_n + 20}": summary(many),
                    f"baseline_plain_ip_{AT_ONCE}_at_once_into_the_bridge_with_"
                    f"{args.containers}": summary(base_full),
                    f"baseline_netlink_{AT_ONCE}_at_once_into_the_bridge_with_"
                    f"{fill_n + 20}": summary(floor),
                    f"baseline_netlink_with_weaveds_steps_{AT_ONCE}_at_once_into_the_bridge_"
                    f"with_{fill_n + 20}": summary(stepped),
                    "p50_ms_of_each_burst_baseline_netlink_with_weaveds_steps_and_weaved": each,
                    "seconds_waited_for_quiet_cpus_before_each_burst": waits,
                    "cpu_ms_per_attach_of_each_burst_all_cpus_and_daemon": cpu,
                    "cpu_ms_per_attach_of_each_burst_all_cpus_netlink_with_weaveds_steps": (
                        stepped_cpu
                    ),
                    "with_10_attached": small,
                    f"with_{args.containers}_attached": large,
                    f"service_edit_to_converged_with_{args.containers}_attached": edits,
                }
            )
            result.update(churn(bench, bench.names[-10:], args.cycles))
            result["daemon_cpu_s"] = round(cpu_seconds(proc.pid), 1)
        finally:
            stop_process(proc)
            bench.cleanup()
            log = (Path(tmp) / "daemon.log").read_text(errors="replace")
            result["daemon_log_lines"] = log.count("\n")
    result["bench_wall_s"] = round(time.perf_counter() - began, 1)
    result["load_average_start_end"] = [load_start, load_average()]
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    try:
        raise SystemExit(main())
    except subprocess.TimeoutExpired as exc:
        raise SystemExit(f"timed out: {exc}") from None
