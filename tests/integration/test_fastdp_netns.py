"""The fast datapath between real hosts: network namespaces on an underlay bridge
(192.0.2.0/24), each running a daemon (mesh + fastdp + sleeve data path) in its own process,
with a container namespace plugged into its `weave` bridge (10.40.0.0/24).

Covered: every pair on fastdp (ping, full-size DF ping, iperf3, a 10 KB DF transfer, traffic
counted on the VXLAN device), the objects visible in `weaved plan` and put back after drift;
UDP 6784 dropped by nftables in the underlay between two hosts → that pair falls back to
sleeve with the reason in `status connections` (the others stay on fastdp), traffic keeps
flowing, and comes back to fastdp when the rule goes; a too-small underlay MTU; encryption.
Everything is created per test and removed by name (namespaces) and PID (processes).
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import os
import secrets
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from pyroute2 import NetNS

from tests.helpers import REPO, Netns, stop_process, wait_for
from weaved.datapath.fastdp.fdb import Device
from weaved.datapath.fastdp.netlink import FastdpKernel

pytestmark = pytest.mark.timeout(240)

TIMING = {"fast_interval": 0.2, "interval": 0.5, "timeout": 3.0, "recover": 2}
CONTAINER_MTU = 1450  # the derived fastdp MTU: 1500 - 50


def sleeve_datapath_available() -> bool:
    try:
        import weaved.datapath.sleeve.part  # noqa: F401
    except ImportError:
        return False
    return True


@dataclass
class Host:
    index: int
    ns: Netns
    container: Netns
    spec: Path
    proc: subprocess.Popen[bytes] | None = None

    @property
    def address(self) -> str:
        return f"192.0.2.{10 + self.index}"

    @property
    def overlay_ip(self) -> str:
        return f"10.40.0.{self.index}"

    @property
    def nick(self) -> str:
        return f"host{self.index}"

    @property
    def log_path(self) -> Path:
        return self.spec.parent.parent / f"{self.nick}-daemon.log"  # not where the spec is watched

    def log(self) -> str:
        return self.log_path.read_text()[-6000:] if self.log_path.exists() else ""

    def report(self) -> dict[str, Any]:
        proc = self.ns.weaved(self.spec, "report", check=False, timeout=20)
        if proc.returncode != 0:
            return {}
        data: dict[str, Any] = json.loads(proc.stdout)
        return data

    def connections(self) -> dict[str, str]:
        """peer nickname → the `status connections` line."""
        proc = self.ns.weaved(self.spec, "status", "connections", check=False, timeout=20)
        out = {}
        for line in proc.stdout.splitlines():
            if "(" in line and "established" in line:
                nick = line.split("(")[1].split(")")[0]
                out[nick] = line
        return out

    def using(self) -> dict[str, str]:
        """peer nickname → the overlay carrying its traffic (fastdp, sleeve)."""
        out = {}
        for nick, line in self.connections().items():
            words = line.split()[3:]
            if words and words[0] in ("encrypted", "unencrypted"):
                words = words[1:]
            out[nick] = words[0] if words else ""
        return out

    def kernel(self) -> FastdpKernel:
        return FastdpKernel(ipr=NetNS(self.ns.name))

    def fdb_keys(self) -> set[str]:
        kernel = self.kernel()
        try:
            rows = kernel.device_rows(Device())
        finally:
            kernel.close()
        out = set()
        for r in rows:
            if r.master and r.state == "static":
                out.add(f"bridge {r.mac}")
            elif not r.master and r.dst:
                out.add(f"vxlan {r.mac} {r.dst}")
        return out

    def vxlan_packets(self) -> int:
        stats = json.loads(self.ns.ip("-s", "-j", "link", "show", "vxlan-6784").stdout)[0]
        return int(stats["stats64"]["rx"]["packets"]) + int(stats["stats64"]["tx"]["packets"])

    def container_mac(self) -> str:
        info = json.loads(self.container.ip("-j", "link", "show", "eth0").stdout)[0]
        return str(info["address"])


def spec_text(
    index: int,
    targets: list[str],
    password: Path | None,
    discovery: bool = True,
    trusted: bool = False,
) -> str:
    lines = [
        "version: 1",
        f'peer: {{name: "02:00:00:00:0a:0{index}", nickname: host{index}}}',
        f"peers: [{', '.join(targets)}]",
        f"expose: [{{cidr: 10.40.0.{100 + index}/24}}]",
        "dns: {enabled: false}",
        f"discovery: {'true' if discovery else 'false'}",
    ]
    if password is not None:
        lines.append(f"password_file: {password}")
    if trusted:
        lines.append("trusted_subnets: [192.0.2.0/24]")
    return "\n".join(lines) + "\n"


class Lab:
    def __init__(
        self,
        tmp: Path,
        count: int,
        password: Path | None,
        sleeve: bool,
        *,
        line: bool = False,
        trusted: bool = False,
    ) -> None:
        """`line`: host i dials host i-1 only and discovery is off (relayed paths);
        `trusted`: every host trusts the underlay (unencrypted data plane with a password)."""
        self.tmp = tmp
        self.count = count
        self.password = password
        self.sleeve = sleeve
        self.line = line
        self.trusted = trusted
        self.tag = secrets.token_hex(2)
        self.underlay = Netns(f"wfdu{self.tag}")
        self.hosts: list[Host] = []
        self._stack = contextlib.ExitStack()

    def __enter__(self) -> Lab:
        try:
            self._build()
        except BaseException:
            self.__exit__()
            raise
        return self

    def _build(self) -> None:
        stack = self._stack
        u = stack.enter_context(self.underlay)
        u.ip("link", "add", "br0", "type", "bridge")
        u.ip("link", "set", "br0", "up")
        for i in range(1, self.count + 1):
            ns = stack.enter_context(Netns(f"wfdh{i}{self.tag}"))
            ctr = stack.enter_context(Netns(f"wfdc{i}{self.tag}"))
            ns.ip("link", "add", "eth0", "type", "veth", "peer", "name", f"h{i}", "netns", u.name)
            u.ip("link", "set", f"h{i}", "master", "br0", "up")
            ns.ip("addr", "add", f"192.0.2.{10 + i}/24", "dev", "eth0")
            ns.ip("link", "set", "eth0", "up")
            d = self.tmp / f"host{i}"
            d.mkdir()
            dial = f"192.0.2.{10 + i - 1}" if self.line else "192.0.2.11"
            targets = [dial] if i > 1 else []
            spec = d / "weave.yaml"
            spec.write_text(
                spec_text(i, targets, self.password, not self.line, trusted=self.trusted)
            )
            self.hosts.append(Host(i, ns, ctr, spec))
        for host in self.hosts:
            self.start(host)
        for host in self.hosts:
            wait_for(functools.partial(self._bridge_up, host), timeout=30, interval=0.1)
            self._plug_container(host)

    def start(self, host: Host) -> None:
        cfg = {
            "spec": str(host.spec),
            "timing": TIMING,
            "sleeve": self.sleeve,
            "resync": 60.0,
            "debug": os.environ.get("WFD_DEBUG", "").split(),
        }
        env = {**os.environ, "PYTHONPATH": str(REPO)}
        log = open(host.log_path, "ab")  # noqa: SIM115
        argv = [sys.executable, "-m", "tests.tools.fastdp_daemon", json.dumps(cfg)]
        host.proc = subprocess.Popen(
            ["ip", "netns", "exec", host.ns.name, *argv],
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            env=env,
        )
        log.close()

    def _bridge_up(self, host: Host) -> bool:
        assert host.proc is not None
        if host.proc.poll() is not None:
            raise AssertionError(f"{host.nick} daemon exited:\n{host.log()}")
        return host.ns.ip("link", "show", "weave", check=False).returncode == 0

    def _plug_container(self, host: Host) -> None:
        # A hand-made port, so not named vethwepl…: one with weaved's prefix that no attach let
        # through sends nothing (anti-spoofing fails closed).
        host.ns.ip(
            "link", "add", "vethtc0", "type", "veth", "peer", "name", "eth0",
            "netns", host.container.name,
        )  # fmt: skip
        host.ns.ip("link", "set", "vethtc0", "mtu", str(CONTAINER_MTU), "master", "weave", "up")
        host.container.ip("link", "set", "eth0", "mtu", str(CONTAINER_MTU))
        host.container.ip("addr", "add", f"{host.overlay_ip}/24", "dev", "eth0")
        host.container.ip("link", "set", "eth0", "up")
        # Say something, so the host's bridge learns the container's MAC (a real one would).
        host.container.run(["ping", "-c", "1", "-W", "1", "10.40.0.254"], check=False)

    def __exit__(self, *_exc: object) -> None:
        for host in self.hosts:
            if host.proc is not None:
                stop_process(host.proc, timeout=15)
        self._stack.close()

    def pairs(self) -> Iterator[tuple[Host, Host]]:
        for a in self.hosts:
            for b in self.hosts:
                if a is not b:
                    yield a, b

    def wait_using(self, a: Host, b: Host, how: str, timeout: float = 30) -> float:
        try:
            return wait_for(lambda: a.using().get(b.nick) == how, timeout=timeout, interval=0.2)
        except AssertionError:
            raise AssertionError(
                f"{a.nick}→{b.nick} not {how}: {a.connections()}\n{a.log()}"
            ) from None


@pytest.fixture
def lab3(tmp_path: Path) -> Iterator[Lab]:
    with Lab(tmp_path, 3, None, sleeve_datapath_available()) as lab:
        yield lab


def ping(src: Host, dst: Host, *args: str) -> bool:
    proc = src.container.run(
        ["ping", "-c", "3", "-i", "0.2", "-W", "2", *args, dst.overlay_ip], check=False
    )
    return proc.returncode == 0


def iperf(src: Host, dst: Host, seconds: float = 2.0) -> float:
    """Bits per second of one TCP stream from src's container to dst's."""
    server = subprocess.Popen(
        ["ip", "netns", "exec", dst.container.name, "iperf3", "-s", "-1", "-B", dst.overlay_ip],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        time.sleep(0.3)
        out = src.container.run(
            ["iperf3", "-c", dst.overlay_ip, "-t", str(seconds), "-J"], timeout=seconds + 20
        ).stdout
        return float(json.loads(out)["end"]["sum_received"]["bits_per_second"])
    finally:
        stop_process(server, timeout=5)


DF_SERVER = r"""
import hashlib, socket, sys
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind((sys.argv[1], 7000)); s.listen(1); s.settimeout(20)
c, _ = s.accept(); c.settimeout(20)
data = b""
while True:
    chunk = c.recv(65536)
    if not chunk:
        break
    data += chunk
