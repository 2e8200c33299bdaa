"""The sleeve data path for real (root): hosts and "containers" in network namespaces
(tests.tools.sleeve_testbed), each host running a router and the data path as its own
process, traffic between containers through the TAP on each host's `weave` bridge.

Two hosts: ping, a 10 000-byte ping, TCP (iperf3) and a DF transfer, plain, encrypted (with
replays and forgeries counted), with offloads and mixed; the TAP recreated after deletion;
ICMP "fragmentation needed" when a container's MTU exceeds the overlay's. Three hosts in a
line (A and C cannot reach each other): relayed unicast, ARP broadcast and a multicast group
on every host, plain and encrypted. Everything is removed by name and PID.
"""

from __future__ import annotations

import json
import secrets
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.tools import python_env
from tests.tools.sleeve_testbed import Container, Testbed

pytestmark = pytest.mark.timeout(300)

PASSWORD = "s3cret-test-password"

TCP_SERVER = r"""
import hashlib, socket, sys
srv = socket.socket(); srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
srv.bind((sys.argv[1], 7000)); srv.listen(1); srv.settimeout(30)
conn, _ = srv.accept(); conn.settimeout(30)
h = hashlib.sha256(); n = 0
while True:
    data = conn.recv(65536)
    if not data:
        break
    h.update(data); n += len(data)
conn.sendall(f"{n} {h.hexdigest()}".encode()); conn.close()
"""

TCP_CLIENT = r"""
import hashlib, random, socket, sys
size = int(sys.argv[2])
data = random.Random(7).randbytes(size)
s = socket.socket()
s.setsockopt(socket.IPPROTO_IP, 10, 2)  # IP_MTU_DISCOVER = IP_PMTUDISC_DO: every segment DF
s.settimeout(30); s.connect((sys.argv[1], 7000)); s.sendall(data); s.shutdown(socket.SHUT_WR)
reply = b""
while chunk := s.recv(1000):
    reply += chunk
assert reply.decode() == f"{size} {hashlib.sha256(data).hexdigest()}", reply
print("ok")
"""

MCAST_RECEIVER = r"""
import socket, struct, sys, time
group, local = sys.argv[1], sys.argv[2]
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("0.0.0.0", 7001))
s.setsockopt(socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP,
             socket.inet_aton(group) + socket.inet_aton(local))
print("joined", flush=True)
s.settimeout(float(sys.argv[3]))
got = set()
try:
    while True:
        got.add(s.recv(100).decode())
except OSError:
    pass
print(" ".join(sorted(got)), flush=True)
"""

MCAST_SENDER = r"""
import socket, sys, time
group, local, count = sys.argv[1], sys.argv[2], int(sys.argv[3])
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_TTL, 2)
s.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF, socket.inet_aton(local))
for i in range(count):
    s.sendto(f"m{i}".encode(), (group, 7001))
    time.sleep(0.1)
"""

REPLAYER = r"""
import socket, struct, sys, time
# Capture one sleeve datagram this host sends (a data frame, not a heartbeat), then send
# its payload again to the peer, twice: a replay. Then one forgery with the same sender.
peer = sys.argv[1]
# ETH_P_ALL: only those taps see outgoing packets.
raw = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(0x0003))
raw.bind(("eth0", 0)); raw.settimeout(0.5)
deadline = time.monotonic() + 20
payload = None
while payload is None and time.monotonic() < deadline:
    try:
        pkt = raw.recv(70000)
    except OSError:
        continue
    if pkt[12:14] != b"\x08\x00":
        continue
    ihl = (pkt[14] & 15) * 4
    if pkt[23] != 17 or socket.inet_ntoa(pkt[30:34]) != peer:
        continue
    udp = pkt[14 + ihl:]
    if struct.unpack(">H", udp[2:4])[0] == 6783 and len(udp) - 8 > 150:
        payload = udp[8:]
assert payload is not None, "no sleeve datagram seen"
out = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
for _ in range(2):
    out.sendto(payload, (peer, 6783))
forged = bytearray(payload); forged[-1] ^= 0x55
out.sendto(bytes(forged), (peer, 6783))
print("sent")
"""


