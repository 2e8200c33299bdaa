"""Addresses, CIDRs and the owned/free space of one peer."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from weaved.ipam.address import CIDR, Range, biggest_cidr_range, format_ip, parse_ip
from weaved.ipam.space import Space, SpaceError


def ip(text: str) -> int:
    return parse_ip(text)


def test_cidr_parse_and_ranges() -> None:
    c = CIDR.parse_subnet("10.32.0.0/12")
    assert (c.addr, c.prefix_len, c.size) == (169869312, 12, 1 << 20)
    assert c.range() == Range(169869312, 170917888)
    assert c.host_range() == Range(169869313, 170917887)
    assert str(c.with_addr(ip("10.32.0.1"))) == "10.32.0.1/12"
    assert CIDR.parse("10.32.0.1/12").network == c
    with pytest.raises(ValueError, match="not all zero"):
        CIDR.parse_subnet("10.32.0.1/12")
    with pytest.raises(ValueError, match="minimum size"):
        CIDR.parse_subnet("10.32.0.0/31")
    assert Range(ip("10.32.0.0"), ip("10.48.0.0")).as_cidr_string() == "10.32.0.0/12"
    assert str(Range(5, 7)) == "0.0.0.5-0.0.0.6"


@pytest.mark.parametrize(
    ("start", "end", "expected"),
    [
        ("10.32.0.2", "10.48.0.0", ("10.40.0.0", 1 << 19)),  # trace b, first donation
        ("10.32.0.2", "10.44.0.0", ("10.36.0.0", 1 << 18)),  # trace b, second donation
        ("10.32.0.0", "10.48.0.0", ("10.32.0.0", 1 << 20)),
        ("10.0.0.5", "10.0.0.6", ("10.0.0.5", 1)),
        ("10.0.0.3", "10.0.0.9", ("10.0.0.4", 4)),
        ("10.0.0.7", "10.0.0.13", ("10.0.0.8", 4)),
    ],
)
def test_biggest_cidr_range(start: str, end: str, expected: tuple[str, int]) -> None:
    r = biggest_cidr_range(Range(ip(start), ip(end)))
    assert (format_ip(r.start), r.size) == expected


@given(st.integers(0, 1 << 20), st.integers(1, 1 << 16))
def test_biggest_cidr_range_is_aligned_and_inside(start: int, size: int) -> None:
    r = biggest_cidr_range(Range(start, start + size))
    assert start <= r.start and r.end <= start + size
    assert r.size & (r.size - 1) == 0 and r.start % r.size == 0
    assert r.size * 4 > size  # never worse than a quarter of the span


def test_allocate_lowest_free_in_range() -> None:
    s = Space()
    s.add(Range(100, 110))
    assert s.allocate(Range(101, 109)) == 101
    assert s.allocate(Range(101, 109)) == 102
    s.free(101)
    assert s.allocate(Range(101, 109)) == 101
    assert s.allocate(Range(200, 300)) is None
    assert s.num_free() == 8 and s.num_allocated() == 2


def test_claim_and_free_errors() -> None:
    s = Space()
    s.add(Range(0, 4))
    s.claim(2)
    with pytest.raises(SpaceError, match="not free to claim"):
        s.claim(2)
    with pytest.raises(SpaceError, match="not ours"):
        s.free(3)
    s.free(2)
    assert s.owned_ranges() == [Range(0, 4)]


def test_donate_trace_b() -> None:
    s = Space()
    s.add(Range(ip("10.32.0.0"), ip("10.48.0.0")))
    s.claim(ip("10.32.0.1"))
    subnet = Range(ip("10.32.0.0"), ip("10.48.0.0"))
    assert s.donate(subnet) == Range(ip("10.44.0.0"), ip("10.48.0.0"))
    s.claim(ip("10.32.0.2"))
    assert s.donate(subnet) == Range(ip("10.36.0.0"), ip("10.40.0.0"))
    assert s.owned_ranges() == [
        Range(ip("10.32.0.0"), ip("10.36.0.0")),
        Range(ip("10.40.0.0"), ip("10.44.0.0")),
    ]


def test_donate_single_address_for_a_claim() -> None:
    s = Space()
    s.add(Range(0, 16))
    assert s.donate(Range(5, 6)) == Range(5, 6)
    s.claim(7)
    assert s.donate(Range(7, 8)) is None


def test_has_allocations_in() -> None:
    s = Space()
    s.add(Range(0, 100))
    s.claim(50)
    assert s.has_allocations_in([Range(40, 51)])
    assert s.has_allocations_in([Range(50, 51)])
    assert not s.has_allocations_in([Range(0, 50), Range(51, 100)])


def test_set_owned_drops_lost_free_space_keeps_allocations() -> None:
    s = Space()
    s.add(Range(0, 100))
    s.claim(10)
    s.set_owned([Range(0, 50), Range(200, 210)])
    assert s.owned_ranges() == [Range(0, 50), Range(200, 210)]
    assert s.is_allocated(10)


@settings(max_examples=150, deadline=None)
@given(
    st.lists(
        st.tuples(st.sampled_from(["alloc", "claim", "free", "donate"]), st.integers(0, 63)),
        max_size=60,
    )
)
def test_space_matches_a_set_model(ops: list[tuple[str, int]]) -> None:
    s = Space()
    s.add(Range(0, 64))
    owned, allocated = set(range(64)), set[int]()
    for op, n in ops:
        if op == "alloc":
            got = s.allocate(Range(n, 64))
            want = min((a for a in owned - allocated if a >= n), default=None)
            assert got == want
            if got is not None:
                allocated.add(got)
        elif op == "claim":
            if n in owned - allocated:
                s.claim(n)
                allocated.add(n)
            else:
                with pytest.raises(SpaceError):
                    s.claim(n)
        elif op == "free" and n in allocated:
            s.free(n)
            allocated.discard(n)
        elif op == "donate":
            gift = s.donate(Range(0, 64))
            if gift is not None:
                given_away = set(range(gift.start, gift.end))
                assert not given_away & allocated and given_away <= owned
                owned -= given_away
        assert s.num_free() == len(owned - allocated)
        assert s.num_allocated() == len(allocated)


def test_donate_never_offers_only_unusable_addresses() -> None:
    """A full /29 leaves its network and broadcast addresses free: nothing to give (Weave
    would pass the lone broadcast address from peer to peer forever)."""
    s = Space()
    s.add(Range(0, 8))
    for a in range(1, 7):
        s.claim(a)
    assert s.donate(Range(0, 8), Range(1, 7)) is None
    assert s.donate(Range(7, 8), Range(7, 8)) == Range(7, 8)  # a claim of it is fine


def test_donate_replaces_useless_upper_half() -> None:
    s = Space()
    s.add(Range(62, 64))
    assert s.donate(Range(0, 64), Range(1, 63)) == Range(62, 64)