print(len(data), hashlib.sha256(data).hexdigest(), flush=True)
"""

DF_CLIENT = r"""
import socket, sys
data = bytes.fromhex(sys.argv[2])
s = socket.socket()
s.setsockopt(socket.IPPROTO_IP, 10, 2)  # IP_MTU_DISCOVER = IP_PMTUDISC_DO: DF on every segment
s.settimeout(20)
s.connect((sys.argv[1], 7000)); s.sendall(data); s.close()
"""


def df_transfer(src: Host, dst: Host, size: int = 10 * 1024) -> None:
    data = os.urandom(size)
    server = subprocess.Popen(
        [
            "ip",
            "netns",
            "exec",
            dst.container.name,
            sys.executable,
            "-c",
            DF_SERVER,
            dst.overlay_ip,
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    try:
        time.sleep(0.3)
        src.container.run([sys.executable, "-c", DF_CLIENT, dst.overlay_ip, data.hex()], timeout=30)
        out, err = server.communicate(timeout=30)
    finally:
        if server.poll() is None:
            stop_process(server, timeout=5)
    assert out.decode().split() == [str(size), hashlib.sha256(data).hexdigest()], err.decode()


def test_every_pair_on_fastdp(lab3: Lab) -> None:
    h1, h2, h3 = lab3.hosts
    for a, b in lab3.pairs():
        lab3.wait_using(a, b, "fastdp")
    line = h1.connections()["host2"]
    assert "fastdp" in line and "mtu=1450" in line and "fallback" not in line
    report = h1.report()["FastDP"]
    assert report["Device"] == "vxlan-6784" and report["MTU"] == 1450
    ipv6 = h1.ns.run(["cat", "/proc/sys/net/ipv6/conf/vxlan-6784/disable_ipv6"]).stdout
    assert ipv6.strip() == "1"  # a bridge port needs no addresses
    assert {p["NickName"]: p["Using"] for p in report["Paths"]} == {
        "host2": "fastdp",
        "host3": "fastdp",
    }
    # every pair, both ways: ping, a full-size DF ping, a 10 KB DF transfer
    for a, b in lab3.pairs():
        assert ping(a, b), f"{a.nick}→{b.nick}"
        assert ping(a, b, "-M", "do", "-s", str(CONTAINER_MTU - 28)), f"DF {a.nick}→{b.nick}"
        df_transfer(a, b)
    # TCP throughput on every pair, carried by the VXLAN device
    for a, b in ((h1, h2), (h2, h3), (h3, h1)):
        before = a.vxlan_packets()
        bps = iperf(a, b)
        assert bps > 50e6, f"{a.nick}→{b.nick} only {bps / 1e6:.0f} Mbit/s"
        assert a.vxlan_packets() - before > 1000
    # the kernel holds what the mesh says: host2's container and bridge behind host2
    macs = h1.fdb_keys()
    c2 = h2.container_mac()
    assert {
        f"vxlan {c2} 192.0.2.12",
        f"bridge {c2}",
        "vxlan 00:00:00:00:00:00 192.0.2.12",
        "vxlan 00:00:00:00:00:00 192.0.2.13",
        "vxlan 02:00:00:00:0a:02 192.0.2.12",
        "bridge 02:00:00:00:0a:02",
    } <= macs
    # in sync: the plan is empty; drift shows in the plan and is put back
    assert h1.ns.weaved(h1.spec, "plan", "--detailed-exitcode", check=False).returncode == 0
    h1.ns.run(["bridge", "fdb", "del", c2, "dev", "vxlan-6784", "dst", "192.0.2.12", "self"])
    h1.ns.run(["bridge", "fdb", "del", c2, "dev", "vxlan-6784", "master"])
    plan = h1.ns.weaved(h1.spec, "plan", "--detailed-exitcode", check=False)
    assert plan.returncode == 2, plan.stdout
    assert f"+ fdb/vxlan-6784/{c2}/192.0.2.12" in plan.stdout
    assert f"+ fdb/weave/{c2}" in plan.stdout
    h1.ns.weaved(h1.spec, "apply")
    assert {f"vxlan {c2} 192.0.2.12", f"bridge {c2}"} <= h1.fdb_keys()
    assert h1.ns.weaved(h1.spec, "plan", "--detailed-exitcode", check=False).returncode == 0


def nft_block(underlay: Netns, a: Host, b: Host) -> None:
    underlay.nft("add", "table", "bridge", "wfdtest")
    underlay.nft(
        "add", "chain", "bridge", "wfdtest", "blocks",
        "{ type filter hook forward priority 0; policy accept; }",
    )  # fmt: skip
    for x, y in ((a, b), (b, a)):
        underlay.nft(
            "add", "rule", "bridge", "wfdtest", "blocks",
            "ip", "saddr", x.address, "ip", "daddr", y.address, "udp", "dport", "6784", "drop",
        )  # fmt: skip


def test_fallback_when_udp_6784_is_dropped_and_recovery(lab3: Lab) -> None:
    h1, h2, h3 = lab3.hosts
    for a, b in lab3.pairs():
        lab3.wait_using(a, b, "fastdp")
    c2 = h2.container_mac()
    assert f"bridge {c2}" in h1.fdb_keys()
    nft_block(lab3.underlay, h1, h2)
    took = lab3.wait_using(h1, h2, "sleeve", timeout=TIMING["timeout"] + 10)
    lab3.wait_using(h2, h1, "sleeve", timeout=10)
    line = h1.connections()["host2"]
    assert "fallback=fastdp unhealthy: no heartbeats through VXLAN (UDP 6784)" in line, line
    assert h1.using()["host3"] == "fastdp" and h2.using()["host3"] == "fastdp"
    assert took < TIMING["timeout"] + 5
    # only heartbeats still go to host2 through the tunnel; the rest is sleeve's
    wait_for(lambda: f"bridge {c2}" not in h1.fdb_keys(), timeout=10, interval=0.2)
    keys = h1.fdb_keys()
    assert "vxlan 00:00:00:00:00:00 192.0.2.12" not in keys
    assert "vxlan 02:00:00:00:0a:02 192.0.2.12" in keys
    assert "vxlan 00:00:00:00:00:00 192.0.2.13" in keys
    if lab3.sleeve:
        assert wait_for(lambda: ping(h1, h2), timeout=15, interval=0.5) >= 0
        df_transfer(h1, h2)
        assert ping(h1, h3) and ping(h2, h3)
    # healed
    lab3.underlay.nft("delete", "table", "bridge", "wfdtest")
    lab3.wait_using(h1, h2, "fastdp", timeout=15)
    lab3.wait_using(h2, h1, "fastdp", timeout=10)
    assert "fallback" not in h1.connections()["host2"]
    wait_for(lambda: f"bridge {c2}" in h1.fdb_keys(), timeout=10, interval=0.2)
    assert wait_for(lambda: ping(h1, h2), timeout=15, interval=0.5) >= 0
    before = h1.vxlan_packets()
    df_transfer(h1, h2)
    assert h1.vxlan_packets() - before >= 10


def test_mtu_too_small_falls_back_with_that_reason(tmp_path: Path) -> None:
    with Lab(tmp_path, 2, None, sleeve_datapath_available()) as lab:
        h1, h2 = lab.hosts
        lab.wait_using(h1, h2, "fastdp")
        # The underlay now drops every packet over 1400 bytes towards and from host2.
        lab.underlay.ip("link", "set", "h2", "mtu", "1400")
        lab.wait_using(h1, h2, "sleeve", timeout=TIMING["timeout"] + 10)
        line = h1.connections()["host2"]
        assert "MTU too small" in line and "small ones pass" in line, line
        lab.underlay.ip("link", "set", "h2", "mtu", "1500")
        lab.wait_using(h1, h2, "fastdp", timeout=15)


def test_encryption_means_encrypted_sleeve(tmp_path: Path) -> None:
    password = tmp_path / "password"
    password.write_text("a fine secret\n")
    password.chmod(0o600)
    with Lab(tmp_path, 2, password, sleeve=False) as lab:
        h1, h2 = lab.hosts
        lab.wait_using(h1, h2, "sleeve")
        line = h1.connections()["host2"]
        assert line.split()[3] == "encrypted"
        assert "fallback=fastdp off: encryption is on" in line, line
        report = h1.report()["FastDP"]
        assert report["Paths"] == []  # no fastdp forwarder at all
        assert not any("192.0.2.12" in k for k in h1.fdb_keys())


UDP_COUNTER = r"""
import socket, sys, time
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(("0.0.0.0", 7777)); s.settimeout(0.2)
print("listening", flush=True)
got = []
end = time.monotonic() + float(sys.argv[1])
while time.monotonic() < end:
    try:
        got.append(s.recv(2000).decode(errors="replace"))
    except OSError:
        pass
