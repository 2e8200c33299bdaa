"""The paths a new user takes first, on stock hosts (issue 11): two lab hosts with
`net.ipv4.ip_forward` = 0, as every new namespace has, each with its own /etc/machine-id (two
machines, not clones), running hand-written specs without peer names; host2's spec has no
`expose`. Checked with real traffic:

- host1 exports a service of a container on host2: reachable from host2 over the underlay and
  at 127.0.0.1 on host1; host1 imports a service of host2's underlay for the containers;
- weaveDNS answers in every attached container: on the host without expose, in another
  subnet, and in a Docker container (host1 runs a private dockerd);
- a Docker container with its Docker interface and ethwe reaches its own weave subnet but no
  other one, not through docker0 either;
- `weaved expose … -h NAME` adds names live, `weaved hide` removes them (issue 11.6).
"""

from __future__ import annotations

import ipaddress
import json
import shutil
import subprocess
import sys
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.docker_image import busybox_available, import_busybox, remove_containers
from tests.e2e.docker_lab import DockerLab, HostNetns, follows_docker
from tests.helpers import Dockerd, stop_process, wait_for
from tests.probes import CONNECT, SERVE
from weaved.errors import ApplyError
from weaved.lab.lab import NETNS_ETC, Lab, host_address
from weaved.lab.netns import exec_argv

pytestmark = [
    pytest.mark.timeout(420),
    pytest.mark.skipif(
        shutil.which("dig") is None or shutil.which("dockerd") is None or not busybox_available(),
        reason="needs dig, dockerd, the docker CLI and /bin/busybox",
    ),
]

LAB = "stkh"  # namespaces wd-stkh-*, containers stkh-*: unique to this test
WEB = "10.32.0.80"  # the exported container's address (host2), port 8000
HOST1 = "10.32.0.1"  # host1's address in the default subnet
OTHER = ipaddress.IPv4Network("10.33.0.0/16")  # another weave subnet; host1 has 10.33.0.1


def specs(docker_sock: Path) -> dict[int, str]:
    """What a user writes for two machines: peers by address, no peer names."""
    ipalloc = "ipalloc: {range: 10.32.0.0/12, default_subnet: 10.32.0.0/16}\n"
    host1 = (
        "version: 1\n"
        f"peers: [{host_address(2)}]\n" + ipalloc + "expose:\n"
        f"  - cidr: {HOST1}/16\n"
        "    dns_name: host1.weave.local\n"
        "  - cidr: 10.33.0.1/16\n"
        "services:\n"
        "  export:\n"
        f"    - {{name: web, port: 8080, to: '{WEB}:8000'}}\n"
        "  import:\n"
        f"    - {{name: outside, address: '{HOST1}:9090', to: '{host_address(2)}:9090'}}\n"
        f"docker: {{socket: 'unix://{docker_sock}', auto_attach: false}}\n"
    )
    host2 = f"version: 1\npeers: [{host_address(1)}]\n" + ipalloc
    return {1: host1, 2: host2}


@dataclass
class Stock:
    lab: Lab
    containers: dict[str, str]  # name → address
    stack: ExitStack

    def serve(self, netns: str, address: str, port: int, text: str) -> None:
        """SERVE in a namespace until the module ends."""
        proc = subprocess.Popen(
            exec_argv(netns, [sys.executable, "-c", SERVE, address, str(port), text]),
            stdout=subprocess.PIPE,
            start_new_session=True,
        )
        self.stack.callback(stop_process, proc)
        assert proc.stdout is not None and proc.stdout.readline().strip() == b"ready"

    def connect(self, netns: str, address: str, port: int) -> str:
        argv = exec_argv(netns, [sys.executable, "-c", CONNECT, address, str(port)])
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=30, check=False)
        return proc.stdout if proc.returncode == 0 else f"failed: {proc.stdout.strip()}"

    def dig(self, container: str, *args: str) -> list[str]:
        """The container's own resolv.conf (weaveDNS), as any program in it would ask."""
        proc = self.lab.in_container(container, ["dig", "+short", "+time=2", "+tries=2", *args])
        return proc.stdout.split()

    def weaved(self, host: str, *args: str) -> subprocess.CompletedProcess[str]:
        proc = self.lab.exec(host, ["weaved", *args], capture=True, timeout=90)
        assert proc.returncode == 0, f"weaved {' '.join(args)}: {proc.stderr}"
        return proc


def peers(lab: Lab, host: str) -> set[str]:
    """The peer names the host's daemon knows (its own included)."""
    proc = lab.exec(host, ["weaved", "report"], capture=True, timeout=20)
    if proc.returncode != 0:
        return set()
    return {p["Name"] for p in json.loads(proc.stdout)["Router"].get("Peers") or []}


def ns(lab: Lab, host: str) -> str:
    return lab.host(host).netns


