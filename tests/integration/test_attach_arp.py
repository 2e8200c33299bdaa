"""The gratuitous ARP an attach leaves to a background thread (root: a packet socket), and that
thread's namespace: the process's, not the first attached container's."""

from __future__ import annotations

import ipaddress
import logging
import os
import sys
import time
from pathlib import Path

import pytest

from tests.helpers import REPO, Netns, converged_daemon, sh, wait_for
from weaved.attach.arp import announce_soon
from weaved.attach.target import netns_target


def test_an_announcement_for_an_interface_gone_meanwhile_is_no_warning(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A container detached right after its attach (ethwe gone before the delayed
    announcement left) is no problem to warn about: ten containers attached and detached in
    a loop logged a WARNING a few times a minute."""
    caplog.set_level(logging.DEBUG, logger="weaved.attach.arp")
    announce_soon("wdarpgone0", "02:00:00:00:00:01", [ipaddress.IPv4Address("10.2.1.9")])
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and not caplog.records:
        time.sleep(0.01)
    assert [r.levelname for r in caplog.records] == ["DEBUG"], caplog.text
    assert "wdarpgone0" in caplog.text


ANNOUNCE_INSIDE = """
import ipaddress, subprocess, sys, threading, time
from tests.helpers import REPO, Netns, converged_daemon, sh, wait_for
from weaved.attach.target import netns_target
from weaved.attach.arp import announce_soon
from weaved.attach.netns import opened, run_in_netns

container, host = sys.argv[1], sys.argv[2]

def attach_like():  # an attach's work: on a worker thread, inside the container
    with opened(f"/run/netns/{container}") as fd:
        run_in_netns(fd, lambda: announce_soon(
            "ethwe", "02:00:00:00:00:02", [ipaddress.IPv4Address("10.2.1.9")]))

worker = threading.Thread(target=attach_like)
worker.start()
worker.join()
time.sleep(0.5)  # the announcement has left
subprocess.run(["ip", "netns", "delete", container], check=True)  # the container is gone
deadline = time.monotonic() + 10
while time.monotonic() < deadline:
    show = subprocess.run(["ip", "-n", host, "link", "show", "vhost"], capture_output=True)
    if show.returncode != 0:
        print("freed")
        break
    time.sleep(0.1)
else:
    print("held")
"""


def test_the_announcing_thread_does_not_hold_the_first_containers_namespace() -> None:
    """The background thread is started by the first announcement, from work inside a
    container's namespace. It moves to the process's namespace: it held that first
    container's namespace for good (its veth stayed on the host after the container was
    gone). In a process of its own, so that its first announcement starts the thread."""
    with Netns("wdarph") as host, Netns("wdarpc") as container:
        host.ip("link", "add", "vhost", "type", "veth", "peer", "ethwe", "netns", container.name)
        container.ip("link", "set", "ethwe", "up")
        run = sh(
            [sys.executable, "-c", ANNOUNCE_INSIDE, container.name, host.name],
            env={**os.environ, "PYTHONPATH": str(REPO)},
            timeout=60,
        )
        assert run.stdout.strip() == "freed", run.stdout + run.stderr


def test_a_container_attached_by_the_daemon_leaves_nothing_when_it_is_gone(
    tmp_path: Path,
) -> None:
    """The same, as a user meets it: the first container the daemon attached after its start
    kept its veth on the bridge (and its address on ethwe) after its namespace was deleted,
    for as long as the daemon ran. Now the kernel frees both containers' pairs."""
    spec = 'version: 1\npeer: {name: "3e:80:e7:5a:63:c7"}\nexpose: [{cidr: 10.2.1.1/24}]\n'
    with (
        converged_daemon(tmp_path, spec, "wakg-h") as (ns, spec_path),
        Netns("wakg-c1") as first,
        Netns("wakg-c2") as second,
    ):
        for c, ip in ((first, "10.2.1.41/24"), (second, "10.2.1.42/24")):
            ns.weaved(spec_path, "attach", ip, c.name)
        veths = [netns_target(c.name).veth for c in (first, second)]
        for c in (first, second):
            sh(["ip", "netns", "delete", c.name])

        def on_the_bridge() -> list[str]:
            ports = ns.ip("-o", "link", "show", "master", "weave").stdout
            return [v for v in veths if v in ports]

        wait_for(lambda: not on_the_bridge(), timeout=10)
