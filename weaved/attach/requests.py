"""What `weaved attach`, `detach` and `ps` ask for, as typed requests (pure data): Weave's
address forms (`ADDR/LEN`, `ip:ADDR[/LEN]`, `net:CIDR`, `net:default`) parsed and checked, and
the requests as the CLI sends them to the daemon's control socket and the daemon reads them.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from weaved.errors import UsageError

MIN_SUBNET_PREFIX = 30  # IPAM allocates host addresses: a /31 or /32 has none


class AddressKind(StrEnum):
    CIDR = "cidr"  # ADDR/LEN or ip:ADDR/LEN: exactly this address
    IP = "ip"  # ip:ADDR: this address, prefix from IPAM's default subnet
    SUBNET = "subnet"  # net:CIDR: IPAM allocates one in this subnet
    DEFAULT = "default"  # net:default: IPAM allocates one in the default subnet


@dataclass(frozen=True)
class AddressArg:
    kind: AddressKind
    text: str  # canonical: "10.2.1.5/24", "ip:10.2.1.5", "net:10.2.0.0/16", "net:default"
    interface: ipaddress.IPv4Interface | None = None
    address: ipaddress.IPv4Address | None = None
    network: ipaddress.IPv4Network | None = None

    @property
    def needs_ipam(self) -> bool:
        return self.kind is not AddressKind.CIDR


def parse_address(word: str) -> AddressArg | None:
    """An address argument in one of Weave's forms, None if `word` is not one (then it is the
    TARGET), UsageError if it is one but malformed (e.g. net:10.0.0.0/33)."""
    if word == "net:default":
        return AddressArg(AddressKind.DEFAULT, word)
    if word.startswith("net:"):
        try:
            net = ipaddress.IPv4Network(word[4:], strict=True)
        except ValueError as exc:
            raise UsageError(f"{word}: not a subnet in CIDR form ({exc})") from None
        if net.prefixlen > MIN_SUBNET_PREFIX:
            raise UsageError(
                f"{word}: subnet too small to allocate from (at least /{MIN_SUBNET_PREFIX})"
            )
        return AddressArg(AddressKind.SUBNET, f"net:{net}", network=net)
    body = word.removeprefix("ip:")
    explicit = body != word
    if "/" in body:
        try:
            iface = ipaddress.IPv4Interface(body)
        except ValueError as exc:
            if explicit or _looks_like_address(body):
                raise UsageError(f"{word}: not an address/prefix ({exc})") from None
            return None
        return AddressArg(AddressKind.CIDR, iface.with_prefixlen, interface=iface)
    if explicit:
        try:
            ip = ipaddress.IPv4Address(body)
        except ValueError as exc:
            raise UsageError(f"{word}: not an IPv4 address ({exc})") from None
        return AddressArg(AddressKind.IP, f"ip:{ip}", address=ip)
    return None


def _looks_like_address(text: str) -> bool:
    head = text.split("/", 1)[0]
    return head.count(".") == 3 and all(p.isdigit() for p in head.split("."))


@dataclass(frozen=True)
class AttachRequest:
    target: str
    addresses: tuple[AddressArg, ...] = ()
    multicast_route: bool | None = None  # None: the spec's `multicast_route`
    dns: bool = True  # register its name in weaveDNS (`--without-dns`: not)

    def to_json(self) -> dict[str, Any]:
        return {
            "target": self.target,
            "addresses": [a.text for a in self.addresses],
            "multicast_route": self.multicast_route,
            "dns": self.dns,
        }

    @staticmethod
    def from_json(data: dict[str, Any]) -> AttachRequest:
        mc = data.get("multicast_route")
        return AttachRequest(
            str(data["target"]),
            _addresses_from_json(data.get("addresses", [])),
            None if mc is None else bool(mc),
            bool(data.get("dns", True)),
        )


@dataclass(frozen=True)
class DetachRequest:
    target: str
    addresses: tuple[AddressArg, ...] = ()  # empty: every address (and the veth)

    def to_json(self) -> dict[str, Any]:
        return {"target": self.target, "addresses": [a.text for a in self.addresses]}

    @staticmethod
    def from_json(data: dict[str, Any]) -> DetachRequest:
        return DetachRequest(str(data["target"]), _addresses_from_json(data.get("addresses", [])))


@dataclass(frozen=True)
class PsRequest:
    targets: tuple[str, ...] = ()  # empty: weave:expose and every container

    def to_json(self) -> dict[str, Any]:
        return {"targets": list(self.targets)}


Request = AttachRequest | DetachRequest | PsRequest


def _addresses_from_json(items: Sequence[Any]) -> tuple[AddressArg, ...]:
    out = []
    for item in items:
        parsed = parse_address(str(item))
        if parsed is None:
            raise UsageError(f"{item!r} is not an address argument")
        out.append(parsed)
    return tuple(out)
