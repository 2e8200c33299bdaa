"""fastdp's local MACs follow the bridge table's announcements in a real namespace, and agree
with a full read of the table (weaved/datapath/fastdp/localmacs.py)."""

from __future__ import annotations

import json
import sys

import pytest

from tests.helpers import Netns

pytestmark = pytest.mark.timeout(60)

# Runs inside the namespace: the event socket listens to the namespace it was opened in.
FOLLOWER = """
import json, select, subprocess, sys
from weaved.datapath.fastdp.localmacs import BridgeIndex, LocalMacs, neigh_socket, read_changes
from weaved.datapath.fastdp.netlink import FastdpKernel

def sh(*argv):
    subprocess.run(argv, check=True)

for conf in ("all", "default"):  # no IPv6 chatter the bridge would learn MACs from
    sh("sysctl", "-qw", f"net.ipv6.conf.{conf}.disable_ipv6=1")
sh("ip", "link", "add", "weave", "type", "bridge")
sh("ip", "link", "set", "weave", "address", "02:00:00:00:01:01", "up")
for port in ("vethwepl1", "vethwe-tap"):
    sh("ip", "link", "add", port, "type", "veth", "peer", "name", port + "p")
    sh("ip", "link", "set", port, "master", "weave", "up")
    sh("ip", "link", "set", port + "p", "up")  # a port learns (takes dynamic entries) when up
sock = neigh_socket()
bridge = BridgeIndex("weave")
macs = LocalMacs("weave", ("vxlan-6784", "vethwe-tap"))
kernel = FastdpKernel()
macs.reset(kernel.bridge_rows("weave"), macs.mark())

def follow():
    # until the socket is quiet for 0.3 s
    while select.select([sock], [], [], 0.3)[0]:
        changes = read_changes(sock, bridge)
        assert changes is not None, "announcements lost"
        macs.apply(changes)
    full = LocalMacs("weave", ("vxlan-6784", "vethwe-tap"))
    full.reset(kernel.bridge_rows("weave"), full.mark())
    return sorted(macs.macs()), sorted(full.macs())

steps = {}
sh("bridge", "fdb", "add", "02:42:0a:00:00:01", "dev", "vethwepl1", "master", "dynamic")
sh("bridge", "fdb", "add", "02:42:0a:00:00:02", "dev", "vethwe-tap", "master", "dynamic")
steps["added"] = follow()
sh("bridge", "fdb", "replace", "02:42:0a:00:00:01", "dev", "vethwe-tap", "master", "dynamic")
steps["moved"] = follow()
sh("bridge", "fdb", "replace", "02:42:0a:00:00:02", "dev", "vethwepl1", "master", "dynamic")
sh("bridge", "fdb", "del", "02:42:0a:00:00:01", "dev", "vethwe-tap", "master")
steps["deleted"] = follow()
sh("ip", "link", "del", "vethwepl1")
steps["port gone"] = follow()
sh("ip", "link", "del", "weave")  # made again: a new index, its announcements still followed
sh("ip", "link", "add", "weave", "type", "bridge")
sh("ip", "link", "set", "weave", "address", "02:00:00:00:01:02", "up")
sh("ip", "link", "add", "vethwepl3", "type", "veth", "peer", "name", "vethwepl3p")
sh("ip", "link", "set", "vethwepl3", "master", "weave", "up")
sh("ip", "link", "set", "vethwepl3p", "up")
sh("bridge", "fdb", "add", "02:42:0a:00:00:03", "dev", "vethwepl3", "master", "dynamic")
steps["bridge made again"] = follow()
print(json.dumps(steps))
"""


def test_announcements_keep_local_macs_equal_to_a_full_read() -> None:
    with Netns("wfdm") as ns:
        out = ns.run([sys.executable, "-c", FOLLOWER], timeout=40).stdout
    steps = json.loads(out.strip().splitlines()[-1])
    bridge = "02:00:00:00:01:01"
    expected = {
        "added": [bridge, "02:42:0a:00:00:01"],
        "moved": [bridge],  # behind sleeve's TAP: a peer's MAC now
        "deleted": [bridge, "02:42:0a:00:00:02"],
        "port gone": [bridge],
        "bridge made again": ["02:00:00:00:01:02", "02:42:0a:00:00:03"],
    }
    for step, (followed, full) in steps.items():
        assert followed == full == expected[step], step
