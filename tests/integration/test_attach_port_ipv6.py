"""A container's host-side veth has no IPv6 of its own (a bridge port never uses its own IP stack;
with a link-local address each port added routes to the host's IPv6 FIB that every port coming
up made the kernel walk): made with addr_gen_mode none (netlink), planned as the port's
`ipv6: off`, repaired (disable_ipv6) when someone gives it IPv6 again, while the
containers keep their own IPv6 on ethwe. Inside, ethwe gets Weave's ARP
settings (set by netlink, not through /proc/sys) and no router advertisements."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers import Netns, converged_daemon, wait_for
from weaved.attach.target import netns_target

pytestmark = pytest.mark.timeout(180)

SPEC = 'version: 1\npeer: {name: "3e:80:e7:5a:63:c4"}\nexpose: [{cidr: 10.2.1.1/24}]\n'


@pytest.fixture
def daemon(tmp_path: Path) -> Iterator[tuple[Netns, Path]]:
    with converged_daemon(tmp_path, SPEC, "wak6-h") as running:
        yield running


def proc_sys(ns: Netns, path: str) -> str:
    return ns.run(["cat", f"/proc/sys/{path}"]).stdout.strip()


def link_local(ns: Netns) -> str:
    out = ns.ip("-6", "-o", "addr", "show", "dev", "ethwe", "scope", "link").stdout
    found = re.search(r"inet6 (fe80::[0-9a-f:]+)/64", out)
    assert found is not None, out
    return found.group(1)


def plan_changes(ns: Netns, spec: Path) -> dict[str, dict[str, object]]:
    data = json.loads(ns.weaved(spec, "plan", "--json").stdout)
    return {c["key"]: c for c in data["changes"]}


def test_host_side_ipv6_off_planned_repaired_and_containers_talk_ipv6(
    daemon: tuple[Netns, Path],
) -> None:
    ns, spec = daemon
    with Netns("wak6-c1") as c1, Netns("wak6-c2") as c2:
        for c, ip in ((c1, "10.2.1.31/24"), (c2, "10.2.1.32/24")):
            ns.weaved(spec, "attach", ip, c.name)
        veth = netns_target(c1.name).veth
        # The port makes no IPv6 address, so it has none and the host no unicast route for it.
        assert proc_sys(ns, f"net/ipv6/conf/{veth}/addr_gen_mode") == "1"
        assert ns.ip("-6", "addr", "show", "dev", veth).stdout.strip() == ""
        routes = ns.ip("-6", "route", "show", "table", "all", "dev", veth).stdout.splitlines()
        assert all(r.startswith("multicast ff00::/8") for r in routes), routes
        # Inside: Weave's ARP settings and no router advertisements on ethwe.
        neigh = "net/ipv4/neigh/ethwe/"
        assert proc_sys(c1, neigh + "base_reachable_time") == "5"
        assert proc_sys(c1, neigh + "delay_first_probe_time") == "2"
        assert proc_sys(c1, neigh + "ucast_solicit") == "1"
        assert proc_sys(c1, "net/ipv6/conf/ethwe/accept_ra") == "0"

        # The containers keep their own IPv6 on ethwe (a link-local address past DAD); the
        # bridge forwards no IPv6 between them (its isolate-ipv6 rule, unchanged).
        wait_for(lambda: "tentative" not in c1.ip("-6", "addr", "show", "dev", "ethwe").stdout)
        ping = ["ping", "-6", "-c1", "-W1", link_local(c1) + "%ethwe"]
        assert c1.run(ping, check=False, timeout=10).returncode == 0

        assert f"port/{veth}" not in plan_changes(ns, spec)
        ns.ip("link", "set", "dev", veth, "addrgenmode", "eui64")  # by hand
        ns.ip("link", "set", "dev", veth, "down")
        ns.ip("link", "set", "dev", veth, "up")  # now it makes its link-local address
        wait_for(lambda: "fe80::" in ns.ip("-6", "addr", "show", "dev", veth).stdout)
        text = ns.weaved(spec, "plan").stdout
        assert f"~ port/{veth}  ipv6: on → off" in text, text
        ns.weaved(spec, "apply")
        assert proc_sys(ns, f"net/ipv6/conf/{veth}/disable_ipv6") == "1"
        assert ns.ip("-6", "addr", "show", "dev", veth).stdout.strip() == ""
        assert ns.weaved(spec, "plan", "--detailed-exitcode").returncode == 0
        assert c1.run(ping, check=False, timeout=10).returncode == 0


def test_attaching_again_changes_nothing_inside(daemon: tuple[Netns, Path]) -> None:
    """The ARP settings and accept_ra are read back (netlink) and not written again; one
    changed by hand is set again by the next attach."""
    ns, spec = daemon
    with Netns("wak6-c3") as c:
        ns.weaved(spec, "attach", "10.2.1.33/24", c.name)
        c.run(["sysctl", "-qw", "net.ipv4.neigh.ethwe.ucast_solicit=3"])
        log = spec.parent / "daemon.log"
        before = log.read_text()
        ns.weaved(spec, "attach", "10.2.1.33/24", c.name)
        assert proc_sys(c, "net/ipv4/neigh/ethwe/ucast_solicit") == "1"
        new = log.read_text()[len(before) :]
        assert "ethwe: arp ucast_solicit=1" in new, new
        assert "base_reachable_time" not in new and "accept_ra" not in new, new
