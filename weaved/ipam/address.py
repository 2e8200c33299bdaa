"""IPv4 addresses as integers, half-open ranges and CIDRs — the arithmetic IPAM is built on.

Weave keeps addresses as uint32 everywhere (ring tokens, gob fields), so we do the same and only
format them as dotted quads at the edges.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

ADDRESS_SPACE = 1 << 32
MIN_SUBNET_SIZE = 4
"""A subnet must leave at least two host addresses once network and broadcast are excluded."""


def format_ip(addr: int) -> str:
    """`169869312` -> `10.32.0.0`."""
    return str(ipaddress.IPv4Address(addr))


def parse_ip(text: str) -> int:
    """`10.32.0.0` -> `169869312`; ValueError for anything that is not a dotted IPv4 address."""
    return int(ipaddress.IPv4Address(text))


@dataclass(frozen=True, order=True)
class Range:
    """`[start, end)` over the 32-bit address space."""

    start: int
    end: int

    @property
    def size(self) -> int:
        return self.end - self.start

    def contains(self, addr: int) -> bool:
        return self.start <= addr < self.end

    def overlaps(self, other: Range) -> bool:
        return not (self.start >= other.end or self.end <= other.start)

    def __str__(self) -> str:
        # Weave prints ranges inclusive of their last address.
        return f"{format_ip(self.start)}-{format_ip(self.end - 1)}"

    def as_cidr_string(self) -> str:
        """`10.32.0.0/12` when the range is a power-of-two sized block, else `a-b`."""
        size = self.size
        if size <= 0 or size & (size - 1):
            return str(self)
        return f"{format_ip(self.start)}/{32 - (size.bit_length() - 1)}"


@dataclass(frozen=True, order=True)
class CIDR:
    """An address with a prefix length; as a subnet, `addr` is the network address."""

    addr: int
    prefix_len: int

    @classmethod
    def parse(cls, text: str) -> CIDR:
        """`10.32.0.1/12` keeps the host bits (use `is_subnet` to insist on a network address)."""
        iface = ipaddress.IPv4Interface(text)
        if "/" not in text:
            raise ValueError(f"{text!r} has no prefix length")
        return cls(int(iface.ip), iface.network.prefixlen)

    @classmethod
    def parse_subnet(cls, text: str) -> CIDR:
        """A subnet as Weave accepts one: network address only, at least `MIN_SUBNET_SIZE`."""
        cidr = cls.parse(text)
        if not cidr.is_subnet:
            raise ValueError(f"invalid subnet - bits after network prefix are not all zero: {text}")
        if cidr.size < MIN_SUBNET_SIZE:
            raise ValueError(
                f"invalid subnet - smaller than minimum size {MIN_SUBNET_SIZE}: {text}"
            )
        return cidr

    @property
    def size(self) -> int:
        return 1 << (32 - self.prefix_len)

    @property
    def is_subnet(self) -> bool:
        return self.addr & (self.size - 1) == 0

    @property
    def network(self) -> CIDR:
        return CIDR(self.addr & ~(self.size - 1) & 0xFFFFFFFF, self.prefix_len)

    def range(self) -> Range:
        return Range(self.addr, self.addr + self.size)

    def host_range(self) -> Range:
        """The subnet without its network and broadcast addresses (RFC 1122)."""
        return Range(self.addr + 1, self.addr + self.size - 1)

    def with_addr(self, addr: int) -> CIDR:
        """The same prefix length around another address (an allocation inside this subnet)."""
        return CIDR(addr, self.prefix_len)

    def __str__(self) -> str:
        return f"{format_ip(self.addr)}/{self.prefix_len}"


def biggest_cidr_range(r: Range) -> Range:
    """A large CIDR-aligned block inside `r`, chosen exactly as Weave 2.8.1 chooses it.

    This is Weave's heuristic, not an exhaustive search: with `m` the largest power of two not
    above the size, it takes the first m-aligned block if one fits, else an m/2 block near the
    start. Donations must match it bit for bit (trace b: 10.44.0.0/14, then 10.36.0.0/14).
    """
    size = r.size
    if size <= 0:
        return r
    top = 1 << (size.bit_length() - 1)
    spare = size & (top - 1)
    misalign = r.start & (top - 1)
    if misalign == 0:
        return Range(r.start, r.start + top)
    if top - misalign <= spare:
        start = r.start + top - misalign
        return Range(start, start + top)
    half = top // 2
    start = r.start + half - misalign if half >= misalign else r.start + top - misalign
    return Range(start, start + half)
