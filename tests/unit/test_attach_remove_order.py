"""Which of ethwe's addresses a detach removes in what order (attach/inside.py), and an
address the kernel already took away counting as removed. The kernel's rule: removing a
subnet's primary address takes its secondaries along unless promote_secondaries is on."""

from __future__ import annotations

import errno
import ipaddress

import pytest

from weaved.attach.inside import removal_order, remove_address
from weaved.attach.kernel import AttachError
from weaved.dataplane.rtnl import Addr

Iface = ipaddress.IPv4Interface
IP = ipaddress.IPv4Address


def addr(text: str, secondary: bool = False) -> Addr:
    iface = Iface(text)
    return Addr(7, iface.network.prefixlen, str(iface.ip), "ethwe", secondary)


HAVE = [
    addr("10.32.0.5/12"),
    addr("10.32.0.6/12", secondary=True),
    addr("10.32.0.7/12", secondary=True),
    addr("10.2.1.5/24"),
    addr("10.32.0.8/16"),  # same network bits, another prefix: its own primary
]


def test_secondaries_go_first_and_need_no_promotion() -> None:
    order, promote = removal_order(HAVE, {IP("10.32.0.5"), IP("10.32.0.6"), IP("10.32.0.7")})
    assert order == [Iface("10.32.0.6/12"), Iface("10.32.0.7/12"), Iface("10.32.0.5/12")]
    assert not promote


def test_a_primary_whose_secondary_stays_needs_promotion() -> None:
    order, promote = removal_order(HAVE, {IP("10.32.0.5"), IP("10.32.0.7")})
    assert order == [Iface("10.32.0.7/12"), Iface("10.32.0.5/12")] and promote


def test_other_subnets_and_prefixes_are_not_secondaries() -> None:
    assert removal_order(HAVE, {IP("10.2.1.5")}) == ([Iface("10.2.1.5/24")], False)
    assert removal_order(HAVE, {IP("10.32.0.8")}) == ([Iface("10.32.0.8/16")], False)
    assert removal_order(HAVE, {IP("10.9.9.9")}) == ([], False)


class FakeNetlink:
    """Refuses every removal with `code`; lists `left` as the link's addresses."""

    def __init__(self, code: int, left: list[Addr]) -> None:
        self.code, self.left = code, left

    def delete_address(self, index: int, iface: Iface) -> None:
        raise OSError(self.code, "refused")

    def addresses(self, index: int) -> list[Addr]:
        return self.left


def test_an_address_already_gone_counts_as_removed() -> None:
    nls = FakeNetlink(errno.EADDRNOTAVAIL, [addr("10.2.1.5/24")])
    remove_address(nls, 7, "ethwe", Iface("10.32.0.6/12"))  # type: ignore[arg-type]


def test_a_refusal_of_an_address_still_there_says_what_and_why() -> None:
    still = FakeNetlink(errno.EADDRNOTAVAIL, [addr("10.32.0.6/12", secondary=True)])
    with pytest.raises(AttachError, match=r"remove 10.32.0.6/12 from ethwe: EADDRNOTAVAIL"):
        remove_address(still, 7, "ethwe", Iface("10.32.0.6/12"))  # type: ignore[arg-type]
    other = FakeNetlink(errno.EPERM, [])
    with pytest.raises(AttachError, match=r"remove 10.32.0.6/12 from ethwe: EPERM"):
        remove_address(other, 7, "ethwe", Iface("10.32.0.6/12"))  # type: ignore[arg-type]