print(" ".join(sorted(got)), flush=True)
"""

INJECTOR = r"""
import socket, struct, sys
target, their_mac, our_name, their_name, their_ip, source = sys.argv[1:7]

def csum(data):
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack(f">{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF

def frame(payload):
    udp = struct.pack(">HHHH", 40000, 7777, 8 + len(payload), 0) + payload
    ip = bytearray(struct.pack(">BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), 1, 0, 64, 17, 0,
                               socket.inet_aton("10.40.0.66"), socket.inet_aton(their_ip)))
    struct.pack_into(">H", ip, 10, csum(bytes(ip)))
    return bytes.fromhex(their_mac.replace(":", "")) + bytes.fromhex("0e0000000066") \
        + b"\x08\x00" + bytes(ip) + udp

us, them = (bytes.fromhex(n.replace(":", "")) for n in (our_name, their_name))
out = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
out.bind((source, 0))
for i in range(3):
    vxlan = struct.pack(">II", 0x08000000, 6784 << 8) + frame(b"injected-via-vxlan")
    out.sendto(vxlan, (target, 6784))
    f = frame(b"injected-via-sleeve")
    out.sendto(us + us + them + struct.pack(">H", len(f)) + f, (target, 6783))
print("sent", flush=True)
"""


@pytest.mark.parametrize("trusted", [False, True], ids=["encrypted", "trusted-subnets"])
def test_encrypted_network_has_no_unauthenticated_way_in(tmp_path: Path, trusted: bool) -> None:
    """With a password: no VXLAN device at all (it accepts frames from anyone on the
    underlay), and an unencrypted sleeve datagram in host1's name is not delivered (it does
    not open; on a link left unencrypted by trusted subnets, it comes from an address that
    is not host1's); only the real traffic reaches host2's container."""
    password = tmp_path / "password"
    password.write_text("a fine secret\n")
    password.chmod(0o600)
    with Lab(tmp_path, 2, password, sleeve=sleeve_datapath_available(), trusted=trusted) as lab:
        h1, h2 = lab.hosts
        lab.wait_using(h1, h2, "sleeve")
        line = h1.connections()["host2"]
        assert "fallback=fastdp off: encryption is on" in line, line
        assert line.split()[3] == ("unencrypted" if trusted else "encrypted"), line
        attacker = "192.0.2.99" if trusted else h1.address
        if trusted:
            h1.ns.ip("addr", "add", f"{attacker}/24", "dev", "eth0")
        for host in lab.hosts:
            assert host.ns.ip("link", "show", "vxlan-6784", check=False).returncode != 0
            plan = host.ns.weaved(host.spec, "plan", "--detailed-exitcode", check=False)
            assert plan.returncode == 0 and "vxlan" not in plan.stdout, plan.stdout
        if lab.sleeve:
            assert wait_for(lambda: ping(h1, h2), timeout=15, interval=0.5) >= 0
        counter = subprocess.Popen(
            ["ip", "netns", "exec", h2.container.name, sys.executable, "-c", UDP_COUNTER, "6"],
            stdout=subprocess.PIPE,
            text=True,
            start_new_session=True,
        )
        try:
            assert counter.stdout is not None and counter.stdout.readline().strip() == "listening"
            h1.ns.run(
                [
                    sys.executable, "-c", INJECTOR, h2.address, h2.container_mac(),
                    "02:00:00:00:0a:01", "02:00:00:00:0a:02", h2.overlay_ip, attacker,
                ]
            )  # fmt: skip
            if lab.sleeve:  # the real path still delivers
                h1.container.run(
                    [sys.executable, "-c", "import socket; socket.socket(2, 2).sendto("
                     f"b'real', ('{h2.overlay_ip}', 7777))"]
                )  # fmt: skip
            out, _ = counter.communicate(timeout=20)
        finally:
            if counter.poll() is None:
                stop_process(counter, timeout=5)
        assert out.split() == (["real"] if lab.sleeve else []), out
        if lab.sleeve:
            counters = h2.report()["Sleeve"]["Counters"]
            if trusted:
                assert counters["drops"]["unbound_source"] >= 3, counters
            else:
                assert counters["decrypt_failed"] >= 3, counters


def test_relayed_paths_use_sleeve(tmp_path: Path) -> None:
    if not sleeve_datapath_available():
        pytest.skip("no sleeve data path to relay with")
    with Lab(tmp_path, 3, None, True, line=True) as lab:
        h1, h2, h3 = lab.hosts
        # host1 - host2 - host3, no discovery: every link relays host1 <-> host3
        for a, b in ((h1, h2), (h2, h1), (h2, h3), (h3, h2)):
            lab.wait_using(a, b, "sleeve")
        assert set(h1.connections()) == {"host2"}
        line = h2.connections()["host3"]
        assert "fallback=fastdp standby: this link also carries relayed traffic" in line, line
        assert wait_for(lambda: ping(h1, h3), timeout=20, interval=0.5) >= 0
        df_transfer(h1, h3)
        df_transfer(h3, h1)
        assert ping(h1, h2) and ping(h2, h3)
        assert not any(k.startswith("bridge") for k in h2.fdb_keys())
        # host3 dials host1 too: a full mesh, nothing relays, fastdp everywhere
        h3.spec.write_text(spec_text(3, ["192.0.2.12", "192.0.2.11"], None, discovery=False))
        for a, b in lab.pairs():
            lab.wait_using(a, b, "fastdp", timeout=30)
        assert ping(h1, h3)
        before = h1.vxlan_packets()
        df_transfer(h1, h3)
        assert h1.vxlan_packets() - before >= 10


class Pinger:
    """`ping -i 0.05` from a host's container to another's, counting what was lost."""

    INTERVAL = 0.05

    def __init__(self, src: Host, dst: Host) -> None:
        self.name = f"{src.nick}→{dst.nick}"
        self.proc = subprocess.Popen(
            [
                "ip", "netns", "exec", src.container.name,
                "ping", "-n", "-i", str(self.INTERVAL), "-W", "1", dst.overlay_ip,
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
        )  # fmt: skip

    def lost_seconds(self) -> float:
        """Stop (SIGINT: ping prints its summary) and return the loss as time."""
        os.killpg(self.proc.pid, 2)
        out, _ = self.proc.communicate(timeout=10)
        for line in out.splitlines():
            if "packets transmitted" in line:
                sent, received = int(line.split()[0]), int(line.split()[3])
                return (sent - received) * self.INTERVAL
        raise AssertionError(f"{self.name}: no ping summary\n{out[-500:]}")


def kill_and_restart(lab: Lab, host: Host, down: float) -> str:
    """kill -9 the host's daemon, restart it after `down` seconds; returns `weaved plan`
    as soon as the new daemon answers."""
    assert host.proc is not None
    os.kill(host.proc.pid, 9)
    host.proc.wait(10)
    time.sleep(down)
    lab.start(host)
    wait_for(
        lambda: host.ns.weaved(host.spec, "status", check=False, timeout=10).returncode == 0,
        timeout=30,
        interval=0.1,
    )
    plan = host.ns.weaved(host.spec, "plan", "--detailed-exitcode", check=False, timeout=20)
    return f"exit {plan.returncode}\n{plan.stdout}"


def test_fastdp_flows_outlive_a_daemon_restart(lab3: Lab) -> None:
    """kill -9 of host2's daemon: the kernel's VXLAN path needs no daemon, so host1↔host2
    keeps flowing (≤ 1 s lost per cycle), host1↔host3 loses nothing (their link must not
    flip to sleeve while host2's links go and come), and the restarted daemon adopts the
    kernel: its plan is empty right away, every time."""
    h1, h2, h3 = lab3.hosts
    for a, b in lab3.pairs():
        lab3.wait_using(a, b, "fastdp")
    for a, b in lab3.pairs():
        assert wait_for(lambda a=a, b=b: ping(a, b), timeout=10, interval=0.2) >= 0  # type: ignore[misc]
    cycles = (10.0, 2.0, 5.0)
    for down in cycles:
        through, unrelated = Pinger(h1, h2), Pinger(h1, h3)
        back, unrelated_back = Pinger(h2, h1), Pinger(h3, h1)
        time.sleep(1.0)
        plan = kill_and_restart(lab3, h2, down)
        for a, b in ((h2, h1), (h2, h3), (h1, h2), (h3, h2)):
            lab3.wait_using(a, b, "fastdp", timeout=30)
        time.sleep(2.0)
        lost = {p.name: p.lost_seconds() for p in (through, unrelated, back, unrelated_back)}
        assert plan.startswith("exit 0"), f"plan right after the restart:\n{plan}"
        assert lost[unrelated.name] == 0 and lost[unrelated_back.name] == 0, lost
        assert lost[through.name] <= 1.0 and lost[back.name] <= 1.0, (down, lost)
