"""Sleeve datagram bodies and how frames are carried, against Weave's captured datagrams
(weave-wire/vectors/sleeve-udp.json, trace-d-udp.json) and FACTS.md §7.1/§7.3."""

from __future__ import annotations

import struct
from typing import Any

import pytest

from tests.wire import load_vector
from weaved.datapath.sleeve.ethernet import (
    checksum,
    fragment_ipv4,
    icmp_frag_needed,
    ipv4_checksum_ok,
)
from weaved.datapath.sleeve.frames import (
    MAX_BATCH_FRAMES,
    OFFLOAD_PREFIX,
    offload_capacity,
    parse_body,
    plan_offload,
    plan_weave,
    plan_weave_vnet,
    weave_df_path,
)
from weaved.datapath.sleeve.vnet import (
    F_NEEDS_CSUM,
    GSO_TCPV4,
    ZERO_VNET,
    VnetHeader,
)


class Control:
    def __init__(self, max_payload: int) -> None:
        self.mtu = 1438
        self.stack_frag = True
        self.max_payload = max_payload


class Recorder:
    """A forwarder that keeps what it would send, as datagrams (sender name first)."""

    def __init__(self, sender: bytes, remote: bytes, max_payload: int) -> None:
        self.sender = sender
        self.remote_bin = remote
        self.offload = False
        self.encrypted = False
        self.control = Control(max_payload)
        self.sent: list[tuple[bool, bytes]] = []

    def send_body(self, parts: list[bytes], df: bool, size: int) -> None:
        body = b"".join(bytes(p) for p in parts)
        assert len(body) == size
        self.sent.append((df, self.sender + body))


def relay_out(sender: bytes, hop: bytes, max_payload: int = 1472) -> tuple[Any, Recorder]:
    """The data path's output stage alone, with one link (to `hop`)."""
    from weaved.datapath.sleeve.counters import Counters
    from weaved.datapath.sleeve.send import Link, Outbox

    fwd = Recorder(sender, hop, max_payload)
    dp = type("FakeDatapath", (), {})()
    dp.links = {hop: Link(fwd)}  # type: ignore[arg-type]
    dp.overlay = type("FakeOverlay", (), {"gso": False})()  # each datagram sent on its own
    return Outbox(dp, Counters()), fwd  # type: ignore[arg-type]


def names(text: str) -> bytes:
    return bytes.fromhex(text.replace(":", ""))


def examples() -> dict[str, Any]:
    data: dict[str, Any] = load_vector("sleeve-udp.json")["examples"]
    return data


# --- parsing captured datagrams -------------------------------------------------------------


@pytest.mark.parametrize(
    "example",
    [
        "heartbeat",
        "mtu_probe",
        "arp_request_broadcast",
        "arp_reply",
        "icmp_echo_request_df_path",
        "icmp_echo_reply_non_df_path",
        "two_frames_batched",
        "eight_frames_batched_and_relayed_C_to_A_on_AB_link",
        "eight_frames_batched_C_to_B_on_BC_link",
        "relayed_frame_A_to_C_on_BC_link",
    ],
)
def test_parse_captured_datagrams(example: str) -> None:
    ex = examples()[example]
    payload = bytes.fromhex(ex["payload_hex"])
    assert payload[:6] == names(ex["sender"])
    records, problem = parse_body(payload[6:])
    assert problem is None
    assert len(records) == len(ex["sleeve_frames"])
    for (src, dst, data), want in zip(records, ex["sleeve_frames"], strict=True):
        assert src == names(want["src_peer"]) and dst == names(want["dst_peer"])
        assert len(data) == want["length"]
        if "frame_hex" in want:
            assert bytes(data).hex().startswith(want["frame_hex"])


def test_parse_reports_truncation_and_trailing_bytes() -> None:
    body = bytes.fromhex(examples()["two_frames_batched"]["payload_hex"])[6:]
    records, problem = parse_body(body[:-5])
    assert len(records) == 1 and problem is not None and "too short" in problem
    records, problem = parse_body(body + b"\x01\x02\x03")
    assert len(records) == 2 and problem == "3 octets of trailing garbage"


