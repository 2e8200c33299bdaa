"""bench/reconcile/containers.py: one daemon with many attached (namespace) containers.

Prints, each next to a baseline from the same run: attach latency p50/p99 (one at a time and 10
at once; baseline: the same veth + address + up done with plain `ip` commands), the daemon's
idle CPU and a no-op `plan` answered by the daemon (baseline: the same with only 10 attached),
RSS after attaching and after K attach/detach cycles (the slope per cycle).

Run as root: python bench/reconcile/containers.py [--containers 200] [--cycles 100]
[--idle 30]; --containers 1000 for the large host. Everything lives in namespaces named
`wdhs-*` that are deleted at the end. Profiling: BENCH_PYSPY=FILE records the daemon with
py-spy; HS_TRACE=1 signals SIGUSR2 before and after the churn (for a sitecustomize that dumps
tracemalloc snapshots).
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from tests.helpers import Netns, sh, stop_process, wait_for
from weaved.control import Client

SPEC = """\
version: 1
peer: {name: "3e:80:e7:5a:63:b1"}
ipalloc:
  range: 10.32.0.0/12
  init: {mode: consensus, peer_count: 1}
dns: {enabled: false}
"""
CLK_TCK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


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
        "p50_ms": round(pct(samples, 0.5) * 1000, 1),
        "p99_ms": round(pct(samples, 0.99) * 1000, 1),
        "max_ms": round(max(samples) * 1000, 1),
    }


class Bench:
    def __init__(self, client: Client, pid: int, tag: str) -> None:
        self.client, self.pid, self.tag = client, pid, tag
        self.names: list[str] = []

    def new_ns(self) -> str:
        name = f"wdhs-{self.tag}-{len(self.names)}"
        sh(["ip", "netns", "add", name])
        self.names.append(name)
        return name

    def attach(self, name: str) -> float:
        body = {"target": f"netns:{name}", "addresses": [], "request_id": secrets.token_hex(4)}
        return timed(lambda: self.client.call("POST", "/attach", body, timeout=120))

    def detach(self, name: str) -> float:
        body = {"target": f"netns:{name}", "addresses": []}
        return timed(lambda: self.client.call("POST", "/detach", body, timeout=120))

    def plan_ms(self) -> float:
        samples = [timed(lambda: self.client.call("POST", "/plan", {})) for _ in range(5)]
        return round(statistics.median(samples) * 1000, 1)

    def idle_cpu_pct(self, seconds: float) -> float:
        before, start = cpu_seconds(self.pid), time.monotonic()
        time.sleep(seconds)
        return round(100 * (cpu_seconds(self.pid) - before) / (time.monotonic() - start), 2)

    def cleanup(self) -> None:
        for name in self.names:
            sh(["ip", "netns", "delete", name], check=False)


def plain_veth_ms(host: Netns, tag: str, count: int) -> list[float]:
    """Baseline: what an attach does, by hand (veth into the namespace, address, up)."""
    samples = []
    for i in range(count):
        ns = f"wdhs-{tag}-base{i}"
        sh(["ip", "netns", "add", ns])
        try:
            start = time.perf_counter()
            host.ip("link", "add", f"vb{i}", "type", "veth", "peer", "ethwe", "netns", ns)
            address = f"10.99.{i // 250}.{i % 250 + 1}/12"
            sh(["ip", "-n", ns, "addr", "add", address, "dev", "ethwe"])
            sh(["ip", "-n", ns, "link", "set", "ethwe", "up"])
            host.ip("link", "set", f"vb{i}", "up")
            samples.append(time.perf_counter() - start)
        finally:
            sh(["ip", "netns", "delete", ns], check=False)
    return samples


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--containers", type=int, default=200)
    parser.add_argument("--cycles", type=int, default=100, help="attach+detach cycles for RSS")
    parser.add_argument("--idle", type=float, default=30.0, help="seconds of idle CPU sampling")
    args = parser.parse_args()
    tag = secrets.token_hex(2)
    result: dict[str, Any] = {"containers": args.containers}
    with tempfile.TemporaryDirectory() as tmp, Netns("wdhs") as host:
        spec = Path(tmp) / "weave.yaml"
        spec.write_text(SPEC)
        proc = host.popen_weaved(spec, "daemon", log=Path(tmp) / "daemon.log")
        client = Client(str(Path(tmp) / "weaved.sock"), timeout=120)
        bench = Bench(client, proc.pid, tag)
        try:
            wait_for(client.alive, timeout=120, interval=0.1)
            if os.environ.get("BENCH_PYSPY"):  # a flame graph of the daemon for the whole run
                subprocess.Popen(
                    [
                        "py-spy",
                        "record",
                        "-p",
                        str(proc.pid),
                        "-o",
                        os.environ["BENCH_PYSPY"],
                        "-f",
                        "raw",
                        "--nonblocking",
                    ]
                )
            base = plain_veth_ms(host, tag, 20)
            first = [bench.attach(bench.new_ns()) for _ in range(10)]
            time.sleep(1)
            small = {
                "noop_plan_ms": bench.plan_ms(),
                "idle_cpu_pct": bench.idle_cpu_pct(args.idle),
                "rss_mb": round(rss_mb(proc.pid), 1),
            }
            seq = first + [bench.attach(bench.new_ns()) for _ in range(args.containers - 30)]
            batch = [bench.new_ns() for _ in range(20)]
            with ThreadPoolExecutor(10) as pool:
                concurrent = list(pool.map(bench.attach, batch))
            time.sleep(1)
            large = {
                "noop_plan_ms": bench.plan_ms(),
                "idle_cpu_pct": bench.idle_cpu_pct(args.idle),
                "rss_mb": round(rss_mb(proc.pid), 1),
            }
            churn = bench.names[-10:]
            rss = [rss_mb(proc.pid)]
            detach_s: list[float] = []
            if os.environ.get("HS_TRACE"):  # tracemalloc snapshots (see --help of tracemalloc)
                os.kill(proc.pid, 12)
            for cycle in range(args.cycles):
                name = churn[cycle % len(churn)]
                detach_s.append(bench.detach(name))
                bench.attach(name)
                if cycle % 10 == 9:
                    rss.append(rss_mb(proc.pid))
            if os.environ.get("HS_TRACE"):
                os.kill(proc.pid, 12)
                time.sleep(5)
            result.update(
                {
                    "baseline_plain_ip_veth": summary(base),
                    "attach_sequential": summary(seq),
                    "attach_10_at_once": summary(concurrent),
                    "detach": summary(detach_s),
                    "with_10_attached": small,
                    f"with_{args.containers}_attached": large,
                    "rss_after_churn_mb": round(rss[-1], 1),
                    "rss_slope_kb_per_cycle": round(
                        (rss[-1] - rss[0]) * 1024 / max(1, args.cycles), 1
                    ),
                    "cycles": args.cycles,
                }
            )
        finally:
            stop_process(proc)
            bench.cleanup()
            log = (Path(tmp) / "daemon.log").read_text(errors="replace")
            result["daemon_log_lines"] = log.count("\n")
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    try:
        raise SystemExit(main())
    except subprocess.TimeoutExpired as exc:
        raise SystemExit(f"timed out: {exc}") from None
