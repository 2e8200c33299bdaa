"""Names, records and frames of the attach plumbing (pure parts)."""

from __future__ import annotations

import ipaddress
import struct
from pathlib import Path

import pytest

from weaved.attach.arp import announcement
from weaved.attach.ethtool import IFREQ_SIZE, ifreq
from weaved.attach.model import (
    Attachment,
    AttachmentState,
    Target,
    TargetKind,
    netns_veth_id,
    netns_veth_ids,
    veth_name,
)
from weaved.attach.observe import container_veths

Iface = ipaddress.IPv4Interface


@pytest.mark.parametrize(
    ("veth_id", "name"),
    [
        ("1", "vethwepl1"),
        ("4242", "vethwepl4242"),
        ("4194304", "vethwepl4194304"),
        ("12345678", "vethwepl1234567"),
    ],
)
def test_veth_names_follow_weave_and_fit_ifnamsiz(veth_id: str, name: str) -> None:
    assert veth_name(veth_id) == name
    assert len(veth_name(veth_id)) <= 15


def test_named_netns_gets_a_stable_short_hash_never_mistaken_for_a_pid() -> None:
    a = netns_veth_id("wdt-abc123")
    assert a == netns_veth_id("wdt-abc123") and a != netns_veth_id("wdt-abc124")
    assert a.startswith("n") and not a.isdigit() and len(a) == 7
    target = Target(
        TargetKind.NETNS, "netns:wdt-abc123", "wdt-abc123", None, "/run/netns/wdt-abc123"
    )
    assert target.veth == "vethwepl" + a and len(target.veth) == 15


def test_a_named_netns_has_a_second_name_for_when_its_first_is_taken() -> None:
    # Two names whose first six hex digits of SHA-256 are the same (found by a search).
    first_a, second_a = netns_veth_ids("akb-79d1-545")
    first_b, second_b = netns_veth_ids("akb-79d1-876")
    assert first_a == first_b == "nb1ef63" == netns_veth_id("akb-79d1-545")
    assert second_a != second_b and second_a.startswith("m") and len(second_a) == 7
    target = Target(TargetKind.NETNS, "netns:akb-79d1-876", "akb-79d1-876", None, "/x")
    assert target.second_veth == "vethwepl" + second_b and len(target.second_veth) == 15
    assert Target(TargetKind.PID, "pid:77", "77", 77, "/proc/77/ns/net").second_veth == ""


def test_pid_and_docker_targets_are_named_by_pid() -> None:
    pid = Target(TargetKind.PID, "pid:77", "77", 77, "/proc/77/ns/net")
    assert pid.veth == "vethwepl77" and pid.label == "77"
    cid = "ab" * 32
    docker = Target(TargetKind.DOCKER, cid, "web", 99, "/proc/99/ns/net")
    assert docker.veth == "vethwepl99" and docker.label == cid[:12]


def test_attachment_json_round_trip() -> None:
    target = Target(TargetKind.DOCKER, "ab" * 32, "web", 99, "/proc/99/ns/net", 4026532386)
    a = Attachment(
        target,
        "vethwepl99",
        mac="0e:00:00:00:00:01",
        mtu=1376,
        addresses=(Iface("10.2.1.5/24"), Iface("10.3.0.5/16")),
        multicast_route=True,
        tx_checksum=False,
        veth_index=7,
    )
    assert Attachment.from_json(a.to_json()) == a
    assert Attachment.from_json(a.gone().to_json()).state is AttachmentState.GONE
    assert a.subnets == (ipaddress.IPv4Network("10.2.1.0/24"), ipaddress.IPv4Network("10.3.0.0/16"))


def test_gratuitous_arp_is_an_rfc5227_announcement() -> None:
    frame = announcement("0e:00:00:00:00:a1", ipaddress.IPv4Address("10.2.1.5"))
    assert len(frame) == 60
    assert frame[:6] == b"\xff" * 6 and frame[6:12] == bytes.fromhex("0e00000000a1")
    assert frame[12:14] == b"\x08\x06"
    htype, ptype, hlen, plen, op = struct.unpack("!HHBBH", frame[14:22])
    assert (htype, ptype, hlen, plen, op) == (1, 0x0800, 6, 4, 1)
    sha, spa, tha, tpa = frame[22:28], frame[28:32], frame[32:38], frame[38:42]
    assert sha == bytes.fromhex("0e00000000a1") and tha == b"\x00" * 6
    assert spa == tpa == bytes([10, 2, 1, 5])
    assert frame[42:] == b"\x00" * 18


def test_ethtool_ifreq_layout() -> None:
    raw = ifreq("ethwe", 0x1122334455667788)
    assert len(raw) == IFREQ_SIZE
    assert raw[:16] == b"ethwe" + b"\x00" * 11
    assert struct.unpack("P", raw[16:24])[0] == 0x1122334455667788
    with pytest.raises(ValueError):
        ifreq("x" * 16, 0)


def test_the_quick_listing_looks_at_namespace_paths_only_when_asked(tmp_path: Path) -> None:
    """The periodic check stats every container's namespace path on its full check only (a
    stat per container on every check where links moved was ~9 % of the GIL at 1 000)."""
    gone = Target(TargetKind.NETNS, "netns:x", "x", None, str(tmp_path / "gone"))
    known = [Attachment(gone, gone.veth)]
    assert container_veths(known) is None  # something moved: look closer
    assert container_veths(known, paths=False) is not None  # the host's links only
