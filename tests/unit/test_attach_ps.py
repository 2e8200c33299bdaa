"""`weaved ps` renders exactly Weave's layout (golden: ../shared/weave-wire/outputs)."""

from __future__ import annotations

import ipaddress

import pytest

from tests.wire import OUTPUTS
from weaved.attach.model import Attachment, AttachmentState, Target, TargetKind
from weaved.attach.ps import render_ps, show_addrs

Iface = ipaddress.IPv4Interface


def netns_attachment(name: str, mac: str, *addrs: str, index: int = 10) -> Attachment:
    target = Target(TargetKind.NETNS, f"netns:{name}", name, None, f"/run/netns/{name}")
    return Attachment(
        target, f"vethwepl{index}", mac=mac, addresses=tuple(map(Iface, addrs)), veth_index=index
    )


@pytest.mark.parametrize(
    ("host", "bridge_mac", "bridge_addrs", "container", "mac", "addrs"),
    [
        (
            "host1",
            "3e:80:e7:5a:63:a7",
            ["10.32.0.2/12"],
            "cA",
            "0e:00:00:00:00:a1",
            ["10.32.0.1/12"],
        ),
        ("host2", "2a:9f:f1:99:8a:21", [], "cB", "0e:00:00:00:00:a2", ["10.36.0.0/12"]),
        ("host3", "ae:c0:01:6f:34:d5", [], "cC", "0e:00:00:00:00:a3", ["10.44.0.0/12"]),
    ],
)
def test_matches_weave_ps_golden(
    host: str,
    bridge_mac: str,
    bridge_addrs: list[str],
    container: str,
    mac: str,
    addrs: list[str],
) -> None:
    golden = OUTPUTS / "three-peers-line" / host / "ps.txt"
    if not golden.exists():
        pytest.skip("shared/weave-wire not checked out next to the repository")
    text = render_ps(
        bridge_mac, [Iface(a) for a in bridge_addrs], [netns_attachment(container, mac, *addrs)]
    )
    assert text == golden.read_text()


def test_docker_ids_are_cut_to_12_and_every_address_listed() -> None:
    cid = "f7bf6a00bff857c29f95480982dacd3b586ea92448b99ce26a204c6ac613c648"
    target = Target(TargetKind.DOCKER, cid, "web", 4242, "/proc/4242/ns/net")
    a = Attachment(
        target,
        "vethwepl4242",
        mac="0e:00:00:00:00:01",
        addresses=(Iface("10.2.1.5/24"), Iface("10.3.0.5/16")),
    )
    assert render_ps(None, [], [a]) == "f7bf6a00bff8 0e:00:00:00:00:01 10.2.1.5/24 10.3.0.5/16\n"
    pid = Target(TargetKind.PID, "pid:4243", "4243", 4243, "/proc/4243/ns/net")
    b = Attachment(pid, "vethwepl4243", mac="0e:00:00:00:00:02")
    assert render_ps(None, [], [b]) == "4243 0e:00:00:00:00:02\n"


def test_only_running_containers_are_listed() -> None:
    alive = netns_attachment("c1", "0e:00:00:00:00:01", "10.2.1.5/24")
    orphan = netns_attachment("c2", "0e:00:00:00:00:02", "10.2.1.6/24")
    orphan = Attachment(**{**orphan.__dict__, "state": AttachmentState.ORPHANED})
    gone = alive.gone()
    text = render_ps("3e:80:e7:5a:63:a7", [Iface("10.2.1.1/24")], [alive, orphan, gone])
    assert text == "weave:expose 3e:80:e7:5a:63:a7 10.2.1.1/24\nc1 0e:00:00:00:00:01 10.2.1.5/24\n"


def test_no_bridge_no_containers_prints_nothing() -> None:
    assert render_ps(None, [], []) == ""


def test_show_addrs_prints_ips_without_prefix() -> None:
    assert show_addrs([Iface("10.2.1.5/24"), Iface("10.3.0.5/16")]) == "10.2.1.5 10.3.0.5"
    assert show_addrs([]) == ""
