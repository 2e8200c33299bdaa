"""Docker's network plugin served by `weaved daemon` (`docker.plugin`), as Weave users run
containers: two lab hosts, each with its own private dockerd; the daemon creates the network
`weave` (driver `weavemesh`, Weave's name) in its dockerd, `docker run --net=weave` gets an
address from weaved's IPAM and an `ethwe` interface on the bridge, containers on two hosts
ping each other by address and by weaveDNS name, and `docker network create -d … --subnet`
with `--ip` gives the address asked for.

dockerd looks for plugins in the global /run/docker/plugins: each host's plugin socket has a
name of this lab's own (so its driver is `wm<lab><n>`), and tests running at the same time do
not meet.
"""

from __future__ import annotations

import ipaddress
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.docker_image import IMAGE, run_container
from tests.e2e.docker_lab import HOSTS, SKIP_WITHOUT_DOCKER, docker_lab, unique
from tests.helpers import Dockerd, wait_for
from weaved.lab.lab import Lab
from weaved.spec.edit import edit_spec

pytestmark = [pytest.mark.timeout(300), pytest.mark.docker, SKIP_WITHOUT_DOCKER]

SUBNET = ipaddress.IPv4Network("10.32.0.0/12")  # examples/lab: ipalloc.range
LAB = unique("dplug")


def driver_of(host: str) -> str:
    return f"wm{LAB}{host[-1]}"


class PluginLab:
    def __init__(self, lab: Lab, dockerds: dict[str, Dockerd]) -> None:
        self.lab = lab
        self.dockerds = dockerds

    def docker(self, host: str, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return self.dockerds[host].docker(*args, check=check, timeout=90)

    def weaved(self, host: str, *args: str) -> str:
        proc = self.lab.exec(host, ["weaved", *args], capture=True, timeout=60)
        assert proc.returncode == 0, proc
        return proc.stdout

    def run(self, host: str, name: str, *args: str) -> str:
        """`docker run -d --name NAME $(weaved dns-args) ARGS… busybox sleep`; its address."""
        dns_args = self.weaved(host, "dns-args").split()
        run_container(self.dockerds[host], name, *dns_args, *args)
        return self.address(host, name)

    def address(self, host: str, name: str) -> str:
        out = self.docker(host, "exec", name, "ip", "-4", "-o", "addr", "show", "ethwe0").stdout
        return out.split("inet ", 1)[1].split()[0]

    def in_container(self, host: str, name: str, *argv: str) -> subprocess.CompletedProcess[str]:
        return self.docker(host, "exec", name, *argv, check=False)


def _weave_network(dockerd: Dockerd) -> bool:
    out = dockerd.docker("network", "ls", "--format", "{{.Name}} {{.Driver}}", check=False)
    return any(line.split()[0] == "weave" for line in out.stdout.splitlines() if line.split())


def _docker_section(host: str, dockerd: Dockerd) -> str:
    return (
        f"docker:\n  socket: unix://{dockerd.sock}\n  plugin:\n    enabled: true\n"
        f"    socket: /run/docker/plugins/{driver_of(host)}.sock\n"
    )


@pytest.fixture(scope="module")
def plab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PluginLab]:
    with docker_lab(LAB, tmp_path_factory, _docker_section) as (lab, dockerds):
        assert lab.wait_mesh(), "the lab hosts did not find each other"
        for dockerd in dockerds.values():
            wait_for(lambda d=dockerd: _weave_network(d), timeout=30, interval=0.5)
        yield PluginLab(lab, dockerds)


def test_network_weave_is_there_with_weaves_driver(plab: PluginLab) -> None:
    for host in HOSTS:
        out = plab.docker(host, "network", "ls", "--format", "{{.Name}} {{.Driver}}").stdout
        assert f"weave {driver_of(host)}" in out.splitlines()
        subnet = plab.docker(
            host, "network", "inspect", "weave", "--format", "{{(index .IPAM.Config 0).Subnet}}"
        ).stdout.strip()
        assert subnet == str(SUBNET)


