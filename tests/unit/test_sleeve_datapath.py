"""The data path's per-frame work without threads or root: datagrams in, frames out (to a fake
TAP: a Unix datagram socket keeps one frame per write), records out (to fake forwarders),
with real sealing, opening and replay windows."""

from __future__ import annotations

import socket
import struct
from collections.abc import Iterator
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

import pytest

from weaved.datapath.sleeve import views
from weaved.datapath.sleeve.datapath import Link, SleeveDatapath
from weaved.datapath.sleeve.ethernet import checksum, ones_sum
from weaved.datapath.sleeve.forwarding import ForwardingTable
from weaved.datapath.sleeve.frames import Reassembly, parse_body
from weaved.datapath.sleeve.overlay import SleeveOverlay
from weaved.datapath.sleeve.vnet import F_NEEDS_CSUM, GSO_TCPV4, ZERO_VNET, VnetHeader
from weaved.datapath.sleeve.wire import SpecialKind, heartbeat_frame
from weaved.datapath.sleeve.worker import Worker
from weaved.mesh.crypto import SleeveOpener, SleeveSealer
from weaved.mesh.gossip_api import PeerName
from weaved.mesh.routes import Routes

A, B, C = PeerName(0x020000000001), PeerName(0x020000000002), PeerName(0x020000000003)
a, b, c = (p.to_bytes(6, "big") for p in (A, B, C))
MAC_A, MAC_B, MAC_C = (bytes.fromhex(f"0e000000000{i}") for i in (1, 2, 3))
KEY = bytes(range(32))
ADDR = ("192.0.2.2", 6783)


@dataclass
class Control:
    mtu: int = 1438
    stack_frag: bool = True
    max_payload: int = 1472
    remote_addr: tuple[str, int] | None = ADDR


@dataclass
class FakeForwarder:
    remote: PeerName
    offload: bool = False
    encrypted: bool = False
    opener: Any = None
    control: Control = field(default_factory=Control)
    sent: list[tuple[bool, bytes]] = field(default_factory=list)
    segments: list[tuple[int, list[bytes]]] = field(default_factory=list)
    segments_df: list[bool] = field(default_factory=list)
    gso: bool = True  # False: the kernel refuses every segmented send
    specials: list[tuple[SpecialKind, bytes]] = field(default_factory=list)

    @property
    def remote_bin(self) -> bytes:
        return self.remote.to_bytes(6, "big")

    def send_body(self, parts: list[bytes], df: bool, size: int) -> None:
        body = b"".join(bytes(p) for p in parts)
        assert len(body) == size
        self.sent.append((df, body))

    def seal_payload(self, parts: list[bytes], df: bool, size: int) -> tuple[list[bytes], int]:
        return parts, size

    def send_payload(self, parts: list[bytes], df: bool, size: int) -> None:
        self.send_body(parts, df, size)

    def send_segments(self, sends: list[list[bytes]], segment_size: int, df: bool = False) -> bool:
        if not self.gso:
            return False
        for parts in sends:
            blob = b"".join(bytes(p) for p in parts)
            datagrams = [blob[i : i + segment_size] for i in range(0, len(blob), segment_size)]
            self.segments.append((segment_size, datagrams))
            self.segments_df.append(df)
        return True

    def special_threadsafe(self, kind: SpecialKind, frame: bytes, addr: object) -> None:
        self.specials.append((kind, frame))


class FakeTopology:
    def nicknames(self) -> dict[PeerName, str]:
        return {A: "host1", B: "host2"}


class FakeRouter:
    us = A
    config = SimpleNamespace(password=None)

    def __init__(self) -> None:
        self.sleeve = SleeveOverlay("127.0.0.1", 0)
        self.topology = FakeTopology()

    def overlay(self, name: str) -> SleeveOverlay | None:
        return self.sleeve if name == "sleeve" else None


