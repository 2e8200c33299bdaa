#!/usr/bin/env python3
"""dnsperf against weaveDNS and against dnsmasq serving the same names, in the same run.

    .venv/bin/python bench/dns/run.py [--names 1000 50000] [--seconds 3] [--rounds 5] [--pin]
                                      [--compare-tree DIR] [--no-netns]

Both servers serve the same hosts file (NAME.weave.local -> an address) on loopback addresses
(127.0.0.71 and .72, an unprivileged port); dnsperf asks each for every name in turn, the same
way, alternating between them round after round (who goes first alternates too) so that
whatever else the machine is doing hits both alike (--pin puts the servers on the last CPU
and dnsperf on the others). As root, servers and dnsperf run in a private network namespace
(`wd-bench-dns-PID`, deleted after), away from other processes' loopback traffic, raw
sockets and firewall rules, which otherwise tax every packet of both; --no-netns keeps them
in ours. --compare-tree DIR also runs weaveDNS from another source tree (e.g. a worktree at
an older commit) on 127.0.0.73, in the same rounds: before/after in the same minutes.

The weaveDNS measured is this tree's (the one holding this file). Each server is first
asked every name once (its steady state: weaveDNS's answers cached, as dnsmasq's hosts
are); then the rounds. Prints, per server: queries/s (best and median over the rounds), its
CPU time per query (user + system, steadier than q/s on a busy machine), its RSS with the
names loaded and asked; then weaved/dnsmasq (best and median q/s, and queries per CPU-second:
what q/s becomes where the server, not dnsperf, is what is short of CPU) and the load
average; once per --names size (target, issue 16: >= 1.0x dnsmasq at 1 000 names). Needs
dnsperf, dnsmasq (and taskset for --pin, iproute2 for the namespace); every step is bounded
in time and processes are stopped by pid.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

WEAVED_ADDR = "127.0.0.71"
DNSMASQ_ADDR = "127.0.0.72"
COMPARE_ADDR = "127.0.0.73"
OUR_TREE = Path(__file__).resolve().parents[2]


@dataclass
class Result:
    addr: str
    proc: subprocess.Popen[str]
    qps: list[float] = field(default_factory=list)
    user_us: list[float] = field(default_factory=list)
    sys_us: list[float] = field(default_factory=list)
    codes: str = "?"
    rss_mb: float = 0.0


@dataclass(frozen=True)
class Where:
    """How to run a process: in which namespace, on which CPUs."""

    netns: str | None
    cpus: str | None

    def argv(self, argv: list[str]) -> list[str]:
        if self.cpus:
            argv = ["taskset", "-c", self.cpus, *argv]
        if self.netns:
            argv = ["ip", "netns", "exec", self.netns, *argv]  # both exec: the pid stays
        return argv


def write_inputs(workdir: Path, names: int) -> tuple[Path, Path]:
    hosts = workdir / "hosts"
    queries = workdir / "queries"
    hosts.write_text(
        "".join(
            f"10.{32 + i // 65536}.{i // 256 % 256}.{i % 256} name{i}.weave.local\n"
            for i in range(names)
        )
    )
    queries.write_text("".join(f"name{i}.weave.local A\n" for i in range(names)))
    return hosts, queries


def start_weaved(
    hosts: Path, addr: str, port: int, where: Where, tree: str | None = None
) -> subprocess.Popen[str]:
    # -P: the code comes from `tree` (PYTHONPATH) only, never from the working directory.
    argv = [sys.executable, "-P", "-m", "weaved.dns", "--listen", f"{addr}:{port}"]
    argv += ["--hosts", str(hosts), "--resolv-conf", "/dev/null"]
    env = dict(os.environ, PYTHONPATH=tree or str(OUR_TREE))
    proc = subprocess.Popen(where.argv(argv), stdout=subprocess.PIPE, text=True, env=env)
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if not line.startswith("ready"):
        stop(proc)
        raise SystemExit(f"weaved dns did not start: {line!r}")
    return proc


def start_dnsmasq(hosts: Path, port: int, where: Where) -> subprocess.Popen[str]:
    argv = ["dnsmasq", "--keep-in-foreground", "--conf-file=/dev/null", "--no-resolv"]
    argv += ["--no-hosts", f"--addn-hosts={hosts}", f"--listen-address={DNSMASQ_ADDR}"]
    argv += ["--bind-interfaces", f"--port={port}", "--pid-file=", "--local-ttl=1"]
    argv += ["--cache-size=10000", "--user=root" if os.geteuid() == 0 else "--user="]
    proc = subprocess.Popen(
        where.argv(argv), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
    )
    time.sleep(0.5)
    if proc.poll() is not None:
        raise SystemExit(f"dnsmasq did not start: {proc.stderr.read() if proc.stderr else ''}")
    return proc


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def cpu_seconds(pid: int) -> tuple[float, float]:
    """(utime, stime) of a process, from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    tick = os.sysconf("SC_CLK_TCK")
    return int(fields[11]) / tick, int(fields[12]) / tick


def dnsperf(
    addr: str, port: int, queries: Path, seconds: int, clients: int, where: Where
) -> tuple[float, int, str]:
    argv = ["dnsperf", "-s", addr, "-p", str(port), "-d", str(queries), "-l", str(seconds)]
    argv += ["-c", str(clients), "-q", "256", "-t", "2"]
    out = subprocess.run(
        where.argv(argv), capture_output=True, text=True, timeout=seconds + 30, check=False
    ).stdout
    qps = re.search(r"Queries per second:\s+([\d.]+)", out)
    done = re.search(r"Queries completed:\s+(\d+)", out)
    codes = re.search(r"Response codes:\s+(.*)", out)
    if qps is None or done is None:
        raise SystemExit(f"dnsperf failed against {addr}:{port}:\n{out}")
    return float(qps.group(1)), int(done.group(1)), codes.group(1).strip() if codes else "?"