@pytest.fixture(scope="module")
def stock(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stock]:
    lab = Lab(LAB)
    spec_dir = tmp_path_factory.mktemp("stock-specs")
    dockerd = Dockerd(HostNetns(f"wd-{LAB}-h1"))
    with ExitStack() as stack:
        stack.callback(lab.down)  # removes /etc/netns/wd-stkh-* too
        for index, text in specs(dockerd.sock).items():
            (spec_dir / f"host{index}.yaml").write_text(text)
            # `ip netns exec` mounts /etc/netns/<ns>/* over /etc: each host is its own machine.
            etc = NETNS_ETC / f"wd-{LAB}-h{index}"
            etc.mkdir(parents=True, exist_ok=True)
            (etc / "machine-id").write_text(f"{index:032x}\n")
        lab.up(2, spec_dir=spec_dir, resync=2.0)
        # No nicknames either (both are the machine's hostname): wait for two peers.
        for host in ("host1", "host2"):
            wait_for(lambda h=host: len(peers(lab, h)) == 2, timeout=60, interval=0.5)
        stock = Stock(lab, {}, stack)
        for name, host, address in (
            ("stkh-web", "host2", f"{WEB}/16"),
            ("stkh-c2", "host2", None),  # the host without expose, IPAM's default subnet
            ("stkh-o2", "host2", f"net:{OTHER}"),  # another subnet
            ("stkh-o1", "host1", f"net:{OTHER}"),
        ):
            out = lab.add_container(host, name, [address] if address else None)
            stock.containers[name] = out.split()[0].split("/")[0]
        assert lab.wait_in_sync(), "weaved plan is not empty on every host"
        yield stock


def test_stock_hosts_get_ip_forward_where_needed_and_distinct_addresses(
    stock: Stock,
) -> None:
    lab = stock.lab
    # IPAM gave no container an address host1 exposes (both are inside its range).
    assert not {HOST1, "10.33.0.1"} & set(stock.containers.values()), stock.containers
    with pytest.raises(ApplyError, match=r"10\.33\.0\.1/16 is already owned by weave:expose"):
        lab.add_container("host1", "stkh-dup", ["10.33.0.1/16"])
    names = {
        h: lab.exec(h, ["cat", "/etc/machine-id"], capture=True).stdout for h in ("host1", "host2")
    }
    assert names["host1"] != names["host2"]
    assert peers(lab, "host1") == peers(lab, "host2")  # two names, none written in the specs
    # host1 routes (expose, services): weaved set ip_forward and kept what it was.
    state = lab.host("host1").state_dir
    originals = json.loads((state / "sysctl-originals.json").read_text())
    assert originals.get("net.ipv4.ip_forward") == "0", originals
    forward = ["sysctl", "-n", "net.ipv4.ip_forward"]
    assert lab.exec("host1", forward, capture=True).stdout.strip() == "1"
    # host2 routes nothing (no expose, no services): left as it was.
    assert lab.exec("host2", forward, capture=True).stdout.strip() == "0"


def test_export_reaches_a_container_from_another_host_and_from_127_0_0_1(stock: Stock) -> None:
    lab = stock.lab
    assert stock.containers["stkh-web"] == WEB
    stock.serve("stkh-web", "0.0.0.0", 8000, "web says hi")
    from_host2 = stock.connect(ns(lab, "host2"), host_address(1), 8080)
    assert from_host2 == "web says hi", from_host2
    local = stock.connect(ns(lab, "host1"), "127.0.0.1", 8080)
    assert local == "web says hi", local


def test_import_delivers_an_outside_service_to_containers(stock: Stock) -> None:
    # The service lives on host2's underlay address: outside the overlay.
    stock.serve(ns(stock.lab, "host2"), host_address(2), 9090, "outside says hi")
    for container in ("stkh-c2", "stkh-web"):
        got = stock.connect(container, HOST1, 9090)
        assert got == "outside says hi", (container, got)


def test_dns_answers_in_every_container_also_without_expose_and_in_another_subnet(
    stock: Stock,
) -> None:
    c = stock.containers
    for asker in ("stkh-c2", "stkh-o2", "stkh-o1", "stkh-web"):
        for name in ("stkh-web", "stkh-o1", "stkh-c2"):
            wait_for(
                lambda a=asker, n=name: stock.dig(a, f"{n}.weave.local") == [c[n]],
                timeout=30,
                interval=0.5,
            )
        assert stock.dig(asker, "host1.weave.local") == [HOST1]
        resolv = (NETNS_ETC / asker / "resolv.conf").read_text()
        assert "nameserver 169.254.53.53" in resolv, resolv