# --- helpers ---------------------------------------------------------------------------------


def tag(prefix: str) -> str:
    """A namespace prefix of this run's own (runs in parallel never meet)."""
    return f"{prefix}{secrets.token_hex(2)}"


def py(
    c: Container, script: str, *args: str, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        c.argv(sys.executable, "-c", script, *args),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def transfer(bed: Testbed, src: Container, dst: Container, size: int = 10_000) -> None:
    server = subprocess.Popen(
        dst.argv(sys.executable, "-c", TCP_SERVER, dst.address),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        time.sleep(0.4)
        client = py(src, TCP_CLIENT, dst.address, str(size))
        assert client.returncode == 0 and "ok" in client.stdout, client.stderr[-800:]
    finally:
        server.wait(30)


def iperf(bed: Testbed, src: Container, dst: Container, seconds: int = 2) -> float:
    server = subprocess.Popen(dst.argv("iperf3", "-s", "-1"), stdout=subprocess.DEVNULL)
    try:
        time.sleep(0.4)
        out = bed.run_in(src, "iperf3", "-c", dst.address, "-t", str(seconds), "-J", timeout=60)
        data = json.loads(out.stdout)
        return float(data["end"]["sum_received"]["bits_per_second"])
    finally:
        server.wait(30)


def counters(bed: Testbed, host: int) -> dict[str, Any]:
    data: dict[str, Any] = bed.status(host).get("datapath", {}).get("Counters", {})
    return data


def start(
    bed: Testbed,
    pairs: list[tuple[int, list[int]]],
    *,
    password: str | None,
    offload: bool | list[bool],
) -> None:
    offloads = offload if isinstance(offload, list) else [offload] * len(bed.hosts)
    for index, targets in pairs:
        bed.start_peer(index, targets, password=password, offload=offloads[index - 1])
    routes = [(x, y) for x in range(1, len(pairs) + 1) for y in range(1, len(pairs) + 1) if x != y]
    bed.wait_routes(routes, timeout=60)


def stop_all(bed: Testbed) -> None:
    for host in bed.hosts:
        bed.stop_peer(host.index)


@pytest.fixture(scope="module")
def bed2(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Testbed]:
    with Testbed(tag("wd2"), 2, tmp_path_factory.mktemp("sleeve2")) as bed:
        yield bed


@pytest.fixture(scope="module")
def bed3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Testbed]:
    # host1 and host3 cannot reach each other over the underlay: host2 relays.
    with Testbed(
        tag("wd3"), 3, tmp_path_factory.mktemp("sleeve3"), containers=2, unreachable=[(1, 3)]
    ) as bed:
        yield bed


@pytest.fixture(scope="module")
def bed_jumbo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Testbed]:
    # Containers with an MTU far above the overlay's (as Weave's 65535 bridge in sleeve mode).
    with Testbed(tag("wdj"), 2, tmp_path_factory.mktemp("sleevej"), bridge_mtu=9000) as bed:
        yield bed


# --- two hosts -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("password", "offload"),
    [(None, False), (PASSWORD, False), (None, True), (PASSWORD, True)],
    ids=["plain", "encrypted", "offload", "offload-encrypted"],
)
def test_two_hosts(bed2: Testbed, password: str | None, offload: bool) -> None:
    start(bed2, [(1, []), (2, [1])], password=password, offload=offload)
    try:
        c1, c2 = bed2.container(1), bed2.container(2)
        assert bed2.ping(c1, c2), bed2.log_tail(1)
        assert bed2.ping(c2, c1, "-s", "10000"), "10 000-byte ping"
        transfer(bed2, c1, c2, 10_000)
        transfer(bed2, c2, c1, 2_000_000)
        assert iperf(bed2, c1, c2) > 20e6
        status = bed2.status(1)["datapath"]
        (link,) = status["Links"]
        assert link["Offload"] is offload and link["Encrypted"] is (password is not None)
        assert status["TapOffloads"] is offload
        if offload:
            assert counters(bed2, 1)["superframes"] > 0
        extra = bed2.status(2)["router_extra"]
        assert extra["Interface"] == "vethwe-tap (via tap)"
        assert {m["Mac"] for m in extra["MACs"]} >= {c1.mac, c2.mac}
        assert extra["CaptureStats"]["PacketsReceived"] > 0
        totals = counters(bed2, 2)
        assert totals["decrypt_failed"] == 0 and totals["malformed"] == 0
    finally:
        stop_all(bed2)


