#!/usr/bin/env python3
"""dnsperf against weaveDNS and against dnsmasq serving the same names, in the same run.

    .venv/bin/python bench/dns/run.py [--names 1000 50000] [--seconds 3] [--rounds 5] [--pin]

Both servers serve the same hosts file (NAME.weave.local -> an address) on loopback addresses
(127.0.0.71 and .72, an unprivileged port); dnsperf asks each for every name in turn, the same
way, alternating between them round after round so that whatever else the machine is doing
hits both alike (--pin puts the servers on the last CPU and dnsperf on the others). Prints
queries/s (best and median over the rounds), the server's CPU time per query (steadier than
q/s on a busy machine), each server's RSS with the names loaded, and weaved/dnsmasq; once
per --names size (target, issue 16: >= 1.0x dnsmasq at 1 000 names). Needs dnsperf,
dnsmasq (and taskset for --pin); every step is bounded in time and the servers are stopped
by pid.
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
from dataclasses import dataclass, field
from pathlib import Path

WEAVED_ADDR = "127.0.0.71"
DNSMASQ_ADDR = "127.0.0.72"


@dataclass
class Result:
    qps: list[float] = field(default_factory=list)
    cpu_us: list[float] = field(default_factory=list)
    codes: str = "?"
    rss_mb: float = 0.0


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


def _pinned(cpus: str | None, argv: list[str]) -> list[str]:
    return ["taskset", "-c", cpus, *argv] if cpus else argv


def start_weaved(hosts: Path, port: int, cpus: str | None) -> subprocess.Popen[str]:
    argv = [sys.executable, "-m", "weaved.dns", "--listen", f"{WEAVED_ADDR}:{port}"]
    argv += ["--hosts", str(hosts), "--resolv-conf", "/dev/null"]
    proc = subprocess.Popen(_pinned(cpus, argv), stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if not line.startswith("ready"):
        stop(proc)
        raise SystemExit(f"weaved dns did not start: {line!r}")
    return proc


def start_dnsmasq(hosts: Path, port: int, cpus: str | None) -> subprocess.Popen[str]:
    argv = ["dnsmasq", "--keep-in-foreground", "--conf-file=/dev/null", "--no-resolv"]
    argv += ["--no-hosts", f"--addn-hosts={hosts}", f"--listen-address={DNSMASQ_ADDR}"]
    argv += ["--bind-interfaces", f"--port={port}", "--pid-file=", "--local-ttl=1"]
    argv += ["--cache-size=10000", "--user=root" if os.geteuid() == 0 else "--user="]
    proc = subprocess.Popen(
        _pinned(cpus, argv), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
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


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process, from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def dnsperf(
    addr: str, port: int, queries: Path, seconds: int, clients: int, cpus: str | None
) -> tuple[float, int, str]:
    argv = ["dnsperf", "-s", addr, "-p", str(port), "-d", str(queries), "-l", str(seconds)]
    argv += ["-c", str(clients), "-q", "256", "-t", "2"]
    out = subprocess.run(
        _pinned(cpus, argv), capture_output=True, text=True, timeout=seconds + 30, check=False
    ).stdout
    qps = re.search(r"Queries per second:\s+([\d.]+)", out)
    done = re.search(r"Queries completed:\s+(\d+)", out)
    codes = re.search(r"Response codes:\s+(.*)", out)
    if qps is None or done is None:
        raise SystemExit(f"dnsperf failed against {addr}:{port}:\n{out}")
    return float(qps.group(1)), int(done.group(1)), codes.group(1).strip() if codes else "?"


def stop(proc: subprocess.Popen[str]) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=5)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def run_size(
    args: argparse.Namespace, names: int, server_cpus: str | None, client_cpus: str | None
) -> None:
    results = {"weaved": Result(), "dnsmasq": Result()}
    with tempfile.TemporaryDirectory(prefix="weaved-bench-dns-") as tmp:
        hosts, queries = write_inputs(Path(tmp), names)
        servers = {"weaved": start_weaved(hosts, args.port, server_cpus)}
        try:
            servers["dnsmasq"] = start_dnsmasq(hosts, args.port, server_cpus)
            for _ in range(args.rounds):
                for name, addr in (("weaved", WEAVED_ADDR), ("dnsmasq", DNSMASQ_ADDR)):
                    r = results[name]
                    before = cpu_seconds(servers[name].pid)
                    qps, done, r.codes = dnsperf(
                        addr, args.port, queries, args.seconds, args.clients, client_cpus
                    )
                    r.qps.append(qps)
                    r.cpu_us.append((cpu_seconds(servers[name].pid) - before) / done * 1e6)
            for name, proc in servers.items():
                results[name].rss_mb = rss_mb(proc.pid)
        finally:
            for proc in servers.values():
                stop(proc)
    for name, r in results.items():
        print(
            f"{name:8} best {max(r.qps):9.0f} q/s   median {statistics.median(r.qps):9.0f} q/s"
            f"   cpu {statistics.median(r.cpu_us):5.2f} us/query"
            f"   rss {r.rss_mb:6.1f} MB   runs {' '.join(f'{q:.0f}' for q in r.qps)}"
            f"   responses: {r.codes}"
        )
    w, d = results["weaved"], results["dnsmasq"]
    print(
        f"ratio    best {max(w.qps) / max(d.qps):9.2f}       median "
        f"{statistics.median(w.qps) / statistics.median(d.qps):9.2f}"
        f"   (weaved / dnsmasq, {names} names, pinned: {server_cpus is not None})"
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
    args = p.parse_args()
    for tool in ("dnsperf", "dnsmasq", *(["taskset"] if args.pin else [])):
        if shutil.which(tool) is None:
            raise SystemExit(f"{tool} is not installed")
    ncpu = os.cpu_count() or 1
    server_cpus = str(ncpu - 1) if args.pin and ncpu >= 2 else None
    client_cpus = None if server_cpus is None else f"0-{ncpu - 2}"
    for names in args.names:
        run_size(args, names, server_cpus, client_cpus)
    return 0


if __name__ == "__main__":
    sys.exit(main())
