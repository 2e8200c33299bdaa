"""Sleeve control: heartbeats, establishment, fragmentation test, and the PMTU search of
trace d reproduced probe for probe."""

from __future__ import annotations

import asyncio
import json
import socket
import struct

import pytest

from tests.wire import VECTORS
from weaved.datapath.sleeve.control import (
    DEFAULT_MTU,
    FAST_HEARTBEAT,
    HEARTBEAT_TIMEOUT,
    SLOW_HEARTBEAT,
    Action,
    Established,
    Failed,
    SendControl,
    SendSpecial,
    SleeveControl,
)
from weaved.datapath.sleeve.overlay import SleeveOverlay
from weaved.datapath.sleeve.wire import (
    FRAG_TEST_SIZE,
    PMTU_TRIGGER_SIZE,
    SleeveFrame,
    SpecialKind,
    classify_special,
    heartbeat_frame,
    pack_frames,
    unpack_frames,
)
from weaved.mesh.gossip_api import PeerName

UID = 9051980784470965150
PEER = ("192.0.2.1", 6783)


def specials(actions: list[Action]) -> list[str]:
    return [a.what for a in actions if isinstance(a, SendSpecial)]


def test_dialling_side_heartbeats_until_ack() -> None:
    c = SleeveControl(UID, PEER, overhead_df=62)
    acts = c.confirm(0.0)
    assert specials(acts) == ["heartbeat"]
    hb = next(a for a in acts if isinstance(a, SendSpecial))
    assert hb.df and hb.frame == heartbeat_frame(UID)
    assert c.next_deadline() == FAST_HEARTBEAT
    assert specials(c.on_timer(FAST_HEARTBEAT)) == ["heartbeat"]
    # The remote's heartbeat with our UID: ack it once over TCP.
    acts = c.on_heartbeat(heartbeat_frame(UID), PEER, 0.6)
    assert SendControl(1) in acts
    assert SendControl(1) not in c.on_heartbeat(heartbeat_frame(UID), PEER, 0.7)
    assert c.on_heartbeat(heartbeat_frame(UID + 1), PEER, 0.7) == []  # other connection
    # Their ack establishes us, slows heartbeats, sends the frag test and the PMTU trigger.
    acts = c.on_control(1, b"", 1.0)
    assert Established() in acts
    assert specials(acts) == ["fragmentation-test", "pmtu-trigger"]
    frag, trigger = (a for a in acts if isinstance(a, SendSpecial))
    assert not frag.df and len(frag.frame) == FRAG_TEST_SIZE
    assert trigger.df and len(trigger.frame) == PMTU_TRIGGER_SIZE
    assert c.next_deadline() == 1.0 + SLOW_HEARTBEAT
    assert Established() not in c.on_control(1, b"", 2.0)  # only once


def test_accepting_side_waits_for_first_heartbeat() -> None:
    c = SleeveControl(UID, None, overhead_df=62)
    assert c.confirm(0.0) == []
    acts = c.on_heartbeat(heartbeat_frame(UID), PEER, 0.2)
    assert c.remote_addr == PEER
    assert specials(acts) == ["heartbeat"] and SendControl(1) in acts
    # Address change is followed.
    c.on_heartbeat(heartbeat_frame(UID), ("192.0.2.7", 6783), 0.3)
    assert c.remote_addr == ("192.0.2.7", 6783)


def test_heartbeat_timeout_fails() -> None:
    c = SleeveControl(UID, PEER, overhead_df=62)
    c.confirm(0.0)
    c.on_heartbeat(heartbeat_frame(UID), PEER, 10.0)
    now = 10.0
    while now < 10.0 + HEARTBEAT_TIMEOUT - 1:
        deadline = c.next_deadline()
        assert deadline is not None
        now = deadline
        assert not any(isinstance(a, Failed) for a in c.on_timer(now))
    acts = c.on_timer(10.0 + HEARTBEAT_TIMEOUT)
    assert acts == [Failed("timed out waiting for UDP heartbeat")]
    assert c.next_deadline() is None


def test_frag_test_and_probe_answers() -> None:
    c = SleeveControl(UID, PEER, overhead_df=62)
    assert c.on_frag_test(bytes(FRAG_TEST_SIZE)) == [SendControl(2)]
    assert c.on_frag_test(b"\x01" + bytes(FRAG_TEST_SIZE - 1)) == []
    assert c.on_mtu_probe(bytes(1452)) == [SendControl(3, struct.pack(">H", 1438))]
    assert not c.stack_frag
    c.on_control(2, b"", 0.0)
    assert c.stack_frag


