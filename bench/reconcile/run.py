"""bench/reconcile: a no-op plan and a no-op apply with 1 000 exposed addresses and 1 000 service
rules, a no-op plan answered by the daemon, and the daemon's edit of one service rule →
converged latency, each next to a baseline from the same run.

The edit's latency runs from writing the spec file until the kernel's nftables show the edited
rule, as a user would see it; the watcher waits inside the namespace for the ruleset's
generation to change (a netlink request every 5 ms) and lists the chain only then, so it takes
almost no CPU from the daemon it measures. The daemon's CPU-seconds from the write until the
rule shows are printed too.

Run as root: python bench/reconcile/run.py [--objects 1000]. Everything happens in a private
network namespace that is deleted at the end. The code measured is the one PYTHONPATH names;
run from that tree (`python -m weaved` puts the current directory first on its path).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from tests.helpers import Netns, stop_process, wait_for
from weaved.attach.netns import opened, run_in_netns
from weaved.control import Client
from weaved.dataplane.nft import ruleset_generation


def big_spec(count: int, mtu: int = 1376, edited_port: int = 80) -> str:
    lines = [
        "version: 1",
        'peer: {name: "3e:80:e7:5a:63:a7"}',
        f"datapath: {{mtu: {mtu}}}",
        "expose:",
    ]
    lines += [f"  - cidr: 10.{100 + i // 250}.{i % 250}.1/24" for i in range(count)]
    lines += ["services:", "  export:"]
    lines += [
        f'    - {{name: s{i}, port: {10000 + i}, to: "10.100.0.{2 + i % 200}:'
        f'{edited_port if i == 7 else 80}"}}'
        for i in range(count)
    ]
    return "\n".join(lines) + "\n"


def shown_at(netns_fd: int, needle: str, timeout: float = 60) -> float:
    """perf_counter() when `nft list chain ip weaved output` inside the namespace first shows
    `needle`; the chain is listed once per new ruleset generation."""

    def watch() -> float:
        import nftables

        nft = nftables.Nftables()  # made here: its netlink socket is the namespace's
        seen: int | None = -1
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            generation = ruleset_generation()
            if generation is None or generation != seen:
                seen = generation
                if needle in nft.cmd("list chain ip weaved output")[1]:
                    return time.perf_counter()
            time.sleep(0.005)
        raise TimeoutError(f"{needle!r} not shown within {timeout}s")

    return run_in_netns(netns_fd, watch, timeout + 10)


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def timed(fn: object, repeat: int = 5) -> float:
    samples = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()  # type: ignore[operator]
        samples.append(time.perf_counter() - start)
    return statistics.median(samples)


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--objects", type=int, default=1000)
    parser.add_argument("--daemon-log", type=Path, help="keep the daemon's log in this file")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp, Netns("wdbench") as ns:
        spec = Path(tmp) / "weave.yaml"
        spec.write_text(big_spec(args.objects))
        t0 = time.perf_counter()
        ns.weaved(spec, "apply", timeout=600)
        first_apply = time.perf_counter() - t0

        plan_s = timed(lambda: ns.weaved(spec, "plan", "--detailed-exitcode"))
        # Baseline: just reading the same kernel state with iproute2 and nft, no weaved.
        base_s = timed(
            lambda: (ns.ip("-j", "addr"), ns.ip("-j", "route"), ns.nft("-j", "list", "ruleset"))
        )
        noop = ns.weaved(spec, "apply").stdout.strip()

        # Daemon: a no-op plan it answers, then one service rule edited until the kernel shows
        # it; baseline = the CLI applying the same edit.
        proc = ns.popen_weaved(spec, "daemon", "--resync", "600", log=Path(tmp) / "daemon.log")
        try:
            client = Client(str(Path(tmp) / "weaved.sock"), timeout=120)
            wait_for(lambda: (Path(tmp) / "weaved.sock").exists(), timeout=120)
            wait_for(lambda: client.call("GET", "/status", {})["converges"] > 0, timeout=120)
            daemon_plan_s = timed(lambda: client.call("POST", "/plan", {}), repeat=7)
            latencies = []
            edit_cpu = 0.0
            with opened(f"/run/netns/{ns.name}") as netns_fd:
                for port in (81, 82, 83, 84, 85):  # each new: the wait sees only this edit
                    time.sleep(0.5)  # the daemon idle again
                    cpu_before = cpu_seconds(proc.pid)
                    start = time.perf_counter()
                    spec.write_text(big_spec(args.objects, edited_port=port))
                    shown = shown_at(netns_fd, f"dnat to 10.100.0.9:{port} ")
                    latencies.append(shown - start)
                    edit_cpu += (cpu_seconds(proc.pid) - cpu_before) / 5
        finally:
            stop_process(proc)
            if args.daemon_log:
                args.daemon_log.write_bytes((Path(tmp) / "daemon.log").read_bytes())
        spec.write_text(big_spec(args.objects, edited_port=86))
        cli_s = timed(lambda: ns.weaved(spec, "apply"), repeat=1)
        edit_s = statistics.median(latencies)

    result = {
        "objects": args.objects,
        "first_apply_s": round(first_apply, 3),
        "noop_plan_s": round(plan_s, 3),
        "baseline_read_kernel_state_s": round(base_s, 3),
        "noop_plan_vs_baseline": round(plan_s / base_s, 2),
        "noop_apply_output": noop,
        "daemon_noop_plan_s": round(daemon_plan_s, 3),
        "service_edit_to_converged_s": round(edit_s, 3),
        "service_edit_samples_s": [round(x, 3) for x in latencies],
        "daemon_cpu_until_shown_s": round(edit_cpu, 3),  # per edit, from write to shown
        "baseline_cli_apply_s": round(cli_s, 3),
        "edit_latency_vs_cli_apply": round(edit_s / cli_s, 2),
        "load_average": Path("/proc/loadavg").read_text().split()[:3],
    }
    print(json.dumps(result, indent=2))
    return 0 if "0 kernel writes" in noop else 1


if __name__ == "__main__":
    raise SystemExit(main())
