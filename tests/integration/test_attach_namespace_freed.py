"""A container attached by the daemon and then gone leaves nothing behind: the daemon holds no
reference to its namespace, so the kernel destroys the namespace and with it the veth pair.
The first attach after a start started the daemon's announcement thread from inside that
container's namespace, and the thread stayed there: that container's veth (its address still
on ethwe, on the bridge) outlived it for as long as the daemon ran."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers import Netns, converged_daemon, sh, wait_for
from weaved.attach.target import netns_target

pytestmark = pytest.mark.timeout(180)

SPEC = 'version: 1\npeer: {name: "3e:80:e7:5a:63:c7"}\nexpose: [{cidr: 10.2.1.1/24}]\n'


@pytest.fixture
def daemon(tmp_path: Path) -> Iterator[tuple[Netns, Path]]:
    with converged_daemon(tmp_path, SPEC, "wakg-h") as running:
        yield running


def test_the_first_containers_namespace_is_freed_when_it_is_gone(
    daemon: tuple[Netns, Path],
) -> None:
    ns, spec = daemon
    with Netns("wakg-c1") as first, Netns("wakg-c2") as second:
        for c, ip in ((first, "10.2.1.41/24"), (second, "10.2.1.42/24")):
            ns.weaved(spec, "attach", ip, c.name)
        veths = [netns_target(c.name).veth for c in (first, second)]
        for c in (first, second):
            sh(["ip", "netns", "delete", c.name])

        def bridge_ports() -> str:
            return ns.ip("-o", "link", "show", "master", "weave").stdout

        wait_for(lambda: not any(v in bridge_ports() for v in veths), timeout=10)