@pytest.fixture
def dp() -> Iterator[SleeveDatapath]:
    """We are A; A-B-C in a line; links to B (weave format); a fake TAP."""
    datapath = SleeveDatapath(FakeRouter())  # type: ignore[arg-type]
    graph = {A: {B: True}, B: {A: True, C: True}, C: {B: True}}
    datapath.switch.table = ForwardingTable.from_routes(Routes(A, graph), list(graph))
    tap, tap_peer = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
    tap_peer.setblocking(False)
    datapath.tap_fd = tap.fileno()
    datapath._tap_peer = tap_peer  # type: ignore[attr-defined]
    yield datapath
    tap.close()
    tap_peer.close()


def link_to(dp: SleeveDatapath, fwd: FakeForwarder) -> None:
    dp.links[fwd.remote_bin] = Link(fwd)  # type: ignore[arg-type]


def receive_from(dp: SleeveDatapath, fwd: FakeForwarder) -> None:
    dp.overlay.forwarders_by_name[fwd.remote_bin] = fwd  # type: ignore[assignment]


def injected(dp: SleeveDatapath) -> list[bytes]:
    out = []
    peer: socket.socket = dp._tap_peer  # type: ignore[attr-defined]
    while True:
        try:
            out.append(peer.recv(70000))
        except BlockingIOError:
            return out


def worker(dp: SleeveDatapath) -> Worker:
    w = Worker(dp, "test", tap=False, udp=False)
    dp.workers.append(w)
    return w


def eth(dst: bytes, src: bytes, payload: bytes, etype: int = 0x0806) -> bytes:
    return dst + src + struct.pack(">H", etype) + payload


def record(src: bytes, dst: bytes, frame: bytes) -> bytes:
    return src + dst + struct.pack(">H", len(frame)) + frame


def ipv4(size: int, df: bool, src_mac: bytes, dst_mac: bytes, proto: int = 1) -> bytes:
    header = bytearray(
        struct.pack(
            ">BBHHHBBH4s4s",
            0x45,
            0,
            size,
            1,
            0x4000 if df else 0,
            64,
            proto,
            0,
            bytes([10, 40, 1, 1]),
            bytes([10, 40, 2, 1]),
        )
    )
    struct.pack_into(">H", header, 10, checksum(header))
    return dst_mac + src_mac + b"\x08\x00" + bytes(header) + bytes(size - 20)


def test_received_broadcast_is_injected_and_relays_go_on(dp: SleeveDatapath) -> None:
    from_b = FakeForwarder(B)
    receive_from(dp, from_b)
    to_b = FakeForwarder(B)
    link_to(dp, to_b)
    w = worker(dp)
    arp = eth(b"\xff" * 6, MAC_B, bytes(28))
    w.receiver.received(b + record(b, a, arp), ADDR, 1.0)
    w.out.flush()
    assert injected(dp) == [ZERO_VNET + arp]
    assert w.stats.injected == 1 and dp.switch.macs.lookup(MAC_B) == b
    # A broadcast from B reaches A last on the line: nothing to pass on.
    assert to_b.sent == []


def test_specials_go_to_the_control_plane(dp: SleeveDatapath) -> None:
    from_b = FakeForwarder(B)
    receive_from(dp, from_b)
    w = worker(dp)
    w.receiver.received(b + record(b, a, heartbeat_frame(12345)), ADDR, 1.0)
    w.receiver.received(b + record(c, a, heartbeat_frame(12345)), ADDR, 1.0)  # not from B itself
    assert from_b.specials == [(SpecialKind.HEARTBEAT, heartbeat_frame(12345))]
    assert w.stats.special == 2 and injected(dp) == []