def test_pmtu_search_reproduces_trace_d() -> None:
    path = VECTORS / "pmtu-search-trace-d.json"
    if not path.exists():
        pytest.skip("trace d vectors not available")
    data = json.loads(path.read_text())
    one_side = [p["probed_mtu"] for p in data["probes"] if p["from"] == "192.0.2.2:6783"]
    acked = {a["mtu"] for a in data["acks"]}
    c = SleeveControl(UID, PEER, overhead_df=62)
    c.confirm(0.0)
    now = 0.0
    probes: list[int] = []
    acts = c.on_send_too_big(1500, now)  # the 60000-byte trigger bounced: PMTU 1500
    while True:
        for a in acts:
            if isinstance(a, SendSpecial) and a.what.startswith("mtu-probe"):
                probes.append(len(a.frame) - 14)
        probe = probes[-1] if probes else None
        if probe in acked and acts:
            now += 0.001
            acts = c.on_control(3, struct.pack(">H", probe), now)
        else:
            deadline = c.next_deadline()
            assert deadline is not None
            # jump over heartbeats: only the MTU timer matters here
            now = min(deadline, now + 2.0)
            acts = c.on_timer(now)
            acts = [a for a in acts if not (isinstance(a, SendSpecial) and a.what == "heartbeat")]
        if c.mtu == 1138 and not any(isinstance(a, SendSpecial) for a in acts):
            break
        assert len(probes) < 200
    assert probes == one_side
    assert c.mtu == 1138 and c.max_payload == 1138 + 62 - 28


def test_encrypted_overhead_gives_1414() -> None:
    c = SleeveControl(UID, PEER, overhead_df=86)
    acts = c.on_send_too_big(1500, 0.0)
    assert c.mtu == 1414 and len(next(a for a in acts if isinstance(a, SendSpecial)).frame) == 1428
    c.on_control(3, struct.pack(">H", 1414), 0.01)
    assert c.mtu == 1414  # verified: 1414 + 1 >= lowest bad (1415)
    assert DEFAULT_MTU == 65535


def test_frames_pack_and_unpack() -> None:
    frames = [SleeveFrame(1, 2, b"abc"), SleeveFrame(3, 4, bytes(22))]  # type: ignore[arg-type]
    body = pack_frames(frames)
    assert unpack_frames(body) == (frames, None)
    got, err = unpack_frames(body[:-1])
    assert got == frames[:1] and err is not None and "too short" in err
    got, err = unpack_frames(body + b"xx")
    assert got == frames and err == "2 octets of trailing garbage"
    assert classify_special(heartbeat_frame(5)) == SpecialKind.HEARTBEAT
    assert classify_special(b"\x01" * 60) is None


@pytest.mark.parametrize(
    "trace", ["trace-a-udp.json", "trace-b-AB-udp.json", "trace-b-BC-udp.json", "trace-d-udp.json"]
)
def test_every_captured_datagram_parses(trace: str) -> None:
    path = VECTORS / trace
    if not path.exists():
        pytest.skip(f"{trace} not available")
    checked = 0
    heartbeat_uids = set()
    for d in json.loads(path.read_text())["datagrams"]:
        if not d.get("payload_hex"):
            continue  # fragmented datagrams are not reassembled in the vectors
        raw = bytes.fromhex(d["payload_hex"])
        frames, err = unpack_frames(raw[6:])
        assert err is None
        assert [(f"{f.src:012x}", f"{f.dst:012x}") for f in frames] == [
            (x["src_peer"].replace(":", ""), x["dst_peer"].replace(":", ""))
            for x in d["sleeve_frames"]
        ]
        for f in frames:
            if classify_special(f.data) is SpecialKind.HEARTBEAT:
                heartbeat_uids.add(int.from_bytes(f.data[14:], "big"))
        checked += 1
    assert checked > 10
    if trace == "trace-a-udp.json":
        assert heartbeat_uids == {UID}


def test_df_twin_sends_segments_and_never_receives() -> None:
    """The DF twin shares the sleeve port (SO_REUSEPORT) with DF set; the group's program
    keeps every datagram on the main socket; a GSO send from the twin reaches a plain UDP
    socket (as a Weave Net peer reads) as separate datagrams."""

    async def run() -> None:
        overlay = SleeveOverlay("127.0.0.1", 0)
        await overlay.start(PeerName(1), lambda _p: True)
        try:
            overlay.detach_reader()
            sock, twin = overlay.sock, overlay.df_sock
            assert sock is not None and twin is not None
            assert twin.getsockname() == sock.getsockname()
            assert twin.getsockopt(socket.IPPROTO_IP, 10) == 2  # IP_MTU_DISCOVER: DO
            port = sock.getsockname()[1]
            for _ in range(20):  # fresh source ports: reuseport hashing would spread them
                with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as client:
                    client.sendto(b"x", ("127.0.0.1", port))
            got = 0
            while True:
                try:
                    sock.recv(10)
                    got += 1
                except BlockingIOError:
                    break
            with pytest.raises(BlockingIOError):
                twin.recv(10)
            assert got == 20

            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as plain:
                plain.bind(("127.0.0.1", 0))
                plain.settimeout(2)
                datagrams = [b"a" * 1000, b"b" * 1000, b"c" * 500]
                sent = overlay.send_segments([datagrams], 1000, plain.getsockname(), df=True)
                assert sent
                assert [plain.recv(2000) for _ in datagrams] == datagrams
        finally:
            await overlay.stop()
        assert overlay.df_sock is None

    asyncio.run(run())
