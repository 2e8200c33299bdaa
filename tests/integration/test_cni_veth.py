"""The CNI plugin's veth, for real (root, a real `weaved daemon`, containers as named network
namespaces): Weave's ARP settings on the container's interface (set through netlink as
`weaved attach` sets ethwe's), and two containers whose veth names' short hashes collide (six
hex digits of SHA-256: ~3 % of hosts with 1 000 containers hold such a pair)."""

from __future__ import annotations

import hashlib
import json
import secrets
from collections.abc import Callable
from typing import TypeVar

import pytest

from tests.helpers import Netns
from tests.integration.test_cni import Host, addr_of, conf, host, restart
from weaved.attach.netns import opened, run_in_netns
from weaved.cni import plumbing
from weaved.cni.plumbing import veth_names

pytestmark = [pytest.mark.root, pytest.mark.timeout(240)]
__all__ = ["host"]  # test_cni's daemon fixture, used here too

T = TypeVar("T")
NEIGH = "net/ipv4/neigh/eth0/"
WEAVE_ARP = {"base_reachable_time": "5", "delay_first_probe_time": "2", "ucast_solicit": "1"}


def arp_settings(c: Netns) -> dict[str, str]:
    read = c.run(["cat", *(f"/proc/sys/{NEIGH}{key}" for key in WEAVE_ARP)]).stdout.split()
    return dict(zip(WEAVE_ARP, read, strict=True))


def test_the_container_interface_has_weaves_arp_settings_again_after_drift(host: Host) -> None:
    with Netns("wdcnia") as c:
        rc, r = host.cni("ADD", "arp1", c.name, conf())
        assert rc == 0, r
        assert arp_settings(c) == WEAVE_ARP
        c.run(["sysctl", "-qw", "net.ipv4.neigh.eth0.ucast_solicit=3"])
        c.run(["sysctl", "-qw", "net.ipv4.neigh.eth0.base_reachable_time=30"])
        rc, again = host.cni("ADD", "arp1", c.name, conf())  # a runtime's retry repairs them
        assert rc == 0 and addr_of(again) == addr_of(r), again
        assert arp_settings(c) == WEAVE_ARP
        assert host.cni("DEL", "arp1", c.name, conf())[0] == 0


def colliding_ids(prefix: str) -> tuple[str, str]:
    """Two container IDs whose first veth names (for eth0) are the same: a birthday search,
    ~5 000 IDs on average among 16.7 million short hashes."""
    seen: dict[str, str] = {}
    for i in range(200_000):
        cid = f"{prefix}{i}"
        short = hashlib.sha256(f"{cid}/eth0".encode()).hexdigest()[:6]
        if short in seen:
            return seen[short], cid
        seen[short] = cid
    raise AssertionError("no collision found")


def test_containers_whose_veth_names_collide_both_attach_and_each_del_takes_its_own(
    host: Host,
) -> None:
    a, b = colliding_ids(f"cc{secrets.token_hex(3)}x")
    first, second = veth_names(a, "eth0")[0], veth_names(b, "eth0")[1]
    assert veth_names(b, "eth0")[0] == first

    def links() -> set[str]:
        return {x["ifname"] for x in json.loads(host.ns.ip("-j", "link", "show").stdout)}

    def alias(veth: str) -> str:
        return str(json.loads(host.ns.ip("-j", "link", "show", veth).stdout)[0].get("ifalias"))

    with Netns("wdcnic") as c1, Netns("wdcnic") as c2:
        rc, r1 = host.cni("ADD", a, c1.name, conf())
        assert rc == 0 and r1["interfaces"][0]["name"] == first, r1
        # A runtime's DEL of b before any ADD (its cleanup after a failed one) leaves a's veth:
        # its peer is in another namespace, and its alias names a.
        assert host.cni("DEL", b, c2.name, conf())[0] == 0
        assert host.cni("DEL", b, None, conf())[0] == 0
        assert first in links() and alias(first).startswith(f"weaved-cni id={a} ")

        rc, r2 = host.cni("ADD", b, c2.name, conf())
        assert rc == 0 and r2["interfaces"][0]["name"] == second, r2
        assert alias(first).startswith(f"weaved-cni id={a} ")  # a's record untouched
        assert alias(second).startswith(f"weaved-cni id={b} ")
        c1.run(["ping", "-c", "2", "-W", "2", addr_of(r2)])
        rc, again = host.cni("ADD", b, c2.name, conf())  # ADD again finds its second name
        assert rc == 0 and again["interfaces"][0]["name"] == second, again
        for cid, c, r in ((a, c1, r1), (b, c2, r2)):
            assert host.cni("CHECK", cid, c.name, conf(prevResult=r))[0] == 0

        # A daemon that lost its state finds both (each veth's alias says whose it is).
        restart(host, wipe_state=True)
        listing = host.ns.weaved(host.spec, "status", "cni").stdout
        assert f"{a[:12]} eth0 {first}" in listing and f"{b[:12]} eth0 {second}" in listing
        assert host.cni("CHECK", b, c2.name, conf(prevResult=r2))[0] == 0

        assert host.cni("DEL", b, c2.name, conf())[0] == 0
        assert second not in links() and first in links()
        c1.run(["ping", "-c", "2", "-W", "2", r1["ips"][0]["gateway"]])
        assert host.cni("DEL", a, c1.name, conf())[0] == 0
        assert first not in links()


def test_a_veth_whose_peer_is_elsewhere_is_neither_deleted_nor_passed_by_check() -> None:
    """The ownership checks behind DEL and CHECK, without a daemon: a host-side veth belongs
    to an attachment when its peer is the attachment's IfName in its namespace; without a
    namespace, when its alias names no other attachment."""
    with Netns("wdcnio") as host, Netns("wdcnio") as c1, Netns("wdcnio") as c2:
        name = "vethweplc" + secrets.token_hex(3)
        host.ip("link", "add", name, "type", "veth", "peer", "name", "eth0", "netns", c1.name)
        host.ip("link", "set", name, "alias", "weaved-cni id=a if=eth0 ip=10.9.0.2/24")
        c2.ip("link", "add", "eth0", "type", "veth", "peer", "name", "other")
        path1, path2 = f"/run/netns/{c1.name}", f"/run/netns/{c2.name}"

        def in_host(fn: Callable[[], T]) -> T:
            with opened(f"/run/netns/{host.name}") as fd:
                return run_in_netns(fd, fn)

        def here() -> bool:
            return name in host.ip("link", "show").stdout

        wrong = f"{name} is not the host side of eth0 in {path2}"
        assert wrong in in_host(lambda: plumbing.host_problems(name, path2, "eth0"))
        assert not any(
            "host side" in p for p in in_host(lambda: plumbing.host_problems(name, path1, "eth0"))
        )
        # b's DEL: with its namespace (whose own eth0 goes), then without one (the alias).
        in_host(lambda: plumbing.unplug([name], path2, "eth0", "b/eth0"))
        assert here() and "eth0" not in c2.ip("link", "show").stdout
        in_host(lambda: plumbing.unplug([name], "", "eth0", "b/eth0"))
        assert here()
        in_host(lambda: plumbing.unplug([name], "", "eth0", "a/eth0"))
        assert not here() and "eth0" not in c1.ip("link", "show").stdout