def test_encrypted_datagrams_replays_and_forgeries(dp: SleeveDatapath) -> None:
    # B dialled A: B seals as outbound, A opens as not outbound.
    sealer = SleeveSealer(b, KEY, outbound=True, df=False)
    from_b = FakeForwarder(B, encrypted=True, opener=SleeveOpener(KEY, outbound=False))
    receive_from(dp, from_b)
    w = worker(dp)
    arp = eth(b"\xff" * 6, MAC_B, bytes(28))
    datagram = sealer.seal(record(b, a, arp))
    w.receiver.received(datagram, ADDR, 1.0)
    w.receiver.received(datagram, ADDR, 1.0)
    forged = bytearray(sealer.seal(record(b, a, arp)))
    forged[-1] ^= 1
    w.receiver.received(bytes(forged), ADDR, 1.0)
    w.receiver.received(b"\x09" * 6 + bytes(40), ADDR, 1.0)
    w.out.flush()
    assert injected(dp) == [ZERO_VNET + arp]
    stats = w.stats
    assert (stats.replayed, stats.decrypt_failed, stats.unknown_sender) == (1, 1, 1)
    assert views.report(dp)["Counters"]["replayed"] == 1


def test_offload_records_keep_their_header(dp: SleeveDatapath) -> None:
    from_b = FakeForwarder(B, offload=True)
    receive_from(dp, from_b)
    w = worker(dp)
    dp.switch.captured(MAC_A, b"\xff" * 6, 0.0)
    frame = ipv4(3000, True, MAC_B, MAC_A, proto=6)
    vnet = VnetHeader(F_NEEDS_CSUM, GSO_TCPV4, 54, 1000, 34, 16).pack()
    w.receiver.received(b + record(b, a, b"\x01" + vnet + frame), ADDR, 1.0)
    w.receiver.received(b + record(b, a, frame), ADDR, 1.0)  # no marker: not accepted
    w.out.flush()
    assert injected(dp) == [vnet + frame]
    assert w.stats.drops["bad_offload_record"] == 1


def test_captured_unicast_batched_per_peer_and_path(dp: SleeveDatapath) -> None:
    to_b = FakeForwarder(B)
    link_to(dp, to_b)
    dp.switch.macs.add_forced(MAC_C, c, 0.0)
    w = worker(dp)
    acks = [ipv4(52, True, MAC_A, MAC_C, proto=6) for _ in range(5)]
    arp = eth(MAC_C, MAC_A, bytes(28))
    for f in [*acks, arp]:
        w.captured(ZERO_VNET + f, 1.0)
    w.out.flush()
    by_path = {df: body for df, body in to_b.sent}
    assert sorted(by_path) == [False, True] and len(to_b.sent) == 2
    records, problem = parse_body(by_path[True])
    assert problem is None and [(s, d, bytes(f)) for s, d, f in records] == [
        (a, c, f) for f in acks
    ]
    assert parse_body(by_path[False])[0][0][2] == arp


def test_full_frames_go_one_per_datagram_in_one_gso_send(dp: SleeveDatapath) -> None:
    """Weave's format on the wire (one full frame per datagram); to the kernel, the run of
    equal datagrams is one UDP GSO send on the DF path."""
    to_b = FakeForwarder(B)
    link_to(dp, to_b)
    dp.switch.macs.add_forced(MAC_B, b, 0.0)
    w = worker(dp)
    frames = [ipv4(1400, True, MAC_A, MAC_B) for _ in range(3)]
    for f in frames:
        w.captured(ZERO_VNET + f, 1.0)
    w.out.flush()
    assert to_b.sent == [] and to_b.segments_df == [True]
    ((size, datagrams),) = to_b.segments
    assert size == 6 + 14 + 1414 and len(datagrams) == 3
    for d in datagrams:
        assert d[:6] == a and parse_body(d[6:]) == ([(a, b, frames[0])], None)
    assert w.stats.datagrams_sent == 3 and w.stats.gso_sends == 1


