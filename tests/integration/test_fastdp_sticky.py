"""The bridge entries fastdp puts in for a peer's MACs stay on the VXLAN port whatever frames
the bridge sees elsewhere (real hosts in namespaces, as test_fastdp_netns.py).

The bridge moves a static entry that is not sticky to any port a frame from its MAC comes in
on. As a link changed over from sleeve to fastdp, one of the peer's frames still arriving
through sleeve's TAP moved the entry to the TAP: every frame for that container then went
into sleeve, which no longer carries that peer, until a converge put the entry back (none
was due: up to the resync interval). test_fastdp_flows_outlive_a_daemon_restart's first ping
failed for 10 s so, about once in a full CI run. Here the frame comes in on a container's port
(the kernel treats every port alike, and a container sending with another's MAC must not
take its traffic either).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.helpers import wait_for
from tests.integration.test_fastdp_netns import Lab, ping, sleeve_datapath_available

pytestmark = pytest.mark.timeout(120)

SPOOF = r"""
import socket, sys
mac = bytes.fromhex(sys.argv[1].replace(":", ""))
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
s.bind(("eth0", 0))
for _ in range(3):  # broadcast, from the other host's container's MAC, a local EtherType
    s.send(b"\xff" * 6 + mac + b"\x88\xb5" + b"\0" * 46)
"""


def test_a_peers_mac_seen_on_another_port_stays_behind_the_tunnel(tmp_path: Path) -> None:
    with Lab(tmp_path, 2, None, sleeve_datapath_available()) as lab:
        h1, h2 = lab.hosts
        lab.wait_using(h1, h2, "fastdp")
        lab.wait_using(h2, h1, "fastdp")
        c2 = h2.container_mac()
        wait_for(lambda: f"bridge {c2}" in h1.fdb_keys(), timeout=10, interval=0.2)
        assert wait_for(lambda: ping(h1, h2), timeout=10, interval=0.2) >= 0
        h1.container.run(["python3", "-c", SPOOF, c2])
        assert f"bridge {c2}" in h1.fdb_keys(), h1.ns.run(["bridge", "fdb", "show"]).stdout
        assert ping(h1, h2)
        plan = h1.ns.weaved(h1.spec, "plan", "--detailed-exitcode", check=False)
        assert plan.returncode == 0, plan.stdout
