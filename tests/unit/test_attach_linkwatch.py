"""linkwatch.veths_in: which container veths a batch of link announcements names."""

from __future__ import annotations

import socket

from weaved.attach.linkwatch import RTM_DELLINK, RTM_NEWLINK, veths_in
from weaved.dataplane.rtnl import HEADER, IFINFO, IFLA_IFNAME, pack_attr

RTM_NEWADDR = 20


def message(kind: int, name: str, family: int = socket.AF_UNSPEC) -> bytes:
    body = IFINFO.pack(family, 0, 7, 0, 0) + pack_attr(IFLA_IFNAME, name.encode() + b"\0")
    return HEADER.pack(HEADER.size + len(body), kind, 0, 0, 0) + body


def test_only_weaved_container_veths_of_link_announcements_are_named() -> None:
    data = b"".join(
        [
            message(RTM_NEWLINK, "vethwepl123"),
            message(RTM_NEWLINK, "eth0"),
            message(RTM_NEWLINK, "vethweplc0a1b2"),  # CNI's (vethweplc…): its part's own
            message(RTM_DELLINK, "vethweplnabc"),
            message(RTM_NEWADDR, "vethwepl9"),  # not a link announcement
            message(RTM_NEWLINK, "vethwepl8", socket.AF_BRIDGE),  # a port's flags, again
            message(RTM_NEWLINK, "vethwepl7", socket.AF_INET6),  # IPv6's state of the link
        ]
    )
    assert veths_in(data) == ["vethwepl123", "vethweplnabc"]
    assert veths_in(b"") == []
    assert veths_in(b"\x00" * 8) == []  # a short, malformed buffer ends the walk
