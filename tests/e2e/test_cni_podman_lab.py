"""A real CNI runtime: podman 4.3 (Debian 12) with its CNI backend runs containers on the weave
network of two lab hosts through `weave-net` (weaved-cni) and the standard portmap plugin.

Podman runs in the host's network namespace but the machine's mount namespace (`nsenter
--net`), as on a real host: the namespaces it makes under /run/netns must be visible to the
daemon. The image is the offline busybox root filesystem (no registry is reachable)."""

from __future__ import annotations

import ipaddress
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.docker_image import BUSYBOX, write_rootfs
from tests.helpers import saved_records, wait_for
from weaved.cni.setup import CONFLIST
from weaved.lab.lab import Lab

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.timeout(300),
    pytest.mark.skipif(
        not (shutil.which("podman") and shutil.which("runc") and BUSYBOX.is_file()),
        reason="needs podman, runc and busybox (apt-get install podman runc busybox-static)",
    ),
    pytest.mark.skipif(
        not Path("/usr/lib/cni/portmap").exists(),
        reason="needs containernetworking-plugins",
    ),
]

IMAGE = "localhost/weaved-cni-bb:1"
# crun refuses this machine's hybrid cgroups and the default rlimits exceed ours.
RUN = ["run", "-d", "--ulimit", "nofile=1024:1024", "--ulimit", "nproc=1024:1024"]