def test_batching_rebuilds_the_eight_frame_datagram_byte_for_byte() -> None:
    """B relaying C's ping burst to A (trace b): eight records in one datagram. Our output
    for the same frames is the same bytes."""
    ex = examples()["eight_frames_batched_and_relayed_C_to_A_on_AB_link"]
    payload = bytes.fromhex(ex["payload_hex"])
    records, _ = parse_body(payload[6:])
    out, fwd = relay_out(names(ex["sender"]), names("3e:80:e7:5a:63:a7"))
    for src, dst, data in records:
        out.send(dst, src, dst, ZERO_VNET, bytes(data), broadcast=False)
    out.flush()
    assert fwd.sent == [(True, payload)]  # IPv4 with DF: the DF path, as captured


def test_batching_limits_count_and_size() -> None:
    peer = names("3e:80:e7:5a:63:a7")
    out, fwd = relay_out(bytes(6), peer, max_payload=65000)
    arp = bytes.fromhex("ffffffffffff0e00000000c10806") + bytes(28)
    for _ in range(MAX_BATCH_FRAMES + 1):
        out.send(peer, peer, peer, ZERO_VNET, arp, broadcast=False)
    out.flush()
    counts = [len(parse_body(body[6:])[0]) for _, body in fwd.sent]
    assert counts == [MAX_BATCH_FRAMES, 1]  # 100 frames per datagram at most, as Weave


# --- which path, fragment, or ICMP (FACTS.md §7.1, §7.3) -----------------------------------


def frame_of(example: str) -> bytes:
    ex = examples()[example]
    payload = bytes.fromhex(ex["payload_hex"])
    records, _ = parse_body(payload[6:])
    return bytes(records[0][2])


def test_df_path_choice_matches_the_captures() -> None:
    ex = examples()
    # ICMP echo request had DF: DF path (seen with UDP checksum 0); the reply had no DF and
    # the fragmentation test had passed: non-DF path (checksummed); ARP: non-DF.
    request, reply = frame_of("icmp_echo_request_df_path"), frame_of("icmp_echo_reply_non_df_path")
    assert ex["icmp_echo_request_df_path"]["ip_df"] and weave_df_path(request, stack_frag=True)
    assert not ex["icmp_echo_reply_non_df_path"]["ip_df"]
    assert not weave_df_path(reply, stack_frag=True)
    assert weave_df_path(reply, stack_frag=False)  # before the fragmentation test passed
    arp = frame_of("arp_request_broadcast")
    assert not weave_df_path(arp, stack_frag=False)
    plan = plan_weave(request, 1438, True, broadcast=False)
    assert [df for df, _ in plan.records] == [True] and plan.icmp is None


def ipv4_frame(size: int, df: bool, proto: int = 1, ident: int = 0x1234) -> bytes:
    """An Ethernet + IPv4 frame whose IP packet is `size` bytes."""
    eth = bytes.fromhex("0e00000000020e000000000108 00".replace(" ", ""))
    header = bytearray(
        struct.pack(
            ">BBHHHBBH4s4s",
            0x45,
            0,
            size,
            ident,
            0x4000 if df else 0,
            64,
            proto,
            0,
            bytes([10, 32, 0, 1]),
            bytes([10, 40, 0, 0]),
        )
    )
    struct.pack_into(">H", header, 10, checksum(header))
    payload = bytes((i * 7) & 0xFF for i in range(size - 20))
    return eth + bytes(header) + payload


def test_too_big_df_unicast_is_answered_with_frag_needed() -> None:
    frame = ipv4_frame(2000, df=True)
    plan = plan_weave(frame, 1438, True, broadcast=False)
    assert plan.records == () and plan.drop == "frag_needed" and plan.icmp is not None
    icmp = plan.icmp
    assert icmp[:6] == frame[6:12] and icmp[6:12] == frame[:6]  # back to the sender
    ip = icmp[14:]
    assert ipv4_checksum_ok(ip) and ip[9] == 1
    assert ip[12:16] == frame[30:34] and ip[16:20] == frame[26:30]  # from the destination
    assert ip[20] == 3 and ip[21] == 4 and struct.unpack(">H", ip[26:28])[0] == 1438
    assert ip[28:] == frame[14 : 14 + 28]  # the header and 8 bytes of payload
    assert checksum(ip[20:]) == 0
    assert icmp_frag_needed(b"\x00" * 20, 1438) is None


