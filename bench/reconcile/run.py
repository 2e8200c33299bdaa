"""bench/reconcile: a no-op plan and a no-op apply with 1 000 exposed addresses and 1 000 service
rules, a no-op plan answered by the daemon, and the daemon's edit of one service rule →
converged latency (until the kernel's nftables show it), each next to a baseline from the same run.

Run as root: python bench/reconcile/run.py [--objects 1000]. Everything happens in a private
network namespace that is deleted at the end. The code measured is the one PYTHONPATH names.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from tests.helpers import Netns, stop_process, wait_for
from weaved.control import Client


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
            for port in (81, 82, 83, 84, 85):  # each new: the wait sees only this edit
                spec.write_text(big_spec(args.objects, edited_port=port))
                start = time.perf_counter()
                wait_for(
                    lambda p=port: (
                        f"dnat to 10.100.0.9:{p} "
                        in ns.nft("list", "chain", "ip", "weaved", "output").stdout
                    ),
                    timeout=60,
                    interval=0.02,
                )
                latencies.append(time.perf_counter() - start)
        finally:
            stop_process(proc)
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
        "baseline_cli_apply_s": round(cli_s, 3),
        "edit_latency_vs_cli_apply": round(edit_s / cli_s, 2),
        "load_average": Path("/proc/loadavg").read_text().split()[:3],
    }
    print(json.dumps(result, indent=2))
    return 0 if "0 kernel writes" in noop else 1


if __name__ == "__main__":
    raise SystemExit(main())
