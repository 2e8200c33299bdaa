"""Which addresses an attach or detach request means, in IPAM's terms (Weave's rules): literal
ones are claimed, `net:` ones and none allocated; a detach's `net:` names the container's IPAM
address in that subnet, and none the one in the default subnet.
"""

from __future__ import annotations

import contextlib
import ipaddress
import time

from weaved.attach.model import Attachment, Target
from weaved.attach.requests import AddressArg, AddressKind
from weaved.errors import UsageError
from weaved.ipam.address import CIDR
from weaved.ipam.errors import IpamError
from weaved.ipam.part import IpamPart, Wait, subnet_for
from weaved.spec.models import Spec

DEFAULT = (AddressArg(AddressKind.DEFAULT, "net:default"),)
Held = dict[ipaddress.IPv4Address, ipaddress.IPv4Interface]


async def addresses_for(
    ipam: IpamPart,
    spec: Spec,
    target: Target,
    args: tuple[AddressArg, ...],
    wait: Wait | None = None,
    *,
    durable: bool = True,
) -> list[ipaddress.IPv4Interface]:
    """The addresses of this call, from IPAM where needed (waiting, if it must, with
    `wait` telling where). On failure, what this call newly took is given back. Not
    `durable`: IPAM's state may not be on disk yet (the caller awaits `ipam.synced()`)."""
    out: list[ipaddress.IPv4Interface] = []
    default = subnet_for(spec, None)
    held = {c.addr for c in ipam.allocator.lookup(target.key)}
    try:
        for arg in args or DEFAULT:
            if arg.kind is AddressKind.CIDR:
                assert arg.interface is not None
                cidr = CIDR.parse(arg.interface.with_prefixlen)
                cidr = await ipam.claim(target.key, cidr, wait=wait, durable=durable)
            elif arg.kind is AddressKind.IP:
                assert arg.address is not None
                prefix = ipaddress.IPv4Network(str(default)).prefixlen
                cidr = CIDR.parse(f"{arg.address}/{prefix}")
                cidr = await ipam.claim(target.key, cidr, wait=wait, durable=durable)
            else:
                subnet = default if arg.kind is AddressKind.DEFAULT else _subnet(arg)
                cidr = await ipam.allocate(target.key, subnet, wait=wait, durable=durable)
            out.append(ipaddress.IPv4Interface(str(cidr)))
    except BaseException:
        release(ipam, target, [i for i in out if int(i.ip) not in held])
        raise
    return out


def release(ipam: IpamPart, target: Target, addresses: list[ipaddress.IPv4Interface]) -> None:
    """Give `addresses` back to IPAM now (what IPAM does not know is not an error)."""
    for iface in addresses:
        with contextlib.suppress(IpamError):
            ipam.allocator.release_address(target.key, int(iface.ip), time.time())


def held_by(target: Target, known: dict[str, Attachment]) -> Held:
    """The target's addresses as we last saw them (attach, detach and resync keep them)."""
    previous = known.get(target.key)
    return {i.ip: i for i in previous.addresses} if previous else {}


def to_detach(
    ipam: IpamPart, spec: Spec, target: Target, held: Held, args: tuple[AddressArg, ...], text: str
) -> list[ipaddress.IPv4Interface]:
    """The attached addresses a detach request names (`text`: the target as the user wrote
    it); UsageError for one that is not attached."""
    return [_detach_address(ipam, spec, arg, target, held, text) for arg in args or DEFAULT]


def _detach_address(
    ipam: IpamPart, spec: Spec, arg: AddressArg, target: Target, held: Held, text: str
) -> ipaddress.IPv4Interface:
    if arg.kind in (AddressKind.DEFAULT, AddressKind.SUBNET):
        subnet = subnet_for(spec, None) if arg.kind is AddressKind.DEFAULT else _subnet(arg)
        for cidr in ipam.allocator.lookup(target.key, subnet):
            ip = ipaddress.IPv4Address(str(cidr).split("/")[0])
            if ip in held:
                return held[ip]
        where = "the default subnet " if arg.kind is AddressKind.DEFAULT else ""
        raise UsageError(
            f"{text} has no address from IPAM in {where}{subnet}\n"
            f"  hint: name the addresses to remove: weaved detach ADDR/LEN ... {text}"
        )
    wanted = arg.interface.ip if arg.interface else arg.address
    if wanted is None or wanted not in held:
        raise UsageError(f"{arg.text} is not attached to {text}")
    return held[wanted]


def _subnet(arg: AddressArg) -> CIDR:
    """`net:CIDR` as IPAM takes it: a network address, big enough to allocate from."""
    try:
        return CIDR.parse_subnet(arg.text.removeprefix("net:"))
    except ValueError as exc:
        raise UsageError(f"{arg.text}: {exc}") from None