def test_net_weave_containers_ping_across_hosts_by_address_and_name(plab: PluginLab) -> None:
    a = plab.run("host1", "wpl-a", "--net=weave")
    b = plab.run("host2", "wpl-b", "--net=weave")
    for cidr in (a, b):
        assert ipaddress.IPv4Interface(cidr).network == SUBNET
    assert a != b
    ip_a, ip_b = a.split("/")[0], b.split("/")[0]
    for host, name, dst in (("host1", "wpl-a", ip_b), ("host2", "wpl-b", ip_a)):
        ping = plab.in_container(host, name, "ping", "-c", "2", "-W", "2", dst)
        assert ping.returncode == 0, ping.stdout + ping.stderr
    # `weaved ps` lists them in Weave's layout: short ID, MAC, CIDR.
    for host, name, cidr in (("host1", "wpl-a", a), ("host2", "wpl-b", b)):
        cid = plab.docker(host, "inspect", "-f", "{{.Id}}", name).stdout.strip()
        mac = plab.in_container(host, name, "cat", "/sys/class/net/ethwe0/address").stdout.strip()
        line = f"{cid[:12]} {mac} {cidr}"
        wait_for(lambda h=host, ln=line: ln in plab.weaved(h, "ps").splitlines(), timeout=15)
    # The host side is a port of weaved's bridge; the plan stays empty with it there.
    assert plab.lab.wait_in_sync(), "weaved plan is not empty with a plugin endpoint"

    def by_name(host: str, name: str, other: str, ip: str) -> bool:
        out = plab.in_container(host, name, "ping", "-c", "1", "-W", "2", f"{other}.weave.local")
        return out.returncode == 0 and f"({ip})" in out.stdout

    wait_for(lambda: by_name("host1", "wpl-a", "wpl-b", ip_b), timeout=30, interval=0.5)
    wait_for(lambda: by_name("host2", "wpl-b", "wpl-a", ip_a), timeout=30, interval=0.5)
    # The containers ask Docker's embedded DNS, which forwards the names Docker does not know
    # (the other host's containers) to weaveDNS, given by `weaved dns-args`; the short name
    # works through the search domain, both ways.
    for host, name in (("host1", "wpl-a"), ("host2", "wpl-b")):
        resolv = plab.in_container(host, name, "cat", "/etc/resolv.conf").stdout
        assert "nameserver 127.0.0.11" in resolv and "search weave.local" in resolv, resolv
    for host, name, other, ip in (
        ("host1", "wpl-a", "wpl-b", ip_b),
        ("host2", "wpl-b", "wpl-a", ip_a),
    ):
        short = plab.in_container(host, name, "ping", "-c", "1", "-W", "2", other)
        assert short.returncode == 0 and f"({ip})" in short.stdout, short.stdout + short.stderr

    # 2 MB over TCP (busybox itself), compared by checksum.
    want = plab.in_container("host1", "wpl-a", "busybox", "md5sum", "/bin/busybox").stdout.split()
    plab.docker("host2", "exec", "-d", "wpl-b", "sh", "-c", "sleep 30 | nc -l -p 7000 > /tmp/got")

    def sent() -> bool:
        cmd = f"nc {ip_b} 7000 < /bin/busybox"
        return plab.in_container("host1", "wpl-a", "sh", "-c", cmd).returncode == 0

    wait_for(sent, timeout=15, interval=0.3)

    def received() -> bool:
        got = plab.in_container("host2", "wpl-b", "busybox", "md5sum", "/tmp/got").stdout.split()
        return got[:1] == want[:1]

    wait_for(received, timeout=15, interval=0.3)