def test_replays_and_forgeries_are_dropped_and_counted(bed2: Testbed) -> None:
    start(bed2, [(1, []), (2, [1])], password=PASSWORD, offload=False)
    try:
        c1, c2 = bed2.container(1), bed2.container(2)
        assert bed2.ping(c1, c2)
        pinger = subprocess.Popen(
            c1.argv("ping", "-c", "40", "-i", "0.2", "-s", "400", c2.address),
            stdout=subprocess.DEVNULL,
        )
        try:
            host1 = bed2.hosts[0]
            proc = subprocess.run(
                [
                    "ip",
                    "netns",
                    "exec",
                    host1.netns,
                    sys.executable,
                    "-c",
                    REPLAYER,
                    bed2.hosts[1].address,
                ],
                capture_output=True,
                text=True,
                timeout=60,
                check=False,
            )
            assert proc.returncode == 0, proc.stderr[-800:]
        finally:
            pinger.kill()
            pinger.wait()
        bed2.wait("replay counted", lambda: counters(bed2, 2)["replayed"] >= 2, timeout=10)
        assert counters(bed2, 2)["decrypt_failed"] >= 1
        assert bed2.ping(c1, c2), "the session goes on"
    finally:
        stop_all(bed2)


def test_mixed_peers_use_weave_format(bed2: Testbed) -> None:
    """host2 announces no offloads (as a Weave Net peer): host1 sends it plain frames."""
    start(bed2, [(1, []), (2, [1])], password=None, offload=[True, False])
    try:
        c1, c2 = bed2.container(1), bed2.container(2)
        assert bed2.ping(c1, c2) and bed2.ping(c1, c2, "-s", "10000")
        transfer(bed2, c1, c2, 500_000)
        (link,) = bed2.status(1)["datapath"]["Links"]
        assert link["Offload"] is False and bed2.status(1)["datapath"]["TapOffloads"] is False
    finally:
        stop_all(bed2)


def test_tap_is_recreated_after_deletion(bed2: Testbed) -> None:
    start(bed2, [(1, []), (2, [1])], password=None, offload=True)
    try:
        c1, c2 = bed2.container(1), bed2.container(2)
        assert bed2.ping(c1, c2)
        host1 = bed2.hosts[0]
        subprocess.run(["ip", "-n", host1.netns, "link", "del", "vethwe-tap"], check=True)
        bed2.wait(
            "TAP recreated",
            lambda: (
                bed2.status(1).get("datapath", {}).get("TapCreated", 0) >= 2
                and bed2.status(1)["datapath"]["TapReady"]
            ),
            timeout=20,
        )
        link = json.loads(
            subprocess.run(
                ["ip", "-n", host1.netns, "-j", "-d", "link", "show", "vethwe-tap"],
                capture_output=True,
                text=True,
                check=True,
            ).stdout
        )[0]
        assert link["master"] == "weave" and "UP" in link["flags"]
        bed2.wait("traffic again", lambda: bed2.ping(c1, c2, count=1), timeout=20)
    finally:
        stop_all(bed2)


def test_frag_needed_teaches_containers_the_overlay_mtu(bed_jumbo: Testbed) -> None:
    start(bed_jumbo, [(1, []), (2, [1])], password=None, offload=False)
    try:
        c1, c2 = bed_jumbo.container(1), bed_jumbo.container(2)
        assert bed_jumbo.ping(c1, c2)
        out = bed_jumbo.run_in(
            c1, "ping", "-M", "do", "-c", "1", "-W", "2", "-s", "3000", c2.address
        )
        assert out.returncode != 0 and "mtu = 1438" in (out.stdout + out.stderr).lower(), out.stdout
        route = bed_jumbo.run_in(c1, "ip", "route", "get", c2.address).stdout
        assert "mtu 1438" in route
        transfer(bed_jumbo, c2, c1, 10_000)  # c2 learns it while sending: TCP adapts
        transfer(bed_jumbo, c1, c2, 1_000_000)
        assert bed_jumbo.ping(c1, c2, "-s", "10000"), "a non-DF 10 000-byte ping is fragmented"
        assert counters(bed_jumbo, 1)["icmp_frag_needed"] >= 1
    finally:
        stop_all(bed_jumbo)


