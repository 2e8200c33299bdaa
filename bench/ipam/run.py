"""bench/ipam: the first IP allocation in a fresh 3-peer consensus mesh, and 50 containers
attached at once on 3 hosts, each next to a baseline from the same run.

- first allocation: a lab of 3 hosts (Weave's `--ipalloc-init consensus=3`) is started and
  host1 is asked for an address right away; printed: seconds from the moment every host
  knows the other two (the third peer connected) until the address came back (0 when it came
  first: a quorum of 2 is enough), and from the daemons' start and readiness.
- burst: 50 namespaces attached at once (17/17/16 over the hosts, 10 requests in flight per
  host) with IPAM addresses; baseline: the same with fixed addresses (no IPAM in the way),
  run first and detached again before the IPAM burst, so both start with the same number of
  attachments (an attach costs more with more already attached). Printed per burst: until
  all are addressed, and the p50 and max of one attach.

Also printed: the bench's wall time and the load average at its start and end (others share
the machine: compare runs made in the same minutes).

Run as root: python bench/ipam/run.py [--containers 50]. The lab (namespaces `wd-<lab>-*`)
is torn down at the end.
"""

from __future__ import annotations

import argparse
import json
import secrets
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from weaved.control import Client
from weaved.lab import netns
from weaved.lab.lab import Lab, host_address, peer_name

SPEC = """\
version: 1
peer: {{name: "{name}", nickname: host{index}}}
peers: [{peers}]
ipalloc:
  range: 10.32.0.0/12
  init: {{mode: consensus, peer_count: 3}}
"""


def _load_average() -> list[float]:
    return [float(x) for x in Path("/proc/loadavg").read_text().split()[:3]]


def specs(directory: Path) -> Path:
    for index in (1, 2, 3):
        peers = ", ".join(host_address(i) for i in (1, 2, 3) if i < index)
        text = SPEC.format(name=peer_name(index), index=index, peers=peers)
        (directory / f"host{index}.yaml").write_text(text)
    return directory


def attach(client: Client, ns: str, addresses: list[str]) -> str:
    body = {"target": f"netns:{ns}", "addresses": addresses, "request_id": secrets.token_hex(4)}
    text: str = client.call("POST", "/attach", body, timeout=120)["text"]
    return text


def detach(client: Client, ns: str, addresses: list[str]) -> None:
    client.call("POST", "/detach", {"target": f"netns:{ns}", "addresses": addresses}, timeout=120)


Job = tuple[Client, str, list[str]]


def burst(
    lab: Lab, clients: list[Client], tag: str, count: int, fixed: bool
) -> tuple[dict[str, float], list[Job]]:
    """Seconds until all `count` are addressed, p50 and max of one attach; and the jobs."""
    names = [f"wd-{lab.name}-{tag}{i}" for i in range(count)]
    for name in names:
        netns.add_netns(name)
    jobs = [
        (clients[i % len(clients)], name, [f"10.2.{i // 250}.{i % 250 + 1}/16"] if fixed else [])
        for i, name in enumerate(names)
    ]

    def timed(job: Job) -> tuple[str, float]:
        begin = time.perf_counter()
        answer = attach(*job)
        return answer, time.perf_counter() - begin

    start = time.perf_counter()
    with ThreadPoolExecutor(10 * len(clients)) as pool:
        answers = list(pool.map(timed, jobs))
    took = time.perf_counter() - start
    assert all(text for text, _ in answers), "an attach printed no address"
    each = sorted(seconds for _, seconds in answers)
    figures = {"all": took, "p50": each[len(each) // 2], "max": each[-1]}
    return {k: round(v, 3) for k, v in figures.items()}, jobs


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--containers", type=int, default=50)
    args = parser.parse_args()
    lab = Lab(f"hsipam{secrets.token_hex(2)}")
    result: dict[str, Any] = {}
    began, load_start = time.perf_counter(), _load_average()
    with tempfile.TemporaryDirectory() as tmp:
        try:
            started = time.perf_counter()
            state = lab.up(3, spec_dir=specs(Path(tmp)), wait=60)
            ready = time.perf_counter()  # every daemon answers on its socket
            clients = [Client(str(h.socket), timeout=120) for h in state.hosts]
            netns.add_netns(f"wd-{lab.name}-first")
            first: dict[str, float] = {}

            def first_address() -> None:
                attach(clients[0], f"wd-{lab.name}-first", [])
                first["at"] = time.perf_counter()

            asker = threading.Thread(target=first_address)
            asker.start()
            if not lab.wait_mesh(60):
                raise SystemExit("the 3 hosts did not connect within 60 s")
            meshed = time.perf_counter()
            asker.join(120)
            result["first_allocation_after_third_peer_s"] = round(max(0.0, first["at"] - meshed), 3)
            result["first_allocation_after_daemons_started_s"] = round(first["at"] - started, 3)
            result["first_allocation_after_daemons_ready_s"] = round(first["at"] - ready, 3)
            result["mesh_complete_after_daemons_started_s"] = round(meshed - started, 3)
            fixed, jobs = burst(lab, clients, "f", args.containers, fixed=True)
            with ThreadPoolExecutor(10 * len(clients)) as pool:
                list(pool.map(lambda job: detach(*job), jobs))
            ipam, _ = burst(lab, clients, "i", args.containers, fixed=False)
            result.update(
                {
                    "burst_containers": args.containers,
                    "burst_all_addressed_s": ipam["all"],
                    "burst_attach_p50_s": ipam["p50"],
                    "burst_attach_max_s": ipam["max"],
                    "baseline_burst_fixed_addresses_s": fixed["all"],
                    "baseline_attach_p50_s": fixed["p50"],
                    "baseline_attach_max_s": fixed["max"],
                    "burst_vs_baseline": round(ipam["all"] / fixed["all"], 2),
                }
            )
        finally:
            lab.down()
    result["bench_wall_s"] = round(time.perf_counter() - began, 1)
    result["load_average_start_end"] = [load_start, _load_average()]
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