@pytest.fixture(scope="module")
def docker(stock: Stock) -> Iterator[DockerLab]:
    """host1's dockerd, started after its weaved daemon (as docker.service after weaved's).
    Docker turns ip_forward on itself, so it comes after the checks of weaved's own."""
    lab = stock.lab
    dockerd = Dockerd(HostNetns(lab.host("host1").netns))
    with ExitStack() as stack:
        stack.enter_context(dockerd)
        stack.callback(remove_containers, dockerd)
        import_busybox(dockerd)
        wait_for(lambda: follows_docker(lab, "host1"), timeout=60, interval=0.5)
        yield DockerLab(lab, {"host1": dockerd})


def test_a_docker_container_with_two_interfaces_has_dns_and_stays_in_its_subnet(
    stock: Stock, docker: DockerLab
) -> None:
    dual = docker.attach("host1", "stkh-dual")  # docker0 (Docker's) and ethwe, 10.32/16
    assert ipaddress.IPv4Address(dual.ip) not in OTHER
    c = stock.containers
    addresses = docker.in_container(dual, "ip", "-4", "-o", "addr").stdout
    assert "eth0" in addresses and "ethwe" in addresses, addresses
    # weaveDNS from the Docker container: its neighbours, across hosts and subnets.
    for name in ("stkh-c2", "stkh-o2"):
        wait_for(
            lambda n=name: docker.lookup(dual, f"{n}.weave.local") == [c[n]],
            timeout=30,
            interval=0.5,
        )
    wait_for(lambda: stock.dig("stkh-c2", "stkh-dual.weave.local") == [dual.ip], timeout=30)

    def ping(*argv: str) -> bool:
        return docker.in_container(dual, "ping", "-c", "2", "-W", "1", *argv).returncode == 0

    # Its own weave subnet across the hosts, and Docker's bridge: yes.
    assert ping(c["stkh-c2"]) and ping(c["stkh-web"])
    assert ping(docker.dockerds["host1"].bip.split("/")[0])
    # The other subnet is there (host1 reaches it, its members reach each other)...
    host1_to_o2 = stock.lab.exec(
        "host1", ["ping", "-c", "1", "-W", "2", c["stkh-o2"]], capture=True
    )
    assert host1_to_o2.returncode == 0
    stock.serve("stkh-o2", "0.0.0.0", 7000, "o2 says hi")
    assert stock.connect("stkh-o1", c["stkh-o2"], 7000) == "o2 says hi"
    # ... but not for the two-interface container, neither via ethwe nor via docker0 → host1
    # → weave (Docker masquerades docker0's traffic, so only the isolation rules stop it).
    for target in (c["stkh-o1"], c["stkh-o2"]):
        route = docker.in_container(dual, "ip", "route", "get", target).stdout
        assert "dev eth0" in route, route  # the way through Docker's bridge and the host
        assert not ping(target), target
    probe = docker.in_container(dual, "nc", "-w", "2", c["stkh-o2"], "7000")
    assert "o2 says hi" not in probe.stdout and probe.returncode != 0, probe


def test_expose_h_adds_names_live_and_hide_removes_them(stock: Stock) -> None:
    """Issue 11.6, end to end on host1: names added to an existing entry keep the old ones,
    answer at once (no restart), and `hide` takes them away."""
    lab = stock.lab
    pid = lab.host("host1").pid
    stock.weaved("host1", "expose", f"{HOST1}/16", "-h", "alias.weave.local")
    spec = lab.host("host1").spec.read_text()
    assert "host1.weave.local" in spec and "alias.weave.local" in spec, spec
    for name in ("host1", "alias"):
        wait_for(
            lambda n=name: stock.dig("stkh-c2", f"{n}.weave.local") == [HOST1],
            timeout=20,
            interval=0.3,
        )

    # An address from IPAM: `expose` waits for it and prints it, as Weave's.
    printed = stock.weaved("host1", "expose", "net:default", "-h", "one.weave.local").stdout
    (address,) = printed.split()
    assert ipaddress.IPv4Address(address) in ipaddress.IPv4Network("10.32.0.0/16")
    stock.weaved("host1", "expose", "net:default", "-h", "two.weave.local")
    for name in ("one", "two"):
        wait_for(
            lambda n=name: stock.dig("stkh-o2", f"{n}.weave.local") == [address],
            timeout=20,
            interval=0.3,
        )
    assert stock.dig("stkh-c2", "-x", address) != []  # reverse lookups too

    hidden = stock.weaved("host1", "hide", "net:default").stdout.split()
    assert hidden == [address]
    for name in ("one", "two"):
        wait_for(
            lambda n=name: stock.dig("stkh-c2", f"{n}.weave.local") == [],
            timeout=20,
            interval=0.3,
        )
    assert "one.weave.local" not in stock.weaved("host2", "status", "dns").stdout
    # The other entry and its names are untouched; the daemon never restarted.
    assert stock.dig("stkh-c2", "alias.weave.local") == [HOST1]
    assert lab.host("host1").pid == pid
