"""A fresh plug is not read back: what the attach returns for a pair it just created follows
from what the kernel acknowledged (plumbing.attach → inside.configure_side(made_as=…)). It
must equal what a full read of the kernel then shows, whatever the options."""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

import pytest

from tests.helpers import Netns
from weaved.attach import plumbing
from weaved.attach.model import Attachment
from weaved.attach.netns import opened, run_in_netns
from weaved.attach.target import netns_target
from weaved.errors import ConflictError

pytestmark = pytest.mark.timeout(120)
T = TypeVar("T")
Iface = ipaddress.IPv4Interface
SPEC = 'version: 1\npeer: {name: "3e:80:e7:5a:63:c6"}\nexpose: [{cidr: 10.2.1.1/24}]\n'


@pytest.fixture
def host(tmp_path: Path) -> Iterator[Netns]:
    spec = tmp_path / "weave.yaml"
    spec.write_text(SPEC)
    with Netns("wakf") as ns:
        ns.weaved(spec, "apply")
        yield ns


def in_ns(ns: Netns, fn: Callable[[], T]) -> T:
    with opened(f"/run/netns/{ns.name}") as fd:
        return run_in_netns(fd, fn, timeout=60)


@pytest.mark.parametrize(
    ("tx_off", "multicast", "mtu"), [(True, True, 0), (False, False, 1400), (True, False, 1300)]
)
def test_a_fresh_plug_returns_what_a_full_read_shows(
    host: Netns, tx_off: bool, multicast: bool, mtu: int
) -> None:
    with Netns("wakfc") as c:
        target = netns_target(c.name)
        ifaces = [Iface("10.2.1.41/24"), Iface("10.5.0.41/16")]

        def plug() -> Attachment:
            return plumbing.attach(
                target, ifaces, mtu, multicast, tx_checksum_off=tx_off, changes=[]
            )

        fresh = in_ns(host, plug)
        # Attaching again finds the pair and reads everything from the kernel.
        assert in_ns(host, plug) == fresh
        assert fresh.tx_checksum is (not tx_off) and fresh.multicast_route is multicast
        assert fresh.mtu == (mtu or 1376)


def test_a_multicast_route_someone_else_has_is_not_reported_as_ethwes(host: Netns) -> None:
    with Netns("wakfm") as c:
        c.ip("link", "add", "dummyish", "type", "veth", "peer", "name", "dummyish2")
        c.ip("link", "set", "dummyish", "up")
        c.ip("route", "add", "224.0.0.0/4", "dev", "dummyish")
        target = netns_target(c.name)

        def plug() -> Attachment:
            return plumbing.attach(target, [Iface("10.2.1.42/24")], changes=[])

        fresh = in_ns(host, plug)
        assert fresh.multicast_route is False
        assert in_ns(host, plug) == fresh


def test_a_fresh_pair_has_one_queue_each_way_on_both_ends(host: Netns) -> None:
    """Made with one queue each way (nlsock._ONE_QUEUE), a veth is not cut down to one after
    it is registered (an expedited RCU grace period under the rtnl lock per pair)."""
    with Netns("wakfq") as c:
        target = netns_target(c.name)
        in_ns(host, lambda: plumbing.attach(target, [Iface("10.2.1.43/24")], changes=[]))
        for ns, name in ((host, target.veth), (c, "ethwe")):
            shown = ns.ip("-d", "link", "show", name).stdout
            assert "numtxqueues 1 numrxqueues 1" in shown, shown


def test_an_ethwe_of_someone_elses_is_refused_and_nothing_is_left(host: Netns) -> None:
    """ethwe is made under another name and renamed as it comes up (model.MADE_AS_PREFIX):
    an ethwe already in the container makes that rename fail. The new pair goes again, with
    its anti-spoofing elements, and the container's own ethwe is left as it was."""
    with Netns("wakfo") as c:
        c.ip("link", "add", "ethwe", "type", "veth", "peer", "name", "theirs")
        target = netns_target(c.name)

        def plug() -> Attachment:
            return plumbing.attach(target, [Iface("10.2.1.44/24")], changes=[])

        with pytest.raises(ConflictError, match="not plugged into this host's bridge"):
            in_ns(host, plug)
        assert host.ip("link", "show", target.veth, check=False).returncode != 0
        inside = c.ip("-o", "link", "show").stdout
        assert "vethwepg" not in inside and "10.2.1.44" not in c.ip("addr").stdout, inside
        ports = host.run(["nft", "list", "set", "bridge", "weaved", "ports"]).stdout
        assert "10.2.1.44" not in ports, ports


def test_a_fresh_ethwe_comes_up_under_its_name_with_accept_ra_off(host: Netns) -> None:
    with Netns("wakfr") as c:
        target = netns_target(c.name)
        changes: list[str] = []
        in_ns(host, lambda: plumbing.attach(target, [Iface("10.2.1.45/24")], changes=changes))
        names = c.run(["ls", "/sys/class/net"]).stdout.split()
        assert sorted(names) == ["ethwe", "lo"], names
        assert c.run(["cat", "/proc/sys/net/ipv6/conf/ethwe/accept_ra"]).stdout.strip() == "0"
        assert changes[0] == f"create veth {target.veth} ↔ {target.label}:ethwe", changes
        assert "ethwe: up" in changes and not any("vethwepg" in c for c in changes), changes
