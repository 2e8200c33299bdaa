"""Detaching some of a container's addresses when two are in one subnet (root).

The kernel makes the second address of a subnet on ethwe a *secondary* of the first; removing
the first (the primary) takes its secondaries with it unless the link's promote_secondaries
is on. Weave 2.8.1's detach then fails on the next address ("cannot assign requested
address") or silently drops one the container keeps. weaved removes secondaries first, turns
promote_secondaries on when a primary goes while a secondary stays, and counts an address
already gone as removed.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

import pytest

from tests.helpers import Netns, converged_daemon
from weaved.attach import plumbing
from weaved.attach.netns import opened, run_in_netns
from weaved.attach.target import netns_target

pytestmark = pytest.mark.timeout(180)

T = TypeVar("T")
Iface = ipaddress.IPv4Interface
SPEC = 'version: 1\npeer: {name: "3e:80:e7:5a:63:d5"}\nexpose: [{cidr: 10.2.1.1/24}]\n'


@pytest.fixture
def daemon(tmp_path: Path) -> Iterator[tuple[Netns, Path]]:
    with converged_daemon(tmp_path, SPEC, "wdsec-h") as running:
        yield running


def ethwe_addresses(c: Netns) -> list[str]:
    out = c.ip("-4", "-o", "addr", "show", "dev", "ethwe").stdout
    return [line.split()[3] for line in out.splitlines()]


def ping(c: Netns, addr: str) -> bool:
    return c.run(["ping", "-c1", "-W2", addr], check=False, timeout=10).returncode == 0


def test_detaching_the_primary_keeps_the_secondary_and_its_traffic(
    daemon: tuple[Netns, Path],
) -> None:
    ns, spec = daemon
    with Netns("wdsec-c") as c1, Netns("wdsec-c") as c2:
        ns.weaved(spec, "attach", "10.2.1.21/24", "10.2.1.22/24", c1.name)
        ns.weaved(spec, "attach", "10.2.1.23/24", c2.name)
        assert "secondary" in c1.ip("-4", "addr", "show", "dev", "ethwe").stdout

        done = ns.weaved(spec, "detach", "10.2.1.21/24", c1.name, check=False)
        assert done.returncode == 0, done.stderr
        assert done.stdout == "10.2.1.21\n"
        assert ethwe_addresses(c1) == ["10.2.1.22/24"]
        routes = c1.ip("-4", "route", "show", "dev", "ethwe").stdout
        assert "224.0.0.0/4" in routes and "10.2.1.0/24" in routes, routes
        assert ping(c2, "10.2.1.22") and ping(c1, "10.2.1.1")
        assert ns.weaved(spec, "ps", c1.name).stdout.split()[2:] == ["10.2.1.22/24"]

        # The daemon's record agrees: detaching the one left removes the veth.
        gone = ns.weaved(spec, "detach", "10.2.1.22/24", c1.name, check=False)
        assert gone.returncode == 0, gone.stderr
        assert c1.ip("link", "show", "ethwe", check=False).returncode != 0


def test_detaching_every_address_of_a_subnet_at_once(daemon: tuple[Netns, Path]) -> None:
    ns, spec = daemon
    with Netns("wdsec-c") as c1:
        ns.weaved(spec, "attach", "10.2.1.31/24", "10.2.1.32/24", "10.3.0.31/16", c1.name)
        done = ns.weaved(spec, "detach", "10.2.1.31/24", "10.2.1.32/24", c1.name, check=False)
        assert done.returncode == 0, done.stderr
        assert ethwe_addresses(c1) == ["10.3.0.31/16"]
        assert ns.weaved(spec, "ps", c1.name).stdout.split()[2:] == ["10.3.0.31/16"]


def test_the_library_detach_reports_what_the_kernel_has_left() -> None:
    """Without the daemon (a bare bridge of weaved's): the primary and one of its two
    secondaries go, the other secondary stays."""
    with Netns("wdsec-h") as host, Netns("wdsec-c") as c1:
        host.run(["ip", "link", "add", "weave", "type", "bridge"])
        host.run(["ip", "link", "set", "weave", "alias", "weaved", "up"])
        target = netns_target(c1.name)
        three = [Iface("10.2.1.41/24"), Iface("10.2.1.42/24"), Iface("10.2.1.43/24")]

        def in_host(fn: Callable[[], T]) -> T:
            with opened(f"/run/netns/{host.name}") as fd:
                return run_in_netns(fd, fn, timeout=60)

        in_host(lambda: plumbing.attach(target, three))
        d = in_host(lambda: plumbing.detach(target, [three[2], three[0]]))
        assert set(d.removed) == {three[0], three[2]} and not d.veth_removed
        assert d.remaining == (three[1],)
        assert ethwe_addresses(c1) == ["10.2.1.42/24"]
