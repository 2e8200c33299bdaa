"""A CNI attachment's record as the veth's alias (what a daemon with an empty state directory
re-claims from), and how attachments are shown in `weaved ps` / `status` / `report`."""

from __future__ import annotations

import ipaddress
from dataclasses import replace

import pytest

from weaved.cni import views
from weaved.cni.plumbing import veth_names
from weaved.cni.records import ALIAS_MAX, CniRecord

CID = "0123456789abcdef" * 4  # a runtime's 64-hex container ID
REC = CniRecord(
    CID,
    "eth0",
    "/var/run/netns/cni-4c4d0e4c-6ba3-a4b5-6fe6-2b6d8e8cc7f2",
    veth_names(CID, "eth0")[0],
    (ipaddress.IPv4Interface("10.32.0.2/12"), ipaddress.IPv4Interface("10.40.0.9/24")),
    True,
    True,
    "web-0",
    "aa:bb:cc:dd:ee:ff",
)


@pytest.mark.parametrize(
    "rec",
    [
        REC,
        replace(REC, weaved_ipam=False, hairpin=False, dns_name=None),
        replace(REC, netns="/proc/4242/ns/net", dns_name="a b%c=d"),  # quoted, not split
    ],
)
def test_alias_round_trip(rec: CniRecord) -> None:
    alias = rec.to_alias()
    assert alias.startswith("weaved-cni id=") and len(alias) <= ALIAS_MAX
    assert CniRecord.from_alias(alias, rec.veth) == replace(rec, mac="")


def test_alias_too_long_drops_the_dns_name_then_the_namespace() -> None:
    long_name = replace(REC, dns_name="x" * 200)
    back = CniRecord.from_alias(long_name.to_alias(), REC.veth)
    assert back is not None and back.dns_name is None and back.netns == REC.netns
    long_ns = replace(REC, netns="/run/netns/" + "n" * 240)
    back = CniRecord.from_alias(long_ns.to_alias(), REC.veth)
    assert back is not None and back.netns == "" and back.addresses == REC.addresses


@pytest.mark.parametrize(
    "alias", ["", "weaved", "weaved-cnix id=a", "weaved-cni if=eth0", "weaved-cni id=a if=e ip=x"]
)
def test_foreign_or_broken_alias_is_no_record(alias: str) -> None:
    assert CniRecord.from_alias(alias, "vethweplc123456") is None


def test_views() -> None:
    ipam_only = replace(REC, container_id="b" * 64, veth="", mac="", dns_name=None)
    records = [REC, ipam_only]
    # Weave's ps layout: short ID, MAC, CIDRs; the IPAM-only one is on another bridge.
    assert views.ps_lines(records) == "0123456789ab aa:bb:cc:dd:ee:ff 10.32.0.2/12 10.40.0.9/24\n"
    assert views.status_section(records).splitlines() == [
        "        Service: cni",
        "    Attachments: 1 on the bridge, 1 IPAM only",
    ]
    assert views.status_lines(records).splitlines() == [
        f"0123456789ab eth0 {REC.veth} 10.32.0.2/12,10.40.0.9/24 {REC.netns} dns=web-0",
        f"bbbbbbbbbbbb eth0 - 10.32.0.2/12,10.40.0.9/24 {REC.netns}",
    ]
    assert views.status_section([]) is None
    report = views.report(records)["Attachments"]
    assert [a["ContainerID"] for a in report] == [CID, "b" * 64]
    assert report[0]["Addresses"] == ["10.32.0.2/12", "10.40.0.9/24"]
