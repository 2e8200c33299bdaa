"""weaved's own route-netlink decoder (dataplane/rtnl.py) against pyroute2's full decoding, in a
fresh namespace holding what weaved observes: a bridge with ports (flags set), links that are
no ports, labelled addresses, routes of several tables and protocols, the bridge's FDB. Enough
links that a dump spans many receive buffers."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pyroute2 import NetNS

from tests.helpers import Netns, sh
from weaved.attach.netns import opened, run_in_netns
from weaved.datapath.fastdp.netlink import FastdpKernel
from weaved.dataplane.rtnl import Rtnl

pytestmark = pytest.mark.timeout(120)
PORTS = 300


@pytest.fixture
def host(tmp_path: Path) -> Iterator[tuple[Netns, Rtnl, Any]]:
    with Netns("wrtnl") as ns:
        batch = [
            "link add weave type bridge",
            "link set weave alias weaved up",
            "link add other type bridge",
            "addr add 10.2.1.1/24 dev weave label weave:wd",
            "addr add 10.2.2.1/24 dev weave label weave:x",
            "addr add 10.9.0.1/16 dev other",
        ]
        for i in range(PORTS):
            batch.append(f"link add vethwepl{i} type veth peer name peer{i}")
            if i % 3 == 0:
                batch.append(f"link set vethwepl{i} master weave up")
            elif i % 3 == 1:
                batch.append(f"link set vethwepl{i} master other")
        batch += [
            "link set vethwepl0 type bridge_slave hairpin on learning off flood off isolated on",
            "link set vethwepl3 type bridge_slave hairpin off learning on",
            "route add 10.3.0.0/16 dev weave proto 87 scope link src 10.2.1.1",
            "route add default dev vethwepl0",
            "route add 192.0.2.0/24 dev vethwepl3 proto static mtu 1400",
            "route add 198.51.100.0/24 dev weave table 100",
            "link set peer0 up",
            "link set peer3 up",
        ]
        script = tmp_path / "links.batch"
        script.write_text("\n".join(batch) + "\n")
        sh(["ip", "-n", ns.name, "-batch", str(script)])
        ns.run(["bridge", "fdb", "add", "02:42:0a:00:00:09", "dev", "vethwepl0", "master"])
        with opened(f"/run/netns/{ns.name}") as fd:
            rtnl = run_in_netns(fd, Rtnl)
        ipr = NetNS(ns.name)
        try:
            yield ns, rtnl, ipr
        finally:
            rtnl.close()
            ipr.close()


def test_links_match_pyroute2(host: tuple[Netns, Rtnl, Any]) -> None:
    _, rtnl, ipr = host
    mine = {link.index: link for link in rtnl.links()}
    theirs = list(ipr.get_links())
    assert len(mine) == len(theirs) >= 2 * PORTS
    for msg in theirs:
        link = mine[int(msg["index"])]
        info = msg.get_attr("IFLA_LINKINFO")
        assert (link.name, link.flags, link.mtu, link.master, link.mac, link.alias, link.kind) == (
            msg.get_attr("IFLA_IFNAME"),
            msg["flags"],
            msg.get_attr("IFLA_MTU"),
            msg.get_attr("IFLA_MASTER") or 0,
            msg.get_attr("IFLA_ADDRESS"),
            msg.get_attr("IFLA_IFALIAS") or "",
            (info.get_attr("IFLA_INFO_KIND") if info is not None else None) or "",
        )
    ports = {int(m["index"]): m.get_attr("IFLA_PROTINFO") for m in ipr.link("dump", family=7)}
    names = {"hairpin": "MODE", "learning": "LEARNING", "flood": "UNICAST_FLOOD"}
    names["isolated"] = "ISOLATED"
    for index, link in mine.items():
        info = ports.get(index)
        if info is None:
            assert link.port is None, link
            continue
        for flag, attr in names.items():
            assert link.port_flag(flag) == bool(info.get_attr(f"IFLA_BRPORT_{attr}")), (link, flag)
    by_name = {link.name: link for link in mine.values()}
    assert dict(by_name["vethwepl0"].port or ()) == {
        "hairpin": True, "learning": False, "flood": False, "isolated": True
    }  # fmt: skip
    assert by_name["vethwepl2"].port is None and by_name["vethwepl2"].master == 0


def test_one_link_by_name_or_index(host: tuple[Netns, Rtnl, Any]) -> None:
    _, rtnl, _ = host
    weave = rtnl.link(name="weave")
    assert weave is not None and weave.kind == "bridge" and weave.alias == "weaved"
    assert rtnl.link(weave.index) == weave
    assert rtnl.link(name="nosuchlink") is None


def metric_mtu(route: Any) -> int:
    metrics = route.get_attr("RTA_METRICS")
    return int(metrics.get_attr("RTAX_MTU") or 0) if metrics is not None else 0


def test_addresses_and_routes_match_pyroute2(host: tuple[Netns, Rtnl, Any]) -> None:
    _, rtnl, ipr = host
    bridge = ipr.link_lookup(ifname="weave")[0]
    mine = sorted((a.address, a.prefixlen, a.label) for a in rtnl.addresses(bridge))
    theirs = sorted(
        (m.get_attr("IFA_ADDRESS"), m["prefixlen"], m.get_attr("IFA_LABEL"))
        for m in ipr.get_addr(family=socket.AF_INET, index=bridge)
    )
    assert mine == theirs == [("10.2.1.1", 24, "weave:wd"), ("10.2.2.1", 24, "weave:x")]
    routes = sorted(
        (r.dst, r.dst_len, r.proto, r.scope, r.type, r.oif, r.prefsrc, r.mtu)
        for r in rtnl.routes(254)
    )
    expected = sorted(
        (
            m.get_attr("RTA_DST") or "0.0.0.0",
            m["dst_len"],
            m["proto"],
            m["scope"],
            m["type"],
            m.get_attr("RTA_OIF") or 0,
            m.get_attr("RTA_PREFSRC") or "",
            metric_mtu(m),
        )
        for m in ipr.get_routes(family=socket.AF_INET, table=254)
    )
    assert routes == expected
    assert ("10.3.0.0", 16, 87, 253, 1, bridge, "10.2.1.1", 0) in routes
    assert [r.mtu for r in rtnl.routes(254) if r.dst == "192.0.2.0"] == [1400]
    assert all(r.table == 100 for r in rtnl.routes(100)) and len(rtnl.routes(100)) == 1


def test_bridge_fdb_matches_pyroute2(host: tuple[Netns, Rtnl, Any]) -> None:
    _, rtnl, ipr = host
    bridge = ipr.link_lookup(ifname="weave")[0]
    mine = sorted(
        (f.ifindex, f.mac, f.state, f.dst) for f in rtnl.fdb(master=bridge) if f.master == bridge
    )
    theirs = sorted(
        (int(m["ifindex"]), m.get_attr("NDA_LLADDR"), int(m["state"]), m.get_attr("NDA_DST"))
        for m in ipr.fdb("dump", master=bridge)
    )
    assert mine == theirs
    assert any(mac == "02:42:0a:00:00:09" for _, mac, _, _ in mine)


def test_fastdp_takes_the_default_routes_mtu_with_no_peer(host: tuple[Netns, Rtnl, Any]) -> None:
    """With no peer to ask the kernel about, the underlay MTU is the default route's: its own
    MTU metric, else its device's (read through rtnl, not pyroute2's decoding)."""
    ns, _, _ = host
    ns.run(["ip", "link", "set", "vethwepl0", "mtu", "1420"])
    with opened(f"/run/netns/{ns.name}") as fd:
        kernel = run_in_netns(fd, FastdpKernel)
        try:
            assert run_in_netns(fd, lambda: kernel.underlay_mtu([])) == 1420
            ns.run(["ip", "route", "change", "default", "dev", "vethwepl0", "mtu", "1300"])
            assert run_in_netns(fd, lambda: kernel.underlay_mtu([])) == 1300
        finally:
            run_in_netns(fd, kernel.close)


def test_a_links_ipv6_switch_and_accept_ra_come_with_its_message(
    host: tuple[Netns, Rtnl, Any],
) -> None:
    """Read from the link dump's IPv6 devconf values and address generation mode (no /proc
    read per link), as /proc has them: IPv6 of its own is off when disable_ipv6 is 1 or it
    makes no link-local address (addr_gen_mode 1, none)."""
    ns, rtnl, _ = host
    ns.run(["sysctl", "-qw", "net.ipv6.conf.vethwepl1.disable_ipv6=1"])
    ns.run(["sysctl", "-qw", "net.ipv6.conf.vethwepl2.accept_ra=0"])
    ns.ip("link", "set", "dev", "vethwepl3", "addrgenmode", "none")
    for link in rtnl.links():
        conf = f"/proc/sys/net/ipv6/conf/{link.name}/"
        off = ns.run(["cat", conf + "disable_ipv6"]).stdout.strip()
        gen = ns.run(["cat", conf + "addr_gen_mode"]).stdout.strip()
        accept_ra = ns.run(["cat", conf + "accept_ra"]).stdout.strip()
        assert (link.ipv6, link.accept_ra) == (off == "0" and gen != "1", int(accept_ra)), link
    by_name = {link.name: link for link in rtnl.links()}
    assert by_name["vethwepl1"].ipv6 is False and by_name["vethwepl2"].accept_ra == 0
    assert by_name["vethwepl3"].ipv6 is False and by_name["vethwepl2"].ipv6 is True


def test_promote_secondaries_and_secondary_addresses(host: tuple[Netns, Rtnl, Any]) -> None:
    """A link's promote_secondaries comes with its message (IPv4 devconf values), and an
    address says whether it is a secondary, as pyroute2 and /proc have them."""
    ns, rtnl, ipr = host
    ns.run(["sysctl", "-qw", "net.ipv4.conf.vethwepl4.promote_secondaries=1"])
    ns.ip("addr", "add", "10.2.1.2/24", "dev", "weave")
    by_name = {link.name: link for link in rtnl.links()}
    for name in ("weave", "other", "vethwepl4", "vethwepl5", "peer0"):
        value = ns.run(["cat", f"/proc/sys/net/ipv4/conf/{name}/promote_secondaries"]).stdout
        assert by_name[name].promote_secondaries is (value.strip() == "1"), name
    bridge = by_name["weave"].index
    mine = sorted((a.address, a.secondary) for a in rtnl.addresses(bridge))
    theirs = sorted(
        (m.get_attr("IFA_ADDRESS"), bool(m["flags"] & 0x01))
        for m in ipr.get_addr(family=socket.AF_INET, index=bridge)
    )
    assert mine == theirs == [("10.2.1.1", False), ("10.2.1.2", True), ("10.2.2.1", False)]