def test_too_big_df_broadcast_is_dropped() -> None:
    plan = plan_weave(ipv4_frame(2000, df=True), 1438, True, broadcast=True)
    assert plan.records == () and plan.icmp is None and plan.drop == "too_big_broadcast"


def test_too_big_non_df_goes_to_the_kernel_once_the_test_passed() -> None:
    frame = ipv4_frame(3000, df=False)
    plan = plan_weave(frame, 1438, True, broadcast=False)
    assert [(df, len(data)) for df, data in plan.records] == [(False, len(frame))]


def test_sleeve_fragments_itself_like_trace_d() -> None:
    """Trace d: a 3000-byte non-DF ping, fragmentation test lost, MTU 1138: sleeve sent the
    IPv4 fragments itself, each on the DF path. Our fragments are byte-for-byte Weave's."""
    datagrams = load_vector("trace-d-udp.json")["datagrams"]
    fragments = []
    for d in datagrams:
        frames = d.get("sleeve_frames", [])
        if d["src"] == "192.0.2.1:6783" and any("IPv4 fragment" in f["kind"] for f in frames):
            records, _ = parse_body(bytes.fromhex(d["payload_hex"])[6:])
            fragments.append(bytes(records[0][2]))
        if len(fragments) == 3:
            break
    assert [len(f) for f in fragments] == [1146, 1146, 818]
    header = bytearray(fragments[0][14:34])
    total = sum(len(f) - 34 for f in fragments) + 20
    struct.pack_into(">HH", header, 2, total, (header[4] << 8) | header[5])
    struct.pack_into(">H", header, 6, 0)
    struct.pack_into(">H", header, 10, 0)
    struct.pack_into(">H", header, 10, checksum(header))
    original = fragments[0][:14] + bytes(header) + b"".join(f[34:] for f in fragments)
    plan = plan_weave(original, 1138, False, broadcast=False)
    assert [df for df, _ in plan.records] == [True, True, True]
    assert [bytes(data) for _, data in plan.records] == fragments


def test_fragmenting_keeps_offsets_flags_and_copied_options() -> None:
    frame = bytearray(ipv4_frame(4000, df=False))
    # Give it options: record route (not copied) and a copied option (kind 0x94, router alert).
    options = bytes([7, 7, 4, 0, 0, 0, 0, 0x94, 4, 0, 0, 1, 0, 0])[:12]
    ip = bytearray(frame[14:34])
    ip[0] = 0x48
    struct.pack_into(">H", ip, 2, 4000 + 12)
    struct.pack_into(">H", ip, 10, 0)
    struct.pack_into(">H", ip, 10, checksum(ip + options))
    frame = frame[:14] + ip + options + frame[34:]
    parts = fragment_ipv4(bytes(frame), 1400)
    assert len(parts) == 3
    data = b""
    for i, part in enumerate(parts):
        ihl = (part[14] & 0x0F) * 4
        assert ipv4_checksum_ok(part[14:]) and len(part) - 14 <= 1400
        flags_offset = struct.unpack(">H", part[20:22])[0]
        assert (flags_offset & 0x1FFF) * 8 == len(data)
        assert bool(flags_offset & 0x2000) == (i < 2)
        if i == 0:
            assert ihl == 32
        else:
            assert ihl == 24 and part[34:38] == bytes([0x94, 4, 0, 0])
        data += part[14 + ihl :]
    assert data == bytes(frame[46:])


def test_offload_records_carry_the_header_and_skip_the_mtu() -> None:
    vnet = VnetHeader(F_NEEDS_CSUM, GSO_TCPV4, 66, 1448, 34, 16).pack()
    frame = ipv4_frame(9000, df=True, proto=6)
    plan = plan_offload(vnet, frame, offload_capacity(False), broadcast=False)
    assert len(plan.records) == 1
    df, data = plan.records[0]
    assert not df and data[0] == 1 and data[1:OFFLOAD_PREFIX] == vnet
    assert data[OFFLOAD_PREFIX:] == frame