def test_trains_keep_order_and_fall_back_to_single_sends(dp: SleeveDatapath) -> None:
    """A train leaves before a datagram that cannot board it (too big for the path, so the
    kernel fragments it); a shorter datagram ends a train; when the kernel refuses the
    segmented send, every datagram goes on its own, in order."""
    to_b = FakeForwarder(B, gso=False)
    link_to(dp, to_b)
    dp.switch.macs.add_forced(MAC_B, b, 0.0)
    w = worker(dp)
    sizes = [1400, 1400, 2000, 1400, 900, 1400]  # non-DF; 2000 is bigger than the path
    for n in sizes:
        w.captured(ZERO_VNET + ipv4(n, False, MAC_A, MAC_B), 1.0)
    w.out.flush()
    assert [len(body) - 14 - 14 for _df, body in to_b.sent] == sizes
    assert not any(df for df, _body in to_b.sent) and w.stats.gso_sends == 0

    to_b.gso, to_b.sent = True, []
    for n in sizes:
        w.captured(ZERO_VNET + ipv4(n, False, MAC_A, MAC_B), 1.0)
    w.out.flush()
    # [1400 1400] leave before 2000; [1400 900] (a shorter one ends it); a lone 1400.
    assert [[len(d) - 6 - 28 for d in ds] for _s, ds in to_b.segments] == [
        [1400, 1400],
        [1400, 900],
    ]
    assert [len(body) - 28 for _df, body in to_b.sent] == [2000, 1400]
    assert to_b.segments_df == [False, False] and w.stats.gso_sends == 2


def test_too_big_df_frame_is_answered_into_the_tap(dp: SleeveDatapath) -> None:
    to_b = FakeForwarder(B)
    link_to(dp, to_b)
    dp.switch.macs.add_forced(MAC_B, b, 0.0)
    w = worker(dp)
    w.captured(ZERO_VNET + ipv4(2000, True, MAC_A, MAC_B), 1.0)
    w.out.flush()
    (answer,) = injected(dp)
    assert answer[:10] == ZERO_VNET and answer[10:16] == MAC_A
    assert answer[10 + 14 + 20] == 3 and answer[10 + 14 + 21] == 4
    assert to_b.sent == [] and w.stats.icmp_frag_needed == 1


def tcp_segment(seq: int, payload: bytes) -> bytes:
    tcp = bytearray(struct.pack(">HHIIBBHHH", 1000, 2000, seq, 1, 0x50, 0x10, 100, 0, 0))
    src, dst = bytes([10, 40, 1, 1]), bytes([10, 40, 2, 1])
    ip = bytearray(
        struct.pack(">BBHHHBBH4s4s", 0x45, 0, 40 + len(payload), 1, 0x4000, 64, 6, 0, src, dst)
    )
    struct.pack_into(">H", ip, 10, checksum(ip))
    struct.pack_into(
        ">H", tcp, 16, checksum(bytes(tcp) + payload, ones_sum(src + dst, 6 + 20 + len(payload)))
    )
    return MAC_B + MAC_A + b"\x08\x00" + bytes(ip) + bytes(tcp) + payload


def test_segments_for_an_offload_peer_are_merged_into_one_record(dp: SleeveDatapath) -> None:
    to_b = FakeForwarder(B, offload=True)
    link_to(dp, to_b)
    dp.switch.macs.add_forced(MAC_B, b, 0.0)
    w = worker(dp)
    for i in range(4):
        w.captured(ZERO_VNET + tcp_segment(1 + 1000 * i, bytes([i]) * 1000), 1.0)
    w.out.flush()
    # 4 KB: bigger than the path (1472): path-sized segments in one UDP GSO send.
    assert to_b.sent == [] and w.stats.segments_sent == 3
    ((_size, datagrams),) = to_b.segments
    reassembly = Reassembly()
    whole = [reassembly.add(d, 1.0) for d in reversed(datagrams)]
    assert whole[:2] == [None, None] and whole[2] is not None
    sender, body = whole[2]
    df = False
    assert sender == a
    ((src, dst, data),) = parse_body(body)[0]
    vh = VnetHeader.unpack(bytes(data[1:11]))
    assert not df and data[0] == 1 and (src, dst) == (a, b)
    assert (vh.gso_type, vh.gso_size) == (GSO_TCPV4, 1000) and len(data) - 11 == 54 + 4000
    assert w.stats.merged == 3