class Podman:
    def __init__(self, lab: Lab, tmp: Path) -> None:
        self.lab, self.tmp = lab, tmp
        (tmp / "bin").mkdir()
        (tmp / "net.d").mkdir()
        plugin = tmp / "bin" / "weave-net"
        plugin.write_text(f"#!{sys.executable}\nfrom weaved.cni.plugin import main\nmain()\n")
        plugin.chmod(0o755)
        (tmp / "net.d" / "10-weave.conflist").write_text(json.dumps(CONFLIST))
        (tmp / "containers.conf").write_text(
            "[network]\n"
            'network_backend = "cni"\n'
            f'cni_plugin_dirs = ["{tmp}/bin", "/usr/lib/cni"]\n'
            f'network_config_dir = "{tmp}/net.d"\n'
            "[engine]\n"
            'cgroup_manager = "cgroupfs"\n'
            'events_logger = "file"\n'
            'runtime = "runc"\n'
        )
        self.base = [
            "podman",
            "--root",
            str(tmp / "storage"),
            "--runroot",
            str(tmp / "run"),
            "--storage-driver",
            "vfs",
            "--tmpdir",
            str(tmp / "tmp"),
        ]

    def __call__(
        self, host: str | None, *args: str, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        env = {**os.environ, "CONTAINERS_CONF": str(self.tmp / "containers.conf")}
        argv = [*self.base, *args]
        if host is not None:
            h = self.lab.host(host)
            env["WEAVED_SOCKET"] = str(h.socket)  # the plugin asks this host's daemon
            argv = ["nsenter", f"--net=/run/netns/{h.netns}", *argv]
        proc = subprocess.run(
            argv, env=env, capture_output=True, text=True, timeout=120, check=False
        )
        if check and proc.returncode != 0:
            raise AssertionError(f"podman {' '.join(args)}: {proc.stderr}")
        return proc

    def address(self, name: str) -> str:
        out = self(None, "exec", name, "ip", "-4", "-o", "addr", "show", "eth0").stdout
        return out.split("inet ")[1].split("/")[0]


@pytest.fixture(scope="module")
def podman(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Podman]:
    lab = Lab("cnipod")
    lab.up(2, resync=2.0)
    tmp = tmp_path_factory.mktemp("podman")
    p = Podman(lab, tmp)
    try:
        lab.wait_mesh()
        p(None, "import", str(write_rootfs(tmp / "rootfs.tar")), IMAGE)
        yield p
    finally:
        names = p(None, "ps", "-aq", check=False).stdout.split()
        if names:
            p(None, "rm", "-f", "-t", "0", *names, check=False)
        lab.down()
        shutil.rmtree(tmp / "storage", ignore_errors=True)


def cni_records(p: Podman, host: str) -> list[dict[str, object]]:
    path = p.lab.host(host).state_dir / "cni.json"
    return saved_records(path)


def test_podman_containers_across_two_hosts(podman: Podman) -> None:
    p = podman
    dns = ["--dns", "169.254.53.53", "--network", "weave"]
    p("host1", *RUN, *dns, "--name", "pa", IMAGE, "sleep", "300")
    p(
        "host2",
        *RUN,
        *dns,
        "--name",
        "pb",
        "-p",
        "18081:7000",
        IMAGE,
        "sh",
        "-c",
        "while true; do echo served-by-pb | nc -l -p 7000; done",
    )
    a, b = p.address("pa"), p.address("pb")
    weave = ipaddress.IPv4Network("10.32.0.0/12")
    assert a != b and ipaddress.IPv4Address(a) in weave and ipaddress.IPv4Address(b) in weave
    # Across hosts by address and by name (K8S_POD_NAME podman passes → weaveDNS).
    p(None, "exec", "pa", "ping", "-c", "2", "-W", "3", b)
    wait_for(
        lambda: (
            p(
                None, "exec", "pa", "ping", "-c", "1", "-W", "2", "pb.weave.local", check=False
            ).returncode
            == 0
        ),
        timeout=20,
    )
    got = p(None, "exec", "pa", "nc", b, "7000").stdout
    assert got.strip() == "served-by-pb"
    # portmap, chained after weave-net in the conflist: host2's own address reaches pb.
    host2 = p.lab.host("host2")
    curl = ["curl", "-s", "--max-time", "5", f"telnet://{host2.address}:18081"]
    got = p.lab.exec("host2", curl, capture=True).stdout
    assert got.strip() == "served-by-pb"
    assert [r["dns_name"] for r in cni_records(p, "host2")] == ["pb"]
    # Containers removed → attachments gone, addresses released (given out again).
    p("host1", "rm", "-f", "-t", "0", "pa")  # DEL goes to the container's host's daemon
    p("host2", "rm", "-f", "-t", "0", "pb")
    # Released by the DEL, or (when conmon's `podman container cleanup` ran it first, without
    # this test's WEAVED_SOCKET) by the daemon noticing the namespace went.
    wait_for(lambda: cni_records(p, "host1") == [] and cni_records(p, "host2") == [], timeout=15)
    p("host1", *RUN, *dns, "--name", "pc", IMAGE, "sleep", "300")
    assert p.address("pc") == a
    p("host1", "rm", "-f", "-t", "0", "pc")


def test_bandwidth_and_firewall_chain_after_weave(podman: Podman) -> None:
    """Debian's bandwidth and firewall plugins after weave-net: bandwidth finds weaved's host
    veth in the result (its tbf shapes what enters the container), firewall admits the
    container's address in CNI-FORWARD; removing the container takes both away again."""
    p = podman
    shaped = {
        "cniVersion": "1.0.0",
        "name": "weave-shaped",
        "plugins": [
            {"name": "weave", "type": "weave-net", "hairpinMode": True},
            {"type": "bandwidth", "ingressRate": 2_000_000, "ingressBurst": 400_000},
            {"type": "firewall", "backend": "iptables"},
        ],
    }
    (p.tmp / "net.d" / "20-weave-shaped.conflist").write_text(json.dumps(shaped))
    p("host1", *RUN, "--network", "weave-shaped", "--name", "shaped", IMAGE, "sleep", "300")
    p("host2", *RUN, "--network", "weave", "--name", "peer", IMAGE, "sleep", "300")
    addr, peer = p.address("shaped"), p.address("peer")
    (record,) = [r for r in cni_records(p, "host1") if f"{addr}/" in str(r["addresses"])]
    veth = str(record["veth"])
    qdisc = p.lab.exec("host1", ["tc", "qdisc", "show", "dev", veth], capture=True).stdout
    assert "qdisc tbf" in qdisc and "rate 2Mbit" in qdisc, qdisc
    rules = p.lab.exec("host1", ["iptables", "-S", "CNI-FORWARD"], capture=True).stdout
    assert f"{addr}/32" in rules, rules
    p(None, "exec", "shaped", "ping", "-c", "2", "-W", "3", peer)  # still on the network
    listed = p.lab.exec("host1", ["weaved", "ps"], capture=True).stdout
    assert f" {addr}/" in listed, listed  # `weaved ps` lists CNI containers
    p("host1", "rm", "-f", "-t", "0", "shaped")
    p("host2", "rm", "-f", "-t", "0", "peer")
    wait_for(lambda: cni_records(p, "host1") == [] and cni_records(p, "host2") == [], timeout=15)
    rules = p.lab.exec("host1", ["iptables", "-S", "CNI-FORWARD"], capture=True).stdout
    assert addr not in rules, rules
    assert veth not in p.lab.exec("host1", ["ip", "link"], capture=True).stdout


def test_relaunch_with_empty_state_reclaims_podman_containers(podman: Podman) -> None:
    """Weave's relaunch reclaim under a real runtime: host1's daemon comes back with its state
    directory gone (cni.json, IPAM's ring); the running container keeps its address (claimed
    again from its veth's record, the ring's other copy on host2 agreeing), the next one gets
    another, and both reach each other and host2."""
    p = podman
    p("host1", *RUN, "--network", "weave", "--name", "kept", IMAGE, "sleep", "300")
    p("host2", *RUN, "--network", "weave", "--name", "far", IMAGE, "sleep", "300")
    kept, far = p.address("kept"), p.address("far")
    host1 = p.lab.host("host1")
    p.lab.stop_host("host1")
    shutil.rmtree(host1.state_dir)
    p.lab.start_host("host1", resync=2.0)
    p.lab.wait_mesh()
    listed = p.lab.exec("host1", ["weaved", "ps"], capture=True).stdout
    assert f" {kept}/" in listed, listed
    p("host1", *RUN, "--network", "weave", "--name", "next", IMAGE, "sleep", "300")
    nxt = p.address("next")
    assert nxt != kept
    p(None, "exec", "next", "ping", "-c", "2", "-W", "3", kept)
    p(None, "exec", "kept", "ping", "-c", "2", "-W", "3", far)
    for name, host in (("kept", "host1"), ("next", "host1"), ("far", "host2")):
        p(host, "rm", "-f", "-t", "0", name)
    wait_for(lambda: cni_records(p, "host1") == [] and cni_records(p, "host2") == [], timeout=15)