def test_offload_peers_carry_jumbo_frames_whole(bed_jumbo: Testbed) -> None:
    start(bed_jumbo, [(1, []), (2, [1])], password=None, offload=True)
    try:
        c1, c2 = bed_jumbo.container(1), bed_jumbo.container(2)
        # Flush any PMTU learned by the previous test.
        for c in (c1, c2):
            bed_jumbo.run_in(c, "ip", "route", "flush", "cache")
        assert bed_jumbo.ping(c1, c2, "-M", "do", "-s", "8000"), "DF jumbo ping whole"
        transfer(bed_jumbo, c1, c2, 1_000_000)
    finally:
        stop_all(bed_jumbo)


def test_frames_over_the_receiving_bridge_mtu_are_answered_or_fragmented(
    bed_jumbo: Testbed,
) -> None:
    """As a Weave peer (containers of MTU 65535, path MTU 1438) talking to a weaved host whose
    bridge is 1376: a 1428-byte DF packet used to vanish in host2's bridge. Now host2 answers
    with ICMP frag-needed (MTU 1376), so DF pings and TCP adapt; non-DF is fragmented."""
    host2 = bed_jumbo.hosts[1]
    c1, c2 = bed_jumbo.container(1), bed_jumbo.container(2)
    veth2 = f"vethtc{c2.host}x{c2.index}"

    def set_mtu(mtu: int) -> None:
        for argv in (
            ["ip", "-n", host2.netns, "link", "set", "weave", "mtu", str(mtu)],
            ["ip", "-n", host2.netns, "link", "set", veth2, "mtu", str(mtu)],
            ["ip", "-n", c2.netns, "link", "set", "ethwe", "mtu", str(mtu)],
        ):
            subprocess.run(argv, check=True)

    set_mtu(1376)
    start(bed_jumbo, [(1, []), (2, [1])], password=None, offload=False)
    try:
        for c in (c1, c2):
            bed_jumbo.run_in(c, "ip", "route", "flush", "cache")
        assert bed_jumbo.ping(c1, c2)
        time.sleep(2.5)  # the data path reads the bridge's MTU every 2 s
        assert bed_jumbo.ping(c1, c2, "-M", "dont", "-s", "3000"), "non-DF is fragmented"
        out = bed_jumbo.run_in(
            c1, "ping", "-M", "do", "-c", "1", "-W", "2", "-s", "1400", c2.address
        )
        text = (out.stdout + out.stderr).lower()
        assert out.returncode != 0 and "mtu = 1376" in text, text
        assert "mtu 1376" in bed_jumbo.run_in(c1, "ip", "route", "get", c2.address).stdout
        assert bed_jumbo.ping(c1, c2, "-M", "do", "-s", "1348"), "DF at the bridge MTU passes"
        transfer(bed_jumbo, c1, c2, 1_000_000)  # TCP with DF on every segment adapts
        totals = counters(bed_jumbo, 2)
        assert totals["too_big_answered"] >= 1 and totals["too_big_fragmented"] >= 1, totals
    finally:
        stop_all(bed_jumbo)
        set_mtu(9000)
        for c in (c1, c2):
            bed_jumbo.run_in(c, "ip", "route", "flush", "cache")


# --- three hosts in a line -------------------------------------------------------------------


