"""bench/reconcile: a no-op plan and a no-op apply with 1 000 exposed addresses and 1 000 service
rules, a no-op plan answered by the daemon, and the daemon's edit of one service rule →
converged latency, each next to a baseline from the same run.

The edit's latency runs from writing the spec file until the kernel's nftables show the edited
rule, as a user would see it; the watcher waits inside the namespace for the ruleset's
generation to change (a netlink request every 5 ms) and lists the chain only then, so it takes
almost no CPU from the daemon it measures. The daemon's CPU-seconds from the write until the
rule shows are printed too.

Each edit's time is also split by phase from the daemon's log: the watch (write → the
daemon's "spec file changed"), the spec's load, and the converge's observe, compile, plan,
execute and verify (medians over the edits). `--profile FILE` samples the daemon with py-spy
during the edits (a flame graph in SVG, or raw collapsed stacks when FILE ends in .txt).

Run as root: python bench/reconcile/run.py [--objects 1000] [--prefix wdbench]. Everything
happens in a private network namespace that is deleted at the end. The code measured is the
one PYTHONPATH names; run from that tree (`python -m weaved` puts the current directory first
on its path).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path
from typing import NamedTuple

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
    return "\n".join(lines + export_rules(count, "10.100.0", edited_port)) + "\n"


def export_rules(count: int, subnet: str, edited_port: int = 80) -> list[str]:
    """The spec's `services:` with `count` export rules to addresses in `subnet` (three octets);
    rule 7's port is `edited_port` (to `<subnet>.9`: what `shown_at` waits for)."""
    lines = ["services:", "  export:"]
    return lines + [
        f'    - {{name: s{i}, port: {10000 + i}, to: "{subnet}.{2 + i % 200}:'
        f'{edited_port if i == 7 else 80}"}}'
        for i in range(count)
    ]


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


class Edit(NamedTuple):
    written: float  # wall clock of the spec's write
    seconds: float  # from the write until the kernel's nftables show the edited rule
    cpu_s: float  # the daemon's CPU-seconds meanwhile


def edits_until_shown(
    netns_fd: int, pid: int, write: Callable[[int], object], subnet: str
) -> Iterator[Edit]:
    """Five edits of `export_rules`' rule 7, each to a new port: `write(port)` writes the spec
    with it; each edit is yielded once the namespace's nftables show it."""
    for port in (81, 82, 83, 84, 85):  # each new: the watch sees only this edit
        time.sleep(0.5)  # the daemon idle again
        cpu_before, written, start = cpu_seconds(pid), time.time(), time.perf_counter()
        write(port)
        shown = shown_at(netns_fd, f"dnat to {subnet}.9:{port} ")
        yield Edit(written, shown - start, cpu_seconds(pid) - cpu_before)


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


_LOG_LINE = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}) \w+ (\S+): (.*)$")


def phases_of(log_text: str, writes: list[float]) -> dict[str, float]:
    """Median seconds per phase of the edits written at `writes` (wall clock), from the
    daemon's log lines."""
    per_phase: dict[str, list[float]] = {}
    lines = []
    for line in log_text.splitlines():
        if m := _LOG_LINE.match(line):
            at = datetime.strptime(m.group(1), "%Y-%m-%d %H:%M:%S,%f").timestamp()
            lines.append((at, m.group(3)))
    for index, written in enumerate(writes):
        until = writes[index + 1] if index + 1 < len(writes) else float("inf")
        window = [(at, text) for at, text in lines if written - 0.01 <= at < until]
        changed = next((at for at, text in window if text.startswith("spec file changed")), None)
        if changed is not None:
            per_phase.setdefault("watch", []).append(max(0.0, changed - written))
        for _at, text in window:
            if text.startswith(("spec loaded ", "converged ")):
                for name, value in re.findall(r"(\w+)=([\d.]+)", text):
                    if name not in ("changes", "writes"):
                        label = f"load_{name}" if text.startswith("spec") else name
                        per_phase.setdefault(label, []).append(float(value))
                if text.startswith("converged "):
                    break
    return {name: round(statistics.median(v), 3) for name, v in per_phase.items()}


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
    parser.add_argument("--prefix", default="wdbench", help="of the private namespace's name")
    parser.add_argument("--profile", type=Path, help="py-spy's samples of the daemon's edits")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp, Netns(args.prefix) as ns:
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
        writes: list[float] = []  # wall clock of each edit's write
        try:
            client = Client(str(Path(tmp) / "weaved.sock"), timeout=120)
            wait_for(lambda: (Path(tmp) / "weaved.sock").exists(), timeout=120)
            wait_for(lambda: client.call("GET", "/status", {})["converges"] > 0, timeout=120)
            daemon_plan_s = timed(lambda: client.call("POST", "/plan", {}), repeat=7)
            latencies = []
            edit_cpu = 0.0
            spy = None
            if args.profile:
                spy = subprocess.Popen(
                    ["py-spy", "record", "-p", str(proc.pid), "-r", "200", "-o", str(args.profile)]
                    + (["--format", "raw"] if args.profile.suffix == ".txt" else []),
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                )
                time.sleep(1)
            with opened(f"/run/netns/{ns.name}") as netns_fd:
                for edit in edits_until_shown(
                    netns_fd,
                    proc.pid,
                    lambda port: spec.write_text(big_spec(args.objects, edited_port=port)),
                    "10.100.0",
                ):
                    writes.append(edit.written)
                    latencies.append(edit.seconds)
                    edit_cpu += edit.cpu_s / 5
            time.sleep(0.5)  # the last converge's log line written
            if spy is not None:
                spy.send_signal(2)  # py-spy writes its output on SIGINT
                spy.wait(30)
        finally:
            stop_process(proc)
            phases = phases_of((Path(tmp) / "daemon.log").read_text(), writes)
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
        "service_edit_phases_s": phases,  # medians; the converge's are inside its "seconds"
        "daemon_cpu_until_shown_s": round(edit_cpu, 3),  # per edit, from write to shown
        "baseline_cli_apply_s": round(cli_s, 3),
        "edit_latency_vs_cli_apply": round(edit_s / cli_s, 2),
        "load_average": Path("/proc/loadavg").read_text().split()[:3],
    }
    print(json.dumps(result, indent=2))
    return 0 if "0 kernel writes" in noop else 1


if __name__ == "__main__":
    raise SystemExit(main())
