"""Status views compared with the outputs of live Weave 2.8.1 networks."""

from __future__ import annotations

import json

import pytest

from tests.wire import read_output
from weaved.ipam.address import CIDR
from weaved.ipam.allocator import ConsensusStart, ObserverStart, SeedStart
from weaved.ipam.sim import SimNetwork, SimPeer
from weaved.ipam.status import (
    EntryStatus,
    IpamStatus,
    ip_json,
    ipam_status,
    report_ipam,
    status_ipam_text,
    status_line,
    status_section,
    unreachable_share,
)
from weaved.mesh.gossip_api import PeerName

H1, H2, H3 = 0x3E80E75A63A7, 0x2A9FF1998A21, 0xAEC0016F34D5
UNIVERSE = CIDR.parse_subnet("10.32.0.0/12")

pytestmark = pytest.mark.timeout(60)


def output(path: str) -> str:
    return read_output(path)


def status_of(peer: SimPeer) -> IpamStatus:
    return ipam_status(peer.allocator, UNIVERSE)


def three_peers() -> tuple[SimNetwork, SimPeer, SimPeer, SimPeer]:
    net = SimNetwork(UNIVERSE)
    seed = SeedStart((PeerName(H1),))
    a, b, c = (net.add_peer(n, f"host{i}", seed) for i, n in enumerate((H1, H2, H3), 1))
    net.connect(H2, H1)
    net.connect(H3, H2)
    net.run()
    a.allocator.allocate("cA", UNIVERSE, net.now)
    c.allocator.allocate("cC", UNIVERSE, net.now)
    net.run()
    b.allocator.allocate("cB", UNIVERSE, net.now)
    net.run()
    a.allocator.allocate("weave:expose", UNIVERSE, net.now, is_container=False)
    net.gossip_round()
    net.run()
    return net, a, b, c


def two_peers() -> tuple[SimNetwork, SimPeer, SimPeer]:
    net = SimNetwork(UNIVERSE)
    h1 = net.add_peer(H1, "host1", ConsensusStart(2))
    h2 = net.add_peer(H2, "host2", ConsensusStart(2))
    net.connect(H2, H1)
    net.run()
    h1.allocator.allocate("c1", UNIVERSE, net.now)
    net.run()
    h2.allocator.allocate("c2", UNIVERSE, net.now)
    net.gossip_round()
    net.run()
    return net, h1, h2


def test_three_peers_status_ipam_text() -> None:
    _, a, b, c = three_peers()
    assert status_ipam_text(status_of(a)) == output("three-peers-line/host1/status-ipam.txt")
    assert status_ipam_text(status_of(b)) == output("three-peers-line/host2/status-ipam.txt")
    assert status_ipam_text(status_of(c)) == output("three-peers-line/host3/status-ipam.txt")


def test_unreachable_peer_after_stop() -> None:
    net, a, b, _ = three_peers()
    net.stop(H3)
    assert status_ipam_text(status_of(a)) == output(
        "three-peers-line/host1-after-host3-stopped/status-ipam.txt"
    )
    # host2's capture lists the others in Go map order; compare the lines as a set.
    want = output("three-peers-line/host2-after-host3-stopped/status-ipam.txt").splitlines()
    got = status_ipam_text(status_of(b)).splitlines()
    assert got[0] == want[0] and sorted(got[1:]) == sorted(want[1:])
    share = unreachable_share(status_of(a))
    assert [s.nickname for s in share.peers] == ["host3"]
    assert (share.ips, share.fraction) == (262144, 0.25)


def test_three_peers_report_and_ip_json() -> None:
    _net, a, _, _ = three_peers()
    want = json.loads(output("three-peers-line/host1/report.json"))["IPAM"]
    got = report_ipam(status_of(a))
    # Versions of other peers' entries depend on when gossip arrived; ours and the rest match.
    for e in want["Entries"] + got["Entries"]:
        if e["Peer"] != "3e:80:e7:5a:63:a7":
            e["Version"] = None
    assert got == want
    # Go's json.Encoder ends the body with a newline.
    body = json.dumps(ip_json(status_of(a)), separators=(",", ":")) + "\n"
    assert body == output("three-peers-line/host1/ip.json")


def test_two_peers_outputs_and_hand_off() -> None:
    net, h1, h2 = two_peers()
    assert status_ipam_text(status_of(h1)) == output("two-peers-plain/host1/status-ipam.txt")
    assert status_ipam_text(status_of(h2)) == output("two-peers-plain/host2/status-ipam.txt")
    assert (
        report_ipam(status_of(h1))
        == json.loads(output("two-peers-plain/host1/report.json"))["IPAM"]
    )
    h2.allocator.shutdown(net.now)
    net.run()
    net.stop(H2)
    assert status_ipam_text(status_of(h1)) == output(
        "two-peers-plain/host1-after-host2-left/status-ipam.txt"
    )


def test_status_section_matches_weave_status() -> None:
    _, a, _, _ = three_peers()
    text = output("three-peers-line/host1/status.txt")
    block = text[text.index("        Service: ipam") :].split("\n\n")[0] + "\n"
    assert status_section(status_of(a)) == block


def test_status_lines() -> None:
    net = SimNetwork(UNIVERSE)
    h1 = net.add_peer(H1, "host1", ConsensusStart(3))
    assert status_line(status_of(h1)) == "idle"
    h1.allocator.allocate("c", UNIVERSE, net.now)
    assert status_line(status_of(h1)) == "awaiting consensus (quorum: 2, known: 1)"
    obs = net.add_peer(H3, "obs", ObserverStart())
    obs.allocator.allocate("c", UNIVERSE, net.now)
    assert status_line(status_of(obs)) == "priming"
    report = report_ipam(status_of(obs))
    assert report["Paxos"] == {"Elector": False, "KnownNodes": 0, "Quorum": 0}
    assert report["PendingAllocates"] == ["c 10.32.0.0/12"]


def test_all_owners_unreachable_and_waiting() -> None:
    base = IpamStatus(
        our_name=PeerName(H1),
        paxos=None,
        range=UNIVERSE,
        default_subnet=UNIVERSE,
        active_ips=0,
        entries=(EntryStatus(UNIVERSE.addr, UNIVERSE.size, PeerName(H2), "host2", False, 0),),
        pending_claims=(),
        pending_allocates=(),
        owned=(),
    )
    assert status_line(base).startswith("all IP ranges owned by unreachable peers")
    assert status_ipam_text(base) == (
        "2a:9f:f1:99:8a:21(host2)               1048576 IPs (100.0% of total) - unreachable!\n"
    )


def test_percentages_are_zero_padded() -> None:
    s = IpamStatus(
        our_name=PeerName(H1),
        paxos=None,
        range=UNIVERSE,
        default_subnet=UNIVERSE,
        active_ips=3,
        entries=(EntryStatus(UNIVERSE.addr, UNIVERSE.size // 32, PeerName(H1), "host1", True, 0),),
        pending_claims=(),
        pending_allocates=(),
        owned=(),
    )
    assert "  32768 IPs (03.1% of total) (3 active)\n" in status_ipam_text(s)
