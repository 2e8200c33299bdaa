"""Fast datapath cases for bench/datapath/run.py, between the testbed's two hosts:

* vxlan-baseline — a hand-made kernel VXLAN: in each host a bridge `bvx0` with a VXLAN port
  `vxb0` (VNI 42, UDP 4789, no learning, DF set, MTU 1450), static FDB entries for the
  other host (flooding and its container's MAC) and a container of its own (10.41.0.i, the
  same MTU as the testbed's containers). What fastdp should cost: nothing more.
* fastdp — weaved: on each host a daemon with the fast datapath and sleeve
  (`tests.tools.fastdp_daemon`) converges `vxlan-6784` and its entries from the mesh;
  measured between the testbed's containers once both sides report the path on fastdp.
* fastdp-txoff — the same with TX checksum offload off in the containers, as `weaved attach`
  sets it for sleeve's sake: what that setting costs the fast datapath.

fastdp divided by vxlan-baseline is what the target (at least 95 %) is about.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Sequence

from run import Case, Endpoints  # type: ignore[import-not-found]

from tests.tools import python_env
from tests.tools.sleeve_testbed import Host, Testbed

BASE_MTU = 1450
BASE_VNI = 42
BASE_PORT = 4789
TIMING = {"fast_interval": 0.2, "interval": 1.0, "timeout": 5.0, "recover": 2}


def _run(argv: Sequence[str], check: bool = True) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(list(argv), capture_output=True, text=True, timeout=60, check=False)
    if check and proc.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} → {proc.returncode}: {proc.stderr.strip()}")
    return proc


def _ip(ns: str, *args: str, check: bool = True) -> None:
    _run(["ip", "-n", ns, *args], check=check)


# --- the hand-made VXLAN baseline ----------------------------------------------------------


def _base_ns(bed: Testbed, host: Host) -> str:
    return f"{bed.tag}-v{host.index}"


def _base_mac(host: Host) -> str:
    return f"0e:00:00:00:{host.index:02x}:ff"


def _baseline_start(bed: Testbed) -> None:
    a, b = bed.hosts[0], bed.hosts[1]
    for host, other in ((a, b), (b, a)):
        ns, ctr = host.netns, _base_ns(bed, host)
        mtu = bed.bridge_mtu_of(host)
        _ip(ns, "link", "add", "bvx0", "type", "bridge")
        _ip(ns, "link", "set", "bvx0", "up")
        _ip(
            ns, "link", "add", "vxb0", "type", "vxlan", "id", str(BASE_VNI),
            "dstport", str(BASE_PORT), "nolearning", "df", "set",
        )  # fmt: skip
        _ip(ns, "link", "set", "vxb0", "mtu", str(BASE_MTU), "master", "bvx0", "up")
        _run(["ip", "netns", "exec", ns, "bridge", "fdb", "append", "00:00:00:00:00:00",
              "dev", "vxb0", "dst", other.address])  # fmt: skip
        _run(["ip", "netns", "exec", ns, "bridge", "fdb", "add", _base_mac(other),
              "dev", "vxb0", "dst", other.address, "self"])  # fmt: skip
        _run(["ip", "netns", "add", ctr])
        _ip(ctr, "link", "set", "lo", "up")
        _ip(
            ns, "link", "add", f"vethbv{host.index}", "mtu", str(mtu), "type", "veth",
            "peer", "name", "eth0", "mtu", str(mtu), "netns", ctr,
        )  # fmt: skip
        _ip(ns, "link", "set", f"vethbv{host.index}", "master", "bvx0", "up")
        _ip(ctr, "link", "set", "eth0", "address", _base_mac(host), "up")
        _ip(ctr, "addr", "add", f"10.41.0.{host.index}/24", "dev", "eth0")


def _baseline_stop(bed: Testbed) -> None:
    for host in bed.hosts[:2]:
        _run(["ip", "netns", "delete", _base_ns(bed, host)], check=False)
        _ip(host.netns, "link", "del", "vxb0", check=False)
        _ip(host.netns, "link", "del", "bvx0", check=False)


def _baseline_endpoints(bed: Testbed) -> Endpoints:
    a, b = (_base_ns(bed, h) for h in bed.hosts[:2])
    return Endpoints(["ip", "netns", "exec", b], ["ip", "netns", "exec", a], "10.41.0.2")


# --- weaved fastdp ---------------------------------------------------------------------------

_procs: dict[int, subprocess.Popen[bytes]] = {}


def _spec_path(host: Host) -> str:
    return str(host.dir / "fastdp" / "weave.yaml")


def _fastdp_start(bed: Testbed) -> None:
    a = bed.hosts[0]
    for host in bed.hosts[:2]:
        d = host.dir / "fastdp"
        d.mkdir(parents=True, exist_ok=True)
        targets = [] if host is a else [a.address]
        lines = [
            "version: 1",
            f'peer: {{name: "{host.name}", nickname: host{host.index}}}',
            f"peers: [{', '.join(targets)}]",
            "dns: {enabled: false}",
        ]
        if bed.bridge_mtu is not None:
            lines.append(f"datapath: {{mtu: {bed.bridge_mtu}}}")
        (d / "weave.yaml").write_text("\n".join(lines) + "\n")
        cfg = {"spec": _spec_path(host), "timing": TIMING, "sleeve": True, "resync": 60.0}
        argv = [sys.executable, "-m", "tests.tools.fastdp_daemon", json.dumps(cfg)]
        with open(d / "daemon.log", "ab") as log:
            _procs[host.index] = subprocess.Popen(
                ["ip", "netns", "exec", host.netns, *argv],
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                env=python_env(),
            )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if all(_on_fastdp(host) for host in bed.hosts[:2]):
            time.sleep(0.5)
            return
        time.sleep(0.3)
    raise RuntimeError("the fast datapath did not come up within 60 s")


def _on_fastdp(host: Host) -> bool:
    proc = _procs.get(host.index)
    if proc is not None and proc.poll() is not None:
        log = (host.dir / "fastdp" / "daemon.log").read_text()[-2000:]
        raise RuntimeError(f"host{host.index} daemon exited:\n{log}")
    spec = _spec_path(host)
    out = _run(
        ["ip", "netns", "exec", host.netns, sys.executable, "-m", "weaved", "-f", spec,
         "--socket", spec.replace("weave.yaml", "weaved.sock"), "report"],
        check=False,
    )  # fmt: skip
    if out.returncode != 0:
        return False
    paths = json.loads(out.stdout).get("FastDP", {}).get("Paths", [])
    return bool(paths) and all(p["Using"] == "fastdp" for p in paths)


def _fastdp_stop(bed: Testbed) -> None:
    for index, proc in list(_procs.items()):
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        del _procs[index]
    for host in bed.hosts[:2]:  # nothing of fastdp may carry the cases after this one
        _ip(host.netns, "link", "del", "vxlan-6784", check=False)


def _fastdp_endpoints(bed: Testbed) -> Endpoints:
    a, b = bed.container(1), bed.container(2)
    return Endpoints(b.argv(), a.argv(), b.address)


def _fastdp_pids(_bed: Testbed) -> list[int]:
    return [p.pid for p in _procs.values()]


def _tx(bed: Testbed, on: bool) -> None:
    for host in bed.hosts[:2]:
        for c in host.containers:
            _run(c.argv("ethtool", "-K", "ethwe", "tx", "on" if on else "off"), check=False)


def _txoff_start(bed: Testbed) -> None:
    _tx(bed, False)
    _fastdp_start(bed)


def _txoff_stop(bed: Testbed) -> None:
    _fastdp_stop(bed)
    _tx(bed, True)


CASES = [
    Case(
        "vxlan-baseline",
        _baseline_start,
        _baseline_stop,
        _baseline_endpoints,
        description="hand-made kernel VXLAN between the same two hosts",
    ),
    Case(
        "fastdp",
        _fastdp_start,
        _fastdp_stop,
        _fastdp_endpoints,
        pids=_fastdp_pids,
        description="weaved fast datapath (kernel VXLAN kept by the reconciler)",
    ),
    Case(
        "fastdp-txoff",
        _txoff_start,
        _txoff_stop,
        _fastdp_endpoints,
        pids=_fastdp_pids,
        description="fastdp, containers' TX checksum offload off (as weaved attach)",
    ),
]