def test_report_shapes(dp: SleeveDatapath) -> None:
    w = worker(dp)
    w.captured(ZERO_VNET + eth(b"\xff" * 6, MAC_A, bytes(28)), 1.0)
    extra = views.router_extra(dp)
    assert extra["Interface"] == "vethwe-tap (via tap)"
    assert extra["CaptureStats"]["PacketsReceived"] == 1
    (mac,) = extra["MACs"]
    assert mac["Mac"] == "0e:00:00:00:00:01" and mac["Name"] == "02:00:00:00:00:01"
    assert mac["NickName"] == "host1"
    assert mac["LastSeen"].endswith("Z") and "T" in mac["LastSeen"]
    assert "Service: sleeve" in views.status_text(dp)


class FakeMesh:
    def __init__(self, router: object) -> None:
        self.router = router


class NoSleeveRouter:
    us = A

    def overlay(self, name: str) -> None:
        return None


def test_part_views_and_without_sleeve() -> None:
    from weaved.datapath.sleeve.part import SleeveDatapathPart

    part = SleeveDatapathPart(FakeMesh(FakeRouter()))  # type: ignore[arg-type]
    assert part.datapath is not None and part.datapath.overlay.offload
    assert part.status_section() is not None and "Service: sleeve" in str(part.status_section())
    key, value = part.report() or ("", {})
    assert key == "Sleeve" and value["TapReady"] is False and value["OffloadAnnounced"]
    assert set(part.router_report_extra()) == {"Interface", "CaptureStats", "MACs"}
    assert ("GET", "/status/sleeve") in part.routes()
    assert (
        SleeveDatapathPart(FakeMesh(FakeRouter()), offload=False).datapath.overlay.offload is False
    )  # type: ignore[arg-type, union-attr]
    off = SleeveDatapathPart(FakeMesh(NoSleeveRouter()))  # type: ignore[arg-type]
    assert off.datapath is None and off.report() is None and off.status_section() is None
    assert off.router_report_extra() == {} and off.converge(None) == 0  # type: ignore[arg-type]


def test_udp_gso_and_gro_on_loopback(dp: SleeveDatapath) -> None:
    """A real UDP GSO send on loopback, read back with UDP GRO: the worker splits the run
    and puts the segmented datagram together."""
    from weaved.datapath.sleeve.frames import segment_datagram

    rx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    tx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        rx.bind(("127.0.0.1", 0))
        rx.setblocking(False)
        try:
            rx.setsockopt(17, 104, 1)  # UDP_GRO
        except OSError:
            pytest.skip("no UDP GRO in this kernel")
        dp.gro = True
        from_b = FakeForwarder(B, offload=True)
        receive_from(dp, from_b)
        dp.switch.captured(MAC_A, b"\xff" * 6, 0.0)
        frame = ipv4(6000, True, MAC_B, MAC_A, proto=6)
        body = record(b, a, b"\x01" + ZERO_VNET + frame)
        for parts in segment_datagram(b, body, 1472, 1):
            tx.sendmsg(parts, [(17, 103, struct.pack("H", 1472))], 0, rx.getsockname())
        w = worker(dp)
        deadline = 50
        while w.stats.injected == 0 and deadline:
            w._drain_udp(rx, 1.0)
            w.out.flush()
            deadline -= 1
        assert injected(dp) == [ZERO_VNET + frame]
        assert w.stats.segments_received == 5
    finally:
        rx.close()
        tx.close()