def warm_up(addr: str, port: int, queries: Path, where: Where) -> None:
    argv = ["dnsperf", "-s", addr, "-p", str(port), "-d", str(queries), "-n", "1"]
    argv += ["-q", "256", "-t", "2"]
    subprocess.run(where.argv(argv), capture_output=True, text=True, timeout=300, check=False)


def stop(proc: subprocess.Popen[str]) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=5)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


@contextmanager
def private_netns(wanted: bool) -> Iterator[str | None]:
    """A fresh namespace with loopback up (as root, unless not wanted), deleted after."""
    if not wanted or os.geteuid() != 0 or shutil.which("ip") is None:
        yield None
        return
    name = f"wd-bench-dns-{os.getpid()}"
    subprocess.run(["ip", "netns", "add", name], check=True, timeout=10)
    try:
        subprocess.run(["ip", "-n", name, "link", "set", "lo", "up"], check=True, timeout=10)
        yield name
    finally:
        subprocess.run(["ip", "netns", "del", name], check=False, timeout=10)


def run_size(args: argparse.Namespace, names: int, server: Where, client: Where) -> None:
    results: dict[str, Result] = {}
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="weaved-bench-dns-") as tmp:
        hosts, queries = write_inputs(Path(tmp), names)
        try:
            proc = start_weaved(hosts, WEAVED_ADDR, args.port, server)
            results["weaved"] = Result(WEAVED_ADDR, proc)
            if args.compare_tree:
                proc = start_weaved(hosts, COMPARE_ADDR, args.port, server, args.compare_tree)
                results["compared"] = Result(COMPARE_ADDR, proc)
            results["dnsmasq"] = Result(DNSMASQ_ADDR, start_dnsmasq(hosts, args.port, server))
            order = list(results)
            for r in results.values():  # every name asked once: each server's steady state
                warm_up(r.addr, args.port, queries, client)
            for round_ in range(args.rounds):
                for name in order if round_ % 2 == 0 else order[::-1]:
                    r = results[name]
                    user, system = cpu_seconds(r.proc.pid)
                    qps, done, r.codes = dnsperf(
                        r.addr, args.port, queries, args.seconds, args.clients, client
                    )
                    user_after, system_after = cpu_seconds(r.proc.pid)
                    r.qps.append(qps)
                    r.user_us.append((user_after - user) / done * 1e6)
                    r.sys_us.append((system_after - system) / done * 1e6)
            for r in results.values():
                r.rss_mb = rss_mb(r.proc.pid)
        finally:
            for r in results.values():
                stop(r.proc)
    load_after = os.getloadavg()
    for name, r in results.items():
        user, system = statistics.median(r.user_us), statistics.median(r.sys_us)
        print(
            f"{name:8} best {max(r.qps):9.0f} q/s   median {statistics.median(r.qps):9.0f} q/s"
            f"   cpu {user + system:5.2f} us/query (user {user:4.2f} sys {system:4.2f})"
            f"   rss {r.rss_mb:6.1f} MB   runs {' '.join(f'{q:.0f}' for q in r.qps)}"
            f"   responses: {r.codes}"
        )
    w, d = results["weaved"], results["dnsmasq"]

    def cpu(r: Result) -> float:
        return statistics.median(r.user_us) + statistics.median(r.sys_us)

    print(
        f"ratio    best {max(w.qps) / max(d.qps):9.2f}       median "
        f"{statistics.median(w.qps) / statistics.median(d.qps):9.2f}"
        f"   queries per CPU-second {cpu(d) / cpu(w):4.2f}"
        f"   (weaved / dnsmasq, {names} names, pinned: {server.cpus is not None},"
        f" private netns: {server.netns is not None}, load average"
        f" {load_before[0]:.2f} -> {load_after[0]:.2f})"
    )
    if args.compare_tree:
        c = results["compared"]
        print(
            f"compared best {max(c.qps) / max(d.qps):9.2f}       median "
            f"{statistics.median(c.qps) / statistics.median(d.qps):9.2f}"
            f"   queries per CPU-second {cpu(d) / cpu(c):4.2f}"
            f"   ({args.compare_tree} / dnsmasq)"
        )


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--names", type=int, nargs="+", default=[1000, 50000])
    p.add_argument("--seconds", type=int, default=3, help="per dnsperf run")
    p.add_argument("--rounds", type=int, default=5, help="alternating runs against each server")
    p.add_argument("--clients", type=int, default=4)
    p.add_argument("--port", type=int, default=15353)
    p.add_argument(
        "--pin", action="store_true", help="servers on the last CPU, dnsperf on the others"
    )
    p.add_argument("--no-netns", action="store_true", help="stay in our network namespace")
    p.add_argument("--compare-tree", metavar="DIR", help="also run weaveDNS from this source tree")
    args = p.parse_args()
    for tool in ("dnsperf", "dnsmasq", *(["taskset"] if args.pin else [])):
        if shutil.which(tool) is None:
            raise SystemExit(f"{tool} is not installed")
    ncpu = os.cpu_count() or 1
    server_cpus = str(ncpu - 1) if args.pin and ncpu >= 2 else None
    client_cpus = None if server_cpus is None else f"0-{ncpu - 2}"
    with private_netns(not args.no_netns) as netns:
        for names in args.names:
            run_size(args, names, Where(netns, server_cpus), Where(netns, client_cpus))
    return 0


if __name__ == "__main__":
    sys.exit(main())
