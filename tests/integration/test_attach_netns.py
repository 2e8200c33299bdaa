"""Attach namespace "containers" and a bare process to the bridge, for real (root).

Each test gets a host namespace where `weaved apply` made the bridge (10.2.1.1/24 exposed) and
its own container namespaces. The CLI runs as a separate process inside the host namespace; the
library is also called in-process, on a thread that entered the host namespace
(`weaved.attach.netns.run_in_netns`), so the test's own thread never moves.
"""

from __future__ import annotations

import ipaddress
import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import TypeVar

import pytest

from tests.helpers import Netns, sh, stop_process, wait_for
from tests.probes import LISTEN, SPOOF
from weaved.attach import observe, plumbing
from weaved.attach.model import Attachment, AttachmentState
from weaved.attach.netns import opened, run_in_netns
from weaved.attach.target import netns_target, pid_target

pytestmark = pytest.mark.timeout(120)

T = TypeVar("T")
Iface = ipaddress.IPv4Interface
SPEC = 'version: 1\npeer: {name: "3e:80:e7:5a:63:a7"}\nexpose: [{cidr: 10.2.1.1/24}]\n'


@pytest.fixture
def host(tmp_path: Path) -> Iterator[Netns]:
    spec = tmp_path / "weave.yaml"
    spec.write_text(SPEC)
    with Netns("wdat") as ns:
        ns.weaved(spec, "apply")
        yield ns


def spec_of(tmp_path: Path) -> Path:
    return tmp_path / "weave.yaml"


def in_ns(ns: Netns, fn: Callable[[], T]) -> T:
    """Run the library inside `ns` (on a helper thread; this thread stays put)."""
    with opened(f"/run/netns/{ns.name}") as fd:
        return run_in_netns(fd, fn, timeout=60)


def weaved_attach(
    host: Netns, spec: Path, *args: str, check: bool = True
) -> subprocess.CompletedProcess[str]:
    return host.run(
        [sys.executable, "-m", "weaved", "-f", str(spec), *args], check=check, timeout=60
    )


def ping(ns_argv: list[str], addr: str) -> bool:
    argv = [*ns_argv, "ping", "-c", "1", "-W", "2", addr]
    return sh(argv, check=False).returncode == 0


def exec_in(ns: Netns) -> list[str]:
    return ["ip", "netns", "exec", ns.name]


def exec_pid(pid: int) -> list[str]:
    return ["nsenter", f"--net=/proc/{pid}/ns/net"]


def link_json(argv: list[str], ifname: str) -> dict[str, object]:
    out = sh([*argv, "ip", "-d", "-j", "link", "show", ifname]).stdout
    data: dict[str, object] = json.loads(out)[0]
    return data