def test_own_network_with_subnet_and_ip_and_release_on_rm(plab: PluginLab) -> None:
    d = driver_of("host1")
    plab.docker(
        "host1", "network", "create", "-d", d, "--ipam-driver", d,
        "--subnet", "10.32.5.0/24", "wplnet",
    )  # fmt: skip
    try:
        got = plab.run("host1", "wpl-ip", "--net=wplnet", "--ip", "10.32.5.7")
        assert got == "10.32.5.7/24"
        other = plab.run("host1", "wpl-other", "--net=wplnet")
        assert ipaddress.IPv4Interface(other).network == ipaddress.IPv4Network("10.32.5.0/24")
        assert other != got
        # `docker rm -f` gives the address back: asking for it again works.
        plab.docker("host1", "rm", "-f", "wpl-ip")
        again = plab.run("host1", "wpl-ip2", "--net=wplnet", "--ip", "10.32.5.7")
        assert again == "10.32.5.7/24"
    finally:
        plab.docker("host1", "rm", "-f", "wpl-ip", "wpl-ip2", "wpl-other", check=False)
        plab.docker("host1", "network", "rm", "wplnet", check=False)


def test_deleted_weave_network_comes_back(plab: PluginLab) -> None:
    plab.docker("host2", "rm", "-f", "wpl-b", check=False)
    plab.docker("host2", "network", "rm", "weave")
    wait_for(lambda: _weave_network(plab.dockerds["host2"]), timeout=20, interval=0.5)


def test_restart_always_container_keeps_its_address_across_a_dockerd_restart(
    plab: PluginLab,
) -> None:
    """dockerd gives its endpoints' addresses back when it stops and asks again when it
    starts the container anew: the --restart=always container is back on `ethwe0` with the
    address it had; the address of a container that stayed stopped was given back (not
    leaked), and nobody took the kept one meanwhile."""
    gone = plab.run("host1", "wpl-gone", "--net=weave")  # no restart policy: stays stopped
    before = plab.run("host1", "wpl-keep", "--net=weave", "--restart=always")
    # Once weaved has looked at it (its `weaved ps` line): it knows its restart policy.
    cid = plab.docker("host1", "inspect", "-f", "{{.Id}}", "wpl-keep").stdout.strip()
    wait_for(lambda: cid[:12] in plab.weaved("host1", "ps"), timeout=15)
    plab.dockerds["host1"].restart()

    def back() -> bool:
        out = plab.docker("host1", "inspect", "-f", "{{.State.Running}}", "wpl-keep", check=False)
        return out.stdout.strip() == "true"

    wait_for(back, timeout=60, interval=0.5)
    wait_for(lambda: "ethwe0" in plab.in_container("host1", "wpl-keep", "ip", "link").stdout)
    assert plab.address("host1", "wpl-keep") == before
    # The stopped container's address is free again: `--ip` may ask for it.
    assert plab.run("host1", "wpl-reuse", "--net=weave", "--ip", gone.split("/")[0]) == gone
    # And a fresh container does not get the kept one.
    assert plab.run("host1", "wpl-new", "--net=weave") not in (before, gone)


def test_daemon_restart_keeps_plugin_endpoints(plab: PluginLab) -> None:
    before = plab.run("host1", "wpl-dr", "--net=weave")
    cid = plab.docker("host1", "inspect", "-f", "{{.Id}}", "wpl-dr").stdout.strip()
    wait_for(lambda: cid[:12] in plab.weaved("host1", "ps"), timeout=15)
    (ps_before,) = [ln for ln in plab.weaved("host1", "ps").splitlines() if cid[:12] in ln]
    plab.lab.stop_host("host1")
    plab.lab.start_host("host1", resync=2.0)
    assert plab.lab.wait_mesh(), "host1 did not rejoin"
    assert plab.lab.wait_in_sync(), "the plugin's bridge port was not re-observed"
    # Still attached (Weave's test 810), known to weaveDNS again, and not handed to another.
    assert plab.address("host1", "wpl-dr") == before
    wait_for(lambda: ps_before in plab.weaved("host1", "ps").splitlines(), timeout=15)
    assert plab.run("host1", "wpl-fresh", "--net=weave") != before
    status = lambda: plab.weaved("host1", "status", "dns")  # noqa: E731
    wait_for(lambda: f"wpl-dr {before.split('/')[0]} " in " ".join(status().split()) + " ", 30)
    plab.docker("host1", "rm", "-f", "wpl-dr")
    # Its name goes with it (the daemon sees the endpoint gone).
    wait_for(lambda: "wpl-dr " not in " ".join(status().split()) + " ", 30)
    again = plab.run("host1", "wpl-dr2", "--net=weave", "--ip", before.split("/")[0])
    assert again == before