def multicast_delivered(bed: Testbed, sender: Container, receivers: list[Container]) -> None:
    group = "239.1.2.3"
    procs = [
        subprocess.Popen(
            r.argv(sys.executable, "-c", MCAST_RECEIVER, group, r.address, "4"),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for r in receivers
    ]
    try:
        for p in procs:
            assert p.stdout is not None and p.stdout.readline().strip() == "joined"
        time.sleep(1.0)  # IGMP reports cross the mesh; bridges learn the members
        sent = py(sender, MCAST_SENDER, group, sender.address, "10")
        assert sent.returncode == 0, sent.stderr
        for r, p in zip(receivers, procs, strict=True):
            out, err = p.communicate(timeout=30)
            got = set(out.split("\n")[-2].split()) if out.strip() else set()
            assert len(got) >= 8, f"{r.netns} got {sorted(got)} {err[-300:]}"
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()


@pytest.mark.parametrize("password", [None, PASSWORD], ids=["plain", "encrypted"])
def test_three_hosts_relay_broadcast_multicast(bed3: Testbed, password: str | None) -> None:
    start(bed3, [(1, [2]), (2, []), (3, [2])], password=password, offload=True)
    try:
        a, a2, b, c = bed3.container(1), bed3.container(1, 2), bed3.container(2), bed3.container(3)
        status1 = bed3.status(1)
        assert {link["Peer"] for link in status1["datapath"]["Links"]} == {"02:00:00:00:00:02"}
        relayed_before = counters(bed3, 2)["relayed"]
        # ARP: a broadcast from host1's container, carried by host2 to host3.
        bed3.run_in(a, "ip", "neigh", "flush", "all")
        assert bed3.ping(a, c), bed3.log_tail(2)
        assert bed3.ping(c, a, "-s", "10000")
        transfer(bed3, a, c, 10_000)
        transfer(bed3, c, a, 1_000_000)
        assert counters(bed3, 2)["relayed"] > relayed_before
        neigh = bed3.run_in(a, "ip", "neigh", "show", c.address).stdout
        assert c.mac in neigh
        multicast_delivered(bed3, a, [a2, b, c])
        multicast_delivered(bed3, c, [a, a2, b])
    finally:
        stop_all(bed3)


def test_relay_between_offload_and_weave_format_links(bed3: Testbed) -> None:
    """host1 and host3 take offloads, host2 (the relay) does not: superframes are cut into
    Weave frames for host2 and carried on unchanged."""
    start(bed3, [(1, [2]), (2, []), (3, [2])], password=None, offload=[True, False, True])
    try:
        a, c = bed3.container(1), bed3.container(3)
        assert bed3.ping(a, c) and bed3.ping(a, c, "-s", "10000")
        transfer(bed3, a, c, 2_000_000)
        transfer(bed3, c, a, 10_000)
    finally:
        stop_all(bed3)


def test_testbed_leaves_nothing_behind(tmp_path: Path) -> None:
    name = tag("wdz")
    with Testbed(name, 1, tmp_path) as bed:
        bed.start_peer(1)
        bed.wait("TAP", lambda: bool(bed.status(1).get("datapath", {}).get("TapReady")), timeout=20)
    names = subprocess.run(
        ["ip", "netns", "list"], capture_output=True, text=True, check=True
    ).stdout
    assert f"{name}-" not in names


def test_a_second_data_path_does_not_steal_the_tap(bed2: Testbed) -> None:
    start(bed2, [(1, []), (2, [1])], password=None, offload=True)
    host1 = bed2.hosts[0]
    status = host1.dir / "second.json"
    config = {
        "name": "02:00:00:00:00:99",
        "host": host1.address,
        "port": 6790,
        "status_file": str(status),
        "log_level": "WARNING",
    }
    runner = [sys.executable, "-m", "tests.tools.sleeve_peer", json.dumps(config)]
    second = subprocess.Popen(
        ["ip", "netns", "exec", host1.netns, *runner],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
        env=python_env(),
    )
    try:

        def refused() -> bool:
            try:
                report = json.loads(status.read_text())["datapath"]
            except (OSError, ValueError, KeyError):
                return False
            return "held by another process" in (report.get("TapError") or "")

        bed2.wait("second data path refused", refused, timeout=20)
        assert bed2.status(1)["datapath"]["TapCreated"] == 1
        assert bed2.ping(bed2.container(1), bed2.container(2))
    finally:
        second.terminate()
        second.wait(10)
        stop_all(bed2)
