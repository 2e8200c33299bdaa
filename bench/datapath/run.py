"""bench/datapath: TCP single-stream throughput (iperf3) and ping RTT between two containers on
two hosts, for each data path, next to the underlay measured in the same run.

Run as root: python bench/datapath/run.py [--seconds 5] [--repeat 3] [--only NAME ...]

The testbed (tests.tools.sleeve_testbed): two host namespaces on an underlay bridge
(192.0.2.11, .12), each with a `weave` bridge made by `weaved apply` and one container
namespace (10.40.1.1, 10.40.2.1). Every case starts its data path, is measured, and is
stopped before the next one; all namespaces are deleted at the end.

Cases are pluggable: every `case_*.py` next to this file is loaded and its `CASES` list of
`Case` objects is added (case_sleeve.py: weaved's sleeve plain, encrypted and with
offloads). A case says how to start and stop its data path and between which endpoints to
measure; the underlay case (host to host over the underlay) is built in, and every ratio is
relative to it. Weave Net 2.8.1's own sleeve reached 1.3 % (plain) and 1.1 % (encrypted) of
the underlay, measured once on an earlier machine; the `xWeave` column divides a case's ratio
by those (on another machine, a rough guide only).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import re
import secrets
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from tests.tools.sleeve_testbed import Testbed

WEAVE_RATIO = {"plain": 0.013, "encrypted": 0.011}
IPERF_PORT = 5201


@dataclass
class Endpoints:
    """Where to run the iperf3 server and client (argv prefixes) and the server address."""

    server: list[str]
    client: list[str]
    address: str


@dataclass
class Case:
    name: str
    start: Callable[[Testbed], None]
    stop: Callable[[Testbed], None]
    endpoints: Callable[[Testbed], Endpoints]
    weave_reference: str | None = None  # "plain" / "encrypted": compare with Weave's sleeve
    pids: Callable[[Testbed], list[int]] = field(default=lambda _bed: [])
    description: str = ""


@dataclass
class Result:
    case: Case
    gbits: list[float] = field(default_factory=list)
    rtt_ms: float | None = None
    cpu_us_per_mb: float | None = None
    error: str | None = None
    # The underlay measured just before this case (this machine's load drifts).
    underlay_gbits: float | None = None
    underlay_rtt_ms: float | None = None


def _noop(_bed: Testbed) -> None:
    return None


def underlay_case() -> Case:
    def endpoints(bed: Testbed) -> Endpoints:
        a, b = bed.hosts[0], bed.hosts[1]
        return Endpoints(
            ["ip", "netns", "exec", b.netns], ["ip", "netns", "exec", a.netns], b.address
        )

    return Case("underlay", _noop, _noop, endpoints, description="host to host, no overlay")


def load_cases(directory: Path) -> list[Case]:
    cases = [underlay_case()]
    for path in sorted(directory.glob("case_*.py")):
        spec = importlib.util.spec_from_file_location(f"bench_datapath_{path.stem}", path)
        if spec is None or spec.loader is None:
            continue
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        cases.extend(getattr(module, "CASES", []))
    return cases


def _cpu_seconds(pid: int) -> float:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / 100.0


def _iperf_args(seconds: float) -> list[str]:
    return ["-t", str(seconds), "-J", "--connect-timeout", "3000"]


def iperf(ep: Endpoints, seconds: float) -> float:
    """Gbit/s received in one single-stream TCP run (bounded in time)."""
    server = subprocess.Popen(
        [*ep.server, "iperf3", "-s", "-1", "-p", str(IPERF_PORT)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        time.sleep(0.3)
        proc = subprocess.run(
            [*ep.client, "iperf3", "-c", ep.address, "-p", str(IPERF_PORT), *_iperf_args(seconds)],
            capture_output=True,
            text=True,
            timeout=seconds + 30,
            check=False,
        )
        data = json.loads(proc.stdout or "{}")
        if "error" in data or "end" not in data:
            raise RuntimeError(f"iperf3: {data.get('error', proc.stderr.strip()[-300:])}")
        return float(data["end"]["sum_received"]["bits_per_second"]) / 1e9
    finally:
        try:
            server.wait(5)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()


def ping_rtt(ep: Endpoints, count: int = 20) -> float | None:
    proc = subprocess.run(
        [*ep.client, "ping", "-q", "-c", str(count), "-i", "0.05", "-W", "2", ep.address],
        capture_output=True,
        text=True,
        timeout=count + 20,
        check=False,
    )
    found = re.search(r"= [\d.]+/([\d.]+)/", proc.stdout)
    return float(found.group(1)) if found else None


def measure(
    bed: Testbed, case: Case, seconds: float, repeat: int, underlay: Case | None = None
) -> Result:
    result = Result(case)
    if underlay is not None:
        try:
            ep = underlay.endpoints(bed)
            result.underlay_rtt_ms = ping_rtt(ep)
            result.underlay_gbits = iperf(ep, seconds)
        except Exception as e:
            result.error = f"underlay: {str(e).splitlines()[0][:200]}"
            return result
    try:
        case.start(bed)
        ep = case.endpoints(bed)
        ping_rtt(ep, count=3)  # warm up: ARP, MAC learning
        result.rtt_ms = ping_rtt(ep)
        pids = case.pids(bed)
        cpu0 = sum(_cpu_seconds(p) for p in pids)
        transferred_mb = 0.0
        for _ in range(repeat):
            gbits = iperf(ep, seconds)
            result.gbits.append(gbits)
            transferred_mb += gbits * 1e3 / 8 * seconds
        if pids and transferred_mb:
            cpu = sum(_cpu_seconds(p) for p in pids) - cpu0
            result.cpu_us_per_mb = cpu * 1e6 / transferred_mb
    except Exception as e:
        result.error = str(e).splitlines()[0][:200]
    finally:
        try:
            case.stop(bed)
        except Exception as e:
            result.error = result.error or f"stop: {e}"
    return result


def render(results: Sequence[Result]) -> str:
    base = next((r for r in results if r.case.name == "underlay" and r.gbits), None)
    vxlan = next((r for r in results if r.case.name == "vxlan-baseline" and r.gbits), None)
    vxlan_gbits = statistics.median(vxlan.gbits) if vxlan else None
    lines = [
        f"{'case':<26} {'Gbit/s':>8} {'ratio':>8} {'xVXLAN':>7} {'xWeave':>7} {'RTT ms':>8}"
        f" {'RTTx':>6} {'CPU µs/MB':>10}  runs",
    ]
    for r in results:
        if r.error or not r.gbits:
            lines.append(f"{r.case.name:<26} error: {r.error}")
            continue
        gbits = statistics.median(r.gbits)
        base_gbits = r.underlay_gbits or (statistics.median(base.gbits) if base else None)
        base_rtt = r.underlay_rtt_ms or (base.rtt_ms if base else None)
        ratio = gbits / base_gbits if base_gbits else None
        weave = WEAVE_RATIO.get(r.case.weave_reference or "")
        times_weave = f"{ratio / weave:7.1f}" if ratio is not None and weave else f"{'':>7}"
        rtt = f"{r.rtt_ms:8.3f}" if r.rtt_ms is not None else f"{'-':>8}"
        rtt_x = f"{r.rtt_ms / base_rtt:6.1f}" if r.rtt_ms is not None and base_rtt else f"{'-':>6}"
        cpu = f"{r.cpu_us_per_mb:10.0f}" if r.cpu_us_per_mb is not None else f"{'-':>10}"
        ratio_text = f"{ratio * 100:7.2f}%" if ratio is not None else f"{'-':>8}"
        vs_vxlan = f"{gbits / vxlan_gbits:6.1%}" if vxlan_gbits else f"{'-':>7}"
        runs = " ".join(f"{g:.3f}" for g in r.gbits)
        lines.append(
            f"{r.case.name:<26} {gbits:8.3f} {ratio_text} {vs_vxlan:>7} {times_weave} {rtt} {rtt_x}"
            f" {cpu}  {runs}"
        )
    lines.append(
        "ratio = median Gbit/s / the underlay's, measured just before each case; xVXLAN = median"
        " Gbit/s / the hand-made kernel VXLAN's (target for fastdp: >= 95 %); xWeave ="
        " ratio / Weave 2.8.1 sleeve's ratio, measured once on an earlier machine (1.3 % plain,"
        " 1.1 % encrypted)"
    )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else "")
    parser.add_argument("--seconds", type=float, default=5.0, help="per iperf3 run (default 5)")
    parser.add_argument("--repeat", type=int, default=3, help="iperf3 runs per case (median)")
    parser.add_argument("--only", nargs="*", help="case names (underlay is always measured)")
    parser.add_argument("--list", action="store_true", help="list the cases and exit")
    parser.add_argument(
        "--tag",
        default=f"wdb{secrets.token_hex(2)}",
        help="namespace prefix (at most 8 chars; random by default)",
    )
    args = parser.parse_args(argv)
    cases = load_cases(Path(__file__).resolve().parent)
    if args.list:
        for case in cases:
            print(f"{case.name:<26} {case.description}")
        return 0
    if args.only:
        unknown = set(args.only) - {c.name for c in cases}
        if unknown:
            parser.error(f"unknown case(s): {', '.join(sorted(unknown))}")
        cases = [c for c in cases if c.name == "underlay" or c.name in args.only]
    results: list[Result] = []
    with (
        tempfile.TemporaryDirectory(prefix="wd-bench-datapath-") as tmp,
        Testbed(args.tag, 2, Path(tmp)) as bed,
    ):
        underlay = cases[0]
        for case in cases:
            sys.stderr.write(f"bench: {case.name} ...\n")
            before = None if case is underlay else underlay
            results.append(measure(bed, case, args.seconds, args.repeat, before))
    print(render(results))
    return 1 if any(r.error for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