def test_weaved_run_starts_attaches_and_prints_the_id(plab: PluginLab) -> None:
    """Weave's `weave run`: docker run -d with weaveDNS's flags, attach, the container ID."""
    out = plab.weaved(
        "host2", "run", "10.32.9.9/12", "--name", "wpl-run", IMAGE, "/bin/sleep", "600"
    ).split()
    assert len(out) == 1 and len(out[0]) == 64, out
    ethwe = plab.in_container("host2", "wpl-run", "ip", "-4", "-o", "addr", "show", "ethwe")
    assert "inet 10.32.9.9/12 " in ethwe.stdout, ethwe
    resolv = plab.in_container("host2", "wpl-run", "cat", "/etc/resolv.conf").stdout
    assert "nameserver 169.254.53.53" in resolv
    for usage in (["run"], ["run", "10.32.9.10/12"]):
        bad = plab.lab.exec("host2", ["weaved", *usage], capture=True, timeout=30)
        assert bad.returncode == 64 and "docker run arguments missing" in bad.stderr, bad


def test_auto_attach_honours_weave_cidr_and_none(plab: PluginLab) -> None:
    spec = Path(plab.lab.host("host2").spec)
    edit_spec(spec, lambda doc: doc["docker"].__setitem__("auto_attach", True))
    plab.weaved("host2", "apply")
    try:
        run_container(plab.dockerds["host2"], "wpl-cidr", "-e", "WEAVE_CIDR=10.32.8.8/12")
        run_container(plab.dockerds["host2"], "wpl-none", "-e", "WEAVE_CIDR=none")

        def ethwe(name: str) -> str:
            cmd = ("ip", "-4", "-o", "addr", "show", "ethwe")
            return plab.in_container("host2", name, *cmd).stdout

        wait_for(lambda: "inet 10.32.8.8/12 " in ethwe("wpl-cidr"), timeout=20, interval=0.5)
        # On --net=weave the plugin did it: auto_attach adds no second interface.
        plab.run("host2", "wpl-plug", "--net=weave")
        time.sleep(2)  # what would have attached wpl-none and wpl-plug has had its chance
        assert "ethwe" not in plab.in_container("host2", "wpl-none", "ip", "link").stdout
        links = plab.in_container("host2", "wpl-plug", "ip", "-o", "link").stdout
        assert "ethwe0" in links and " ethwe@" not in links and " ethwe:" not in links
    finally:
        edit_spec(spec, lambda doc: doc["docker"].__setitem__("auto_attach", False))
        plab.weaved("host2", "apply")


def test_with_the_daemon_down_docker_run_fails_clearly(plab: PluginLab) -> None:
    plab.lab.stop_host("host2")
    try:
        start = time.monotonic()
        out = plab.dockerds["host2"].docker(
            "run", "-d", "--name", "wpl-down", "--net=weave", IMAGE, "/bin/sleep", "1",
            check=False, timeout=120,
        )  # fmt: skip
        took = time.monotonic() - start
        assert out.returncode != 0
        assert driver_of("host2") in out.stderr or "plugin" in out.stderr.lower(), out.stderr
        assert took < 90, took
    finally:
        plab.docker("host2", "rm", "-f", "wpl-down", check=False)
        plab.lab.start_host("host2", resync=2.0)