def test_received_df_frame_over_the_bridge_mtu_is_answered_to_its_sender(
    dp: SleeveDatapath,
) -> None:
    """A Weave peer's container (MTU 65535, path MTU 1438) sends 1428 DF bytes to our
    container behind a 1376 bridge: ICMP frag-needed (MTU 1376) goes back, nothing is
    injected (the kernel bridge would drop it silently)."""
    from_b, to_b = FakeForwarder(B), FakeForwarder(B)
    receive_from(dp, from_b)
    link_to(dp, to_b)
    dp.switch.macs.add_forced(MAC_A, a, 0.0)
    dp.bridge_mtu = 1376
    w = worker(dp)
    w.receiver.received(
        b + record(b, a, ipv4(1376, True, MAC_B, MAC_A)), ADDR, 1.0
    )  # fits: injected
    w.receiver.received(b + record(b, a, ipv4(1428, True, MAC_B, MAC_A)), ADDR, 1.0)
    w.out.flush()
    assert [len(f) - 10 - 14 for f in injected(dp)] == [1376]
    (body,) = [body for _df, body in to_b.sent]
    ((src, dst, icmp),), problem = parse_body(body)
    assert problem is None and (src, dst) == (a, b)
    assert bytes(icmp[:12]) == MAC_B + MAC_A and icmp[14 + 20] == 3 and icmp[14 + 21] == 4
    assert struct.unpack(">H", icmp[14 + 26 : 14 + 28])[0] == 1376
    assert w.stats.too_big_answered == 1 and w.stats.injected == 1


def test_received_non_df_frame_over_the_bridge_mtu_is_injected_in_fragments(
    dp: SleeveDatapath,
) -> None:
    from_b = FakeForwarder(B)
    receive_from(dp, from_b)
    dp.switch.macs.add_forced(MAC_A, a, 0.0)
    dp.bridge_mtu = 1376
    w = worker(dp)
    w.receiver.received(b + record(b, a, ipv4(3000, False, MAC_B, MAC_A)), ADDR, 1.0)
    arp = eth(MAC_A, MAC_B, bytes(1500))  # not IPv4: cannot be helped
    w.receiver.received(b + record(b, a, arp), ADDR, 1.0)
    w.out.flush()
    frames = [f[10:] for f in injected(dp)]
    assert len(frames) == 3 and all(len(f) <= 1376 + 14 for f in frames)
    assert sum(len(f) - 14 - 20 for f in frames) == 3000 - 20
    assert w.stats.too_big_fragmented == 1 and w.stats.drops["too_big_for_bridge"] == 1


def test_with_a_password_an_unencrypted_link_takes_data_only_from_its_peer_address(
    dp: SleeveDatapath,
) -> None:
    """Trusted subnets leave a link unencrypted even with a password; a frame in that
    peer's name from another address is then not delivered (heartbeats still are: they
    carry the connection's UID and may move the address)."""
    from_b = FakeForwarder(B)  # unencrypted, its UDP address ADDR
    receive_from(dp, from_b)
    dp.switch.macs.add_forced(MAC_A, a, 0.0)
    dp.encrypted_mesh = True
    w = worker(dp)
    frame = eth(MAC_A, MAC_B, bytes(28))
    w.receiver.received(b + record(b, a, frame), ("192.0.2.99", 6783), 1.0)
    w.receiver.received(b + record(b, a, heartbeat_frame(7)), ("192.0.2.99", 6783), 1.0)
    w.out.flush()
    assert injected(dp) == [] and w.stats.drops["unbound_source"] == 1
    assert from_b.specials == [(SpecialKind.HEARTBEAT, heartbeat_frame(7))]
    w.receiver.received(b + record(b, a, frame), ADDR, 1.0)
    w.out.flush()
    assert injected(dp) == [ZERO_VNET + frame]
    dp.encrypted_mesh = False  # no password: Weave's rule, any source address
    w.receiver.received(b + record(b, a, frame), ("192.0.2.99", 6783), 1.0)
    w.out.flush()
    assert injected(dp) == [ZERO_VNET + frame]
