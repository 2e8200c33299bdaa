"""A fresh plug is not read back: what the attach returns for a pair it just created follows
from what the kernel acknowledged (plumbing.attach → inside.configure_side(fresh=True)). It
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