def test_offload_frames_too_big_for_a_datagram_are_cut_down() -> None:
    frame = ipv4_frame(65000, df=False)
    capacity = offload_capacity(True)
    assert capacity == 65507 - 6 - 24 - 14 - 11
    plan = plan_offload(ZERO_VNET, frame, 30000, broadcast=False)
    assert len(plan.records) == 3
    assert all(len(data) - OFFLOAD_PREFIX <= 30000 for _, data in plan.records)
    plan = plan_offload(ZERO_VNET, ipv4_frame(40000, df=True), 30000, broadcast=False)
    assert plan.records == [] and plan.icmp is not None


def test_weave_peers_get_partial_checksums_completed() -> None:
    frame = bytearray(ipv4_frame(100, df=True, proto=17))
    struct.pack_into(">HHHH", frame, 34, 5000, 6000, 80, 0)
    # Partial: the field holds the pseudo-header sum, as the kernel leaves it.
    from weaved.datapath.sleeve.ethernet import ones_sum

    pseudo = ones_sum(bytes(frame[26:34]), 17 + 80)
    struct.pack_into(">H", frame, 40, pseudo)
    vnet = VnetHeader(F_NEEDS_CSUM, 0, 0, 0, 34, 6).pack()
    plan = plan_weave_vnet(vnet, bytes(frame), 1438, True, broadcast=False)
    ((df, done),) = plan.records
    assert df
    assert checksum(bytes(done[26:34]) + bytes([0, 17, 0, 80]) + bytes(done[34:])) == 0


# --- segmented datagrams (weaved peers taking offloads) ---------------------------------------


def test_segmenting_and_reassembly_round_trip_in_any_order() -> None:
    from weaved.datapath.sleeve.frames import SEGMENT_HEADER, Reassembly, segment_datagram

    sender = names("02:00:00:00:00:01")
    payload = bytes(range(256)) * 200  # 51 200 bytes
    (sends,) = [segment_datagram(sender, payload, 1472, 0xABCDEF01)]
    assert len(sends) == 1  # 36 segments fit one UDP GSO send
    flat = [bytes(p) for p in sends[0]]
    datagrams = [flat[i] + flat[i + 1] for i in range(0, len(flat), 2)]
    assert len(datagrams) == -(-len(payload) // (1472 - SEGMENT_HEADER.size))
    assert all(len(d) == 1472 for d in datagrams[:-1]) and len(datagrams[-1]) <= 1472
    assert all(d[:6] == sender and d[6:14] == b"\xff" * 8 for d in datagrams)
    reassembly = Reassembly()
    order = datagrams[5:] + datagrams[5:8] + datagrams[:5]  # out of order, duplicates
    results = [reassembly.add(d, 1.0) for d in order]
    done = [r for r in results if r is not None]
    assert done == [(sender, payload)] and not reassembly.pending


def test_reassembly_is_bounded_in_time_and_entries() -> None:
    from weaved.datapath.sleeve.frames import Reassembly, segment_datagram

    sender = names("02:00:00:00:00:01")
    reassembly = Reassembly(limit=2, timeout=1.0)
    for ident in range(3):
        first = segment_datagram(sender, bytes(5000), 1472, ident)[0]
        assert reassembly.add(bytes(first[0]) + bytes(first[1]), float(ident)) is None
    assert len(reassembly.pending) == 2 and reassembly.expired == 1  # the oldest went
    reassembly.sweep(10.0)
    assert not reassembly.pending and reassembly.expired == 3
    with pytest.raises(ValueError):
        reassembly.add(b"short", 0.0)
    with pytest.raises(ValueError):
        segment_datagram(sender, bytes(100_000), 300, 1)  # more than 255 pieces


def test_big_datagrams_take_several_sends() -> None:
    from weaved.datapath.sleeve.frames import MAX_SEGMENTS, segment_datagram

    sends = segment_datagram(bytes(6), bytes(150_000), 1472, 7)
    assert [len(parts) // 2 for parts in sends] == [44, 44, 16]
    sends = segment_datagram(bytes(6), bytes(64_000), 600, 7)
    assert max(len(parts) // 2 for parts in sends) <= MAX_SEGMENTS