@contextmanager
def bare_process() -> Iterator[subprocess.Popen[bytes]]:
    """A process alone in an anonymous network namespace (a PID target), killed on exit."""
    proc = subprocess.Popen(
        ["unshare", "--net", "sleep", "600"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        wait_for(
            lambda: os.readlink(f"/proc/{proc.pid}/ns/net") != os.readlink("/proc/self/ns/net"),
            timeout=10,
        )
        yield proc
    finally:
        stop_process(proc)


def test_attach_namespaces_and_a_pid_then_ping_and_tcp(host: Netns, tmp_path: Path) -> None:
    spec = spec_of(tmp_path)
    with ExitStack() as stack:
        c1 = stack.enter_context(Netns("wdac"))
        c2 = stack.enter_context(Netns("wdac"))
        proc = stack.enter_context(bare_process())
        assert weaved_attach(host, spec, "attach", "10.2.1.21/24", c1.name).stdout == "10.2.1.21\n"
        out = weaved_attach(host, spec, "attach", "ip:10.2.1.22/24", f"netns:{c2.name}").stdout
        assert out == "10.2.1.22\n"
        assert weaved_attach(host, spec, "attach", "10.2.1.23/24", str(proc.pid)).stdout == (
            "10.2.1.23\n"
        )

        # Layout: vethwepl<pid> / vethwepl<n+hash> on the bridge ↔ ethwe, MTU of the spec.
        veth_pid = f"vethwepl{proc.pid}"
        for name in (veth_pid, netns_target(c1.name).veth, netns_target(c2.name).veth):
            info = link_json(exec_in(host), name)
            assert info["master"] == "weave" and info["mtu"] == 1376
            assert "UP" in str(info["flags"])
            linkinfo = info["linkinfo"]
            assert isinstance(linkinfo, dict) and linkinfo["info_slave_data"]["hairpin"] is False
        for argv in (exec_in(c1), exec_in(c2), exec_pid(proc.pid)):
            info = link_json(argv, "ethwe")
            assert info["mtu"] == 1376 and "UP" in str(info["flags"])
            routes = sh([*argv, "ip", "-j", "route", "show", "224.0.0.0/4"]).stdout
            assert json.loads(routes)[0]["dev"] == "ethwe"
            features = sh([*argv, "ethtool", "-k", "ethwe"]).stdout
            assert "tx-checksumming: off" in features
            reach = sh([*argv, "sysctl", "-n", "net.ipv4.neigh.ethwe.base_reachable_time"])
            assert reach.stdout.strip() == "5"

        # Traffic: across the bridge, to the exposed host address, and TCP.
        assert ping(exec_in(c1), "10.2.1.22")
        assert ping(exec_in(c1), "10.2.1.23")
        assert ping(exec_pid(proc.pid), "10.2.1.1")
        assert ping(exec_in(c2), "10.2.1.1")
        server = subprocess.Popen(
            [*exec_in(c2), "iperf3", "-s", "-1", "-p", "5201"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        try:

            def client() -> bool:
                argv = [*exec_pid(proc.pid), "iperf3", "-c", "10.2.1.22", "-p", "5201", "-t", "1"]
                return sh(argv, check=False, timeout=20).returncode == 0

            wait_for(client, timeout=15, interval=0.3)
        finally:
            stop_process(server)

        # ps: Weave's layout, the bridge first, MACs as the containers see them.
        listing = weaved_attach(host, spec, "ps").stdout.splitlines()
        assert listing[0] == "weave:expose 3e:80:e7:5a:63:a7 10.2.1.1/24"
        expected = {
            f"{c1.name[:12]} {link_json(exec_in(c1), 'ethwe')['address']} 10.2.1.21/24",
            f"{c2.name[:12]} {link_json(exec_in(c2), 'ethwe')['address']} 10.2.1.22/24",
            f"{proc.pid} {link_json(exec_pid(proc.pid), 'ethwe')['address']} 10.2.1.23/24",
        }
        assert set(listing[1:]) == expected and len(listing) == 4
        one = weaved_attach(host, spec, "ps", c1.name).stdout.splitlines()
        assert one == [line for line in listing if line.startswith(c1.name[:12])]


def test_idempotent_extra_address_and_detach(host: Netns) -> None:
    with Netns("wdac") as c1:
        target = netns_target(c1.name)
        first: list[str] = []
        a = in_ns(host, lambda: plumbing.attach(target, [Iface("10.2.1.21/24")], changes=first))
        assert first[0].startswith(f"create veth {target.veth}")
        assert a.mtu == 1376 and a.addresses == (Iface("10.2.1.21/24"),) and a.multicast_route
        assert a.tx_checksum is False and a.bridged and a.state is AttachmentState.ATTACHED

        again: list[str] = []
        b = in_ns(host, lambda: plumbing.attach(target, [Iface("10.2.1.21/24")], changes=again))
        assert again == [] and b == a

        more: list[str] = []
        extra = [Iface("10.2.1.21/24"), Iface("10.3.0.21/16")]
        c = in_ns(host, lambda: plumbing.attach(target, extra, changes=more))
        assert more == ["ethwe: add 10.3.0.21/16", "ethwe: gratuitous ARP for 10.3.0.21"]
        assert set(c.addresses) == set(extra) and c.veth_index == a.veth_index and c.mac == a.mac

        d = in_ns(host, lambda: plumbing.detach(target, [Iface("10.3.0.21/16")]))
        assert d.removed == (Iface("10.3.0.21/16"),) and not d.veth_removed
        assert d.remaining == (Iface("10.2.1.21/24"),)
        assert c1.ip("link", "show", "ethwe", check=False).returncode == 0

        e = in_ns(host, lambda: plumbing.detach(target, [Iface("10.2.1.21/24")]))
        assert e.veth_removed and e.remaining == ()
        assert c1.ip("link", "show", "ethwe", check=False).returncode != 0
        assert host.ip("link", "show", target.veth, check=False).returncode != 0
        assert in_ns(host, observe.observe_attachments) == []

        # Nothing attached: detach is a no-op, not an error.
        f = in_ns(host, lambda: plumbing.detach(target, None))
        assert f.removed == () and not f.veth_removed


def test_no_multicast_route_and_mtu_from_spec(tmp_path: Path) -> None:
    spec = tmp_path / "weave.yaml"
    spec.write_text(
        SPEC.replace("expose:", "datapath: {mtu: 1400}\nmulticast_route: false\nexpose:")
    )
    with Netns("wdat") as host, Netns("wdac") as c1:
        host.weaved(spec, "apply")
        weaved_attach(host, spec, "attach", "10.2.1.21/24", c1.name)
        assert link_json(exec_in(c1), "ethwe")["mtu"] == 1400
        assert json.loads(c1.ip("-j", "route", "show", "224.0.0.0/4").stdout) == []
        assert ping(exec_in(c1), "10.2.1.1")


def test_reobserve_after_the_fact(host: Netns, tmp_path: Path) -> None:
    """A restarted daemon finds every attachment again (in another process than the one that
    made them) and learns which containers died."""
    spec = spec_of(tmp_path)
    with ExitStack() as stack:
        c1 = stack.enter_context(Netns("wdac"))
        lone = stack.enter_context(bare_process())
        shared = stack.enter_context(bare_process())
        weaved_attach(host, spec, "attach", "10.2.1.21/24", "10.2.1.121/24", c1.name)
        weaved_attach(host, spec, "attach", "10.2.1.22/24", str(lone.pid))
        weaved_attach(host, spec, "attach", "10.2.1.23/24", str(shared.pid))
        # A second process in `shared`'s namespace keeps it alive after `shared` dies.
        keeper = subprocess.Popen(
            [*exec_pid(shared.pid), "sleep", "600"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        stack.callback(stop_process, keeper)
        wait_for(
            lambda: (
                os.readlink(f"/proc/{keeper.pid}/ns/net")
                == os.readlink(f"/proc/{shared.pid}/ns/net")
            ),
            timeout=10,
        )

        seen = in_ns(host, observe.observe_attachments)
        by_label = {a.target.label: a for a in seen}
        assert set(by_label) == {c1.name[:12], str(lone.pid), str(shared.pid)}
        assert all(a.state is AttachmentState.ATTACHED and a.bridged for a in seen)
        assert by_label[c1.name[:12]].addresses == (Iface("10.2.1.21/24"), Iface("10.2.1.121/24"))
        assert by_label[c1.name[:12]].target == netns_target(c1.name)
        assert by_label[str(lone.pid)].target == pid_target(lone.pid)
        assert by_label[str(lone.pid)].mac == link_json(exec_pid(lone.pid), "ethwe")["address"]

        # The JSON a daemon would persist comes back equal.
        known = [Attachment.from_json(json.loads(json.dumps(a.to_json()))) for a in seen]
        assert known == seen

        stop_process(lone)  # its namespace dies and takes the veth with it
        stop_process(shared)  # its namespace lives on in `keeper`
        wait_for(
            lambda: host.ip("link", "show", f"vethwepl{lone.pid}", check=False).returncode != 0,
            timeout=30,
        )

        after = {
            a.target.label: a for a in in_ns(host, lambda: observe.observe_attachments(None, known))
        }
        assert after[c1.name[:12]].state is AttachmentState.ATTACHED
        assert after[str(lone.pid)].state is AttachmentState.GONE
        assert after[str(lone.pid)].addresses == (Iface("10.2.1.22/24"),)
        dead = after[str(lone.pid)].target
        assert in_ns(host, lambda: plumbing.detach(dead, None)).removed == ()  # nothing left
        orphan = after[str(shared.pid)]
        assert orphan.state is AttachmentState.ORPHANED
        assert orphan.addresses == (Iface("10.2.1.23/24"),)
        assert orphan.target.netns_path == f"/proc/{keeper.pid}/ns/net"
        # ps shows only the living.
        assert [
            line.split()[0] for line in weaved_attach(host, spec, "ps").stdout.splitlines()
        ] == [
            "weave:expose",
            c1.name[:12],
        ]
        # The daemon releases the orphan by detaching through the path observe found.
        gone = in_ns(host, lambda: plumbing.detach(orphan.target, None))
        assert gone.veth_removed and gone.removed == (Iface("10.2.1.23/24"),)


def test_gratuitous_arp_when_an_address_moves(host: Netns) -> None:
    with Netns("wdac") as c1, Netns("wdac") as c2:
        t1, t2 = netns_target(c1.name), netns_target(c2.name)
        moving = Iface("10.2.1.21/24")
        in_ns(host, lambda: plumbing.attach(t1, [moving]))
        # c2 stays plugged throughout: the bridge keeps its carrier and the host its ARP cache.
        in_ns(host, lambda: plumbing.attach(t2, [Iface("10.2.1.22/24")]))
        assert ping(exec_in(host), "10.2.1.21")  # the host now caches c1's MAC
        mac1 = link_json(exec_in(c1), "ethwe")["address"]
        assert f"lladdr {mac1}" in host.ip("neigh", "show", "10.2.1.21").stdout

        def listen() -> socket.socket:
            sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(0x0806))
            sock.bind(("weave", 0x0806))
            sock.settimeout(0.2)
            return sock

        capture = in_ns(host, listen)  # a socket stays in the namespace it was made in
        try:
            time.sleep(1.1)  # past the neighbour entry's locktime
            in_ns(host, lambda: plumbing.detach(t1, None))
            moved = in_ns(host, lambda: plumbing.attach(t2, [moving]))
            frames = []
            deadline = time.monotonic() + 3
            while time.monotonic() < deadline:
                try:
                    frames.append(capture.recv(2048))
                except TimeoutError:
                    break
        finally:
            capture.close()
        announced = [
            f
            for f in frames
            if f[20:22] == b"\x00\x01" and f[28:32] == f[38:42] == bytes([10, 2, 1, 21])
        ]
        assert announced and announced[0][22:28] == bytes.fromhex(moved.mac.replace(":", ""))
        # The host's stale entry now points at the new owner, without waiting for timeouts.
        wait_for(
            lambda: f"lladdr {moved.mac}" in host.ip("neigh", "show", "10.2.1.21").stdout,
            timeout=3,
        )
        assert moved.mac != mac1


def test_clear_errors(host: Netns, tmp_path: Path) -> None:
    spec = spec_of(tmp_path)
    missing = weaved_attach(host, spec, "attach", "10.2.1.21/24", "netns:wdac-nosuch", check=False)
    assert missing.returncode == 1 and "no network namespace 'wdac-nosuch'" in missing.stderr
    hostns = weaved_attach(host, spec, "attach", "10.2.1.21/24", f"netns:{host.name}", check=False)
    assert hostns.returncode == 1 and "host network namespace" in hostns.stderr
    ipam = weaved_attach(host, spec, "attach", "net:default", f"netns:{host.name}", check=False)
    assert ipam.returncode == 64 and "IP allocation" in ipam.stderr
    with Netns("wdat") as bare, Netns("wdac") as c1:
        no_bridge = bare.run(
            [sys.executable, "-m", "weaved", "attach", "10.2.1.21/24", c1.name],
            check=False,
        )
        assert no_bridge.returncode == 1 and 'bridge "weave" not present' in no_bridge.stderr
        assert c1.ip("link", "show", "ethwe", check=False).returncode != 0


def test_the_quick_check_reads_only_the_host_and_the_deep_one_finds_changes_inside(
    host: Netns,
) -> None:
    """Issue 16.3: the periodic check enters no container whose veth is unchanged (one link
    dump on a host of many containers); a change made by hand inside a container is found by
    the deep check, and a veth deleted by hand by the quick one."""
    with Netns("wdhs") as c1:
        target = netns_target(c1.name)
        attached = in_ns(host, lambda: plumbing.attach(target, [Iface("10.2.1.31/24")]))
        assert attached.peer_index > 0
        assert in_ns(host, lambda: observe.nothing_moved([attached]))
        # A veth that a call under way made (not recorded yet) is no news for the quick look.
        assert not in_ns(host, lambda: observe.nothing_moved([]))
        assert in_ns(host, lambda: observe.nothing_moved([], busy={target.veth}))
        c1.ip("addr", "del", "10.2.1.31/24", "dev", "ethwe")

        quick = in_ns(host, lambda: observe.observe_attachments(None, [attached], deep=False))
        assert [a.addresses for a in quick] == [(Iface("10.2.1.31/24"),)]  # as recorded
        deep = in_ns(host, lambda: observe.observe_attachments(None, [attached], deep=True))
        assert [a.addresses for a in deep] == [()]
        assert deep[0].state is AttachmentState.ATTACHED

        host.ip("link", "del", target.veth)
        gone = in_ns(host, lambda: observe.observe_attachments(None, [attached], deep=False))
        assert [a.state for a in gone] == [AttachmentState.GONE]


def set_elements(host: Netns) -> set[tuple[str, str]]:
    """The anti-spoofing set's (port, address) elements as the kernel has them."""
    out = host.run(["nft", "-j", "list", "set", "bridge", "weaved", "ports"]).stdout
    found = [o["set"] for o in json.loads(out)["nftables"] if "set" in o]
    return {(e["concat"][0], e["concat"][1]) for e in found[0].get("elem", [])}


def test_a_new_port_sends_only_from_its_addresses_before_any_converge(host: Netns) -> None:
    """The plug lets a port's own addresses through before the port is up; everything else it
    sends is dropped at once, without waiting for a converge to learn about the port (this
    host's tables were made by `weaved apply` before either container existed; nothing
    converges afterwards). Detach takes the addresses out again."""
    with Netns("wdac") as sender, Netns("wdac") as receiver:
        targets = [netns_target(c.name) for c in (sender, receiver)]
        for target, address in zip(targets, ("10.2.1.31/24", "10.2.1.32/24"), strict=True):
            in_ns(host, lambda t=target, a=address: plumbing.attach(t, [Iface(a)]))
        listener = subprocess.Popen(
            [*exec_in(receiver), sys.executable, "-c", LISTEN, "5"],
            stdout=subprocess.PIPE,
            text=True,
        )
        try:
            assert listener.stdout is not None and listener.stdout.readline().strip() == "ready"
            sender.run([sys.executable, "-c", SPOOF, "10.2.1.99", "10.2.1.32", "spoofed"])
            sender.run([sys.executable, "-c", SPOOF, "10.2.1.31", "10.2.1.32", "honest"])
            out, _ = listener.communicate(timeout=20)
        finally:
            listener.kill()
        assert "10.2.1.31 honest" in out and "spoofed" not in out
        assert set_elements(host) == {
            (targets[0].veth, "10.2.1.31"),
            (targets[1].veth, "10.2.1.32"),
        }

        in_ns(host, lambda: plumbing.detach(targets[0], None))
        assert set_elements(host) == {(targets[1].veth, "10.2.1.32")}


def test_the_inside_check_in_turn_finds_only_a_change_made_by_hand(host: Netns) -> None:
    """Issue 16.3: the periodic check looks into a few containers at a time (changed_inside);
    a container as attached reads as unchanged (else every turn would cost a link dump), one
    changed by hand is named, and observing just that one finds the change."""
    with Netns("wdhs") as c1, Netns("wdhs") as c2:
        t1, t2 = netns_target(c1.name), netns_target(c2.name)
        a1 = in_ns(host, lambda: plumbing.attach(t1, [Iface("10.2.1.41/24")]))
        a2 = in_ns(host, lambda: plumbing.attach(t2, [Iface("10.2.1.42/24")]))
        assert in_ns(host, lambda: observe.changed_inside([a1, a2])) == []
        c2.ip("addr", "del", "10.2.1.42/24", "dev", "ethwe")
        assert in_ns(host, lambda: observe.changed_inside([a1, a2])) == [a2.veth]
        seen = in_ns(host, lambda: observe.observe_attachments(None, [a1, a2], deep={a2.veth}))
        assert {a.veth: a.addresses for a in seen} == {
            a1.veth: (Iface("10.2.1.41/24"),),
            a2.veth: (),
        }


def test_a_later_apply_keeps_what_an_attach_without_the_daemon_let_through(
    host: Netns, tmp_path: Path
) -> None:
    """No daemon runs: `weaved attach` plugs two containers, then `weaved apply` runs again (a
    spec edit, a reboot script). Their ports have no record, so they are left alone, and so are
    their anti-spoofing elements: the containers still reach each other. An element of a port
    that no longer exists is not kept."""
    spec = spec_of(tmp_path)
    with Netns("wdac") as c1, Netns("wdac") as c2:
        weaved_attach(host, spec, "attach", "10.2.1.41/24", c1.name)
        weaved_attach(host, spec, "attach", "10.2.1.42/24", c2.name)
        host.run(
            ["nft", 'add element bridge weaved ports { "vethweplgone" . 10.2.1.43 }'], check=True
        )
        host.weaved(spec, "apply")
        pairs = {(netns_target(c.name).veth, a) for c, a in ((c1, "10.2.1.41"), (c2, "10.2.1.42"))}
        assert set_elements(host) == pairs
        assert ping(exec_in(c1), "10.2.1.42")
        assert "no changes" in host.weaved(spec, "plan").stdout.lower()
