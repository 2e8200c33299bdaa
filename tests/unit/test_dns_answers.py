"""Answers as Weave Net 2.8.1 gives them, checked by parsing our bytes back with dnslib."""

from __future__ import annotations

import random
import struct
import time
from collections import Counter

import pytest
from dnslib import EDNS0, QTYPE, RCODE, RR, A, DNSRecord

from weaved.dns.answers import (
    RCODE_SERVFAIL,
    Answerer,
    error_reply,
    truncated_reply,
    udp_limit,
)
from weaved.dns.zone import Zone, ip_to_int
from weaved.mesh.gossip_api import PeerName

US = PeerName(0x3E80E75A63A7)
THEM = PeerName(0x2A9FF1998A21)
NOW = 1795304244


@pytest.fixture
def zone() -> Zone:
    z = Zone(US)
    z.add("c1.weave.local.", "c1", US, ip_to_int("10.32.0.1"))
    z.add("C1.weave.local.", "other", THEM, ip_to_int("10.32.0.9"))
    z.add("web.weave.local.", "w1", US, ip_to_int("10.32.0.2"))
    z.add("web.weave.local.", "w2", US, ip_to_int("10.32.0.3"))
    z.add("web.weave.local.", "w3", THEM, ip_to_int("10.40.0.1"))
    for i in range(50):
        z.add("big.weave.local.", f"b{i}", US, ip_to_int(f"10.44.0.{i}"))
    return z


@pytest.fixture
def answerer(zone: Zone) -> Answerer:
    return Answerer(zone, "weave.local.", ttl=1, rng=random.Random(7))


def query(name: str, qtype: str = "A", bufsize: int | None = None, rd: bool = True) -> bytes:
    q = DNSRecord.question(name, qtype)
    q.header.rd = int(rd)
    if bufsize is not None:
        q.add_ar(EDNS0(udp_len=bufsize))
    return bytes(q.pack())


def ask(a: Answerer, q: bytes, tcp: bool = False) -> DNSRecord:
    raw = a.respond(q, tcp)
    assert raw, "expected an answer, got forward/drop"
    return DNSRecord.parse(raw)


def addrs(r: DNSRecord) -> list[str]:
    return [str(rr.rdata) for rr in r.rr]


def test_a_record_answer(answerer: Answerer) -> None:
    q = query("web.weave.local")
    r = ask(answerer, q)
    assert r.header.id == DNSRecord.parse(q).header.id
    assert (r.header.qr, r.header.aa, r.header.rd, r.header.ra, r.header.tc) == (1, 1, 1, 1, 0)
    assert r.header.rcode == RCODE.NOERROR
    assert sorted(addrs(r)) == ["10.32.0.2", "10.32.0.3", "10.40.0.1"]
    assert {rr.ttl for rr in r.rr} == {1}
    assert {str(rr.rname) for rr in r.rr} == {"web.weave.local."}
    assert r.q.qtype == QTYPE.A


def test_rd_and_cd_bits_are_copied(answerer: Answerer) -> None:
    r = ask(answerer, query("web.weave.local", rd=False))
    assert r.header.rd == 0
    q = DNSRecord.question("web.weave.local")
    q.header.cd = 1
    assert ask(answerer, bytes(q.pack())).header.cd == 1


def test_names_are_case_insensitive_and_the_question_is_echoed(answerer: Answerer) -> None:
    r = ask(answerer, query("C1.WEAVE.Local"))
    assert sorted(addrs(r)) == ["10.32.0.1", "10.32.0.9"]  # c1 and C1 both answer
    assert str(r.q.qname) == "C1.WEAVE.Local."
    assert {str(rr.rname) for rr in r.rr} == {"C1.WEAVE.Local."}


def test_unqualified_names_are_qualified_on_the_server(answerer: Answerer) -> None:
    r = ask(answerer, query("web"))
    assert sorted(addrs(r)) == ["10.32.0.2", "10.32.0.3", "10.40.0.1"]
    assert str(r.q.qname) == "web."
    assert ask(answerer, query("nothere")).header.rcode == RCODE.NXDOMAIN


@pytest.mark.parametrize("qtype", ["AAAA", "MX", "TXT", "SRV"])
def test_other_types_for_a_known_name_are_empty_noerror(answerer: Answerer, qtype: str) -> None:
    r = ask(answerer, query("web.weave.local", qtype))
    assert r.header.rcode == RCODE.NOERROR
    assert (r.header.aa, r.header.ra) == (1, 1)
    assert r.rr == []


def test_unknown_name_in_domain_is_nxdomain(answerer: Answerer) -> None:
    for qtype in ("A", "AAAA"):
        r = ask(answerer, query("nope.weave.local", qtype))
        assert r.header.rcode == RCODE.NXDOMAIN
        assert (r.header.aa, r.header.ra) == (0, 1)
        assert r.rr == [] and r.auth == []


def test_names_outside_the_domain_are_forwarded(answerer: Answerer) -> None:
    assert answerer.respond(query("example.com")) is None
    assert answerer.respond(query("weave.local.example.com")) is None
    assert answerer.respond(query(".", "NS")) is None


def test_ptr_for_a_known_address(answerer: Answerer) -> None:
    r = ask(answerer, query("2.0.32.10.in-addr.arpa", "PTR"))
    assert [str(rr.rdata) for rr in r.rr] == ["web.weave.local."]
    assert r.rr[0].rtype == QTYPE.PTR and r.rr[0].ttl == 1
    assert r.header.aa == 1
    assert ask(answerer, query("2.0.32.10.IN-ADDR.ARPA", "PTR")).rr[0].rtype == QTYPE.PTR


def test_reverse_rules(answerer: Answerer) -> None:
    assert answerer.respond(query("99.0.32.10.in-addr.arpa", "PTR")) is None  # not ours: upstream
    r = ask(answerer, query("2.0.32.10.in-addr.arpa", "A"))
    assert r.header.rcode == RCODE.NXDOMAIN  # Weave: non-PTR reverse queries
    assert ask(answerer, query("0.32.10.in-addr.arpa", "PTR")).header.rcode == RCODE.NXDOMAIN


def test_udp_answers_are_cut_to_512_bytes_with_tc(answerer: Answerer) -> None:
    raw = answerer.respond(query("big.weave.local"))
    assert raw is not None and len(raw) <= 512
    r = DNSRecord.parse(raw)
    assert r.header.tc == 1
    assert 1 < len(r.rr) < 50
    assert len(raw) + 16 > 512  # the largest prefix that fits


def test_edns0_size_is_honoured(answerer: Answerer) -> None:
    raw = answerer.respond(query("big.weave.local", bufsize=700))
    assert raw is not None and 700 - 16 < len(raw) <= 700
    assert DNSRecord.parse(raw).header.tc == 1
    raw = answerer.respond(query("big.weave.local", bufsize=4096))
    assert raw is not None
    r = DNSRecord.parse(raw)
    assert (r.header.tc, len(r.rr)) == (0, 50)
    small = answerer.respond(query("big.weave.local", bufsize=100))
    assert small is not None and 512 - 16 < len(small) <= 512  # below 512 counts as 512


def test_tcp_gets_the_full_answer(answerer: Answerer) -> None:
    r = ask(answerer, query("big.weave.local"), tcp=True)
    assert (r.header.tc, len(r.rr)) == (0, 50)
    assert sorted(addrs(r)) == sorted(f"10.44.0.{i}" for i in range(50))
    # ... and a full TCP answer is never reused for UDP.
    assert ask(answerer, query("big.weave.local")).header.tc == 1


def test_repeated_queries_get_the_same_answers(answerer: Answerer) -> None:
    for name, qtype in [("web", "A"), ("c1.weave.local", "AAAA"), ("nope.weave.local", "A")]:
        q = query(name, qtype)
        first, again = ask(answerer, q), ask(answerer, q)
        assert (first.header.rcode, first.header.aa) == (again.header.rcode, again.header.aa)
        assert sorted(addrs(first)) == sorted(addrs(again))
        assert again.header.id == DNSRecord.parse(q).header.id


def test_answers_are_shuffled(answerer: Answerer) -> None:
    orders = Counter(tuple(addrs(ask(answerer, query("web.weave.local")))) for _ in range(120))
    assert len(orders) == 6  # every permutation of three addresses is served
    firsts = Counter(
        addrs(ask(answerer, query("big.weave.local"), tcp=True))[0] for _ in range(500)
    )
    assert len(firsts) == 50  # with many addresses, each still comes first


def test_answers_follow_zone_changes(zone: Zone, answerer: Answerer) -> None:
    assert addrs(ask(answerer, query("c1.weave.local"))) != []
    zone.container_died(NOW, "c1")
    assert addrs(ask(answerer, query("c1.weave.local"))) == ["10.32.0.9"]
    zone.add("new.weave.local.", "n", US, ip_to_int("10.32.0.77"))
    assert addrs(ask(answerer, query("new.weave.local"))) == ["10.32.0.77"]
    zone.peer_gone(THEM)
    assert ask(answerer, query("c1.weave.local")).header.rcode == RCODE.NXDOMAIN
    assert answerer.respond(query("1.0.32.10.in-addr.arpa", "PTR")) is None


def test_ttl_and_domain_from_the_spec() -> None:
    z = Zone(US)
    z.add("db.corp.internal.", "d", US, ip_to_int("10.1.0.1"))
    a = Answerer(z, "corp.internal", ttl=30)
    r = ask(a, query("db.corp.internal"))
    assert [rr.ttl for rr in r.rr] == [30]
    assert a.respond(query("db.weave.local")) is None
    assert addrs(ask(a, query("db"))) == ["10.1.0.1"]


def test_unusual_queries_go_through_dnslib(answerer: Answerer) -> None:
    # An extra (non-OPT) additional record takes the slow path but gets the same answer.
    q = DNSRecord.question("web.weave.local")
    q.add_ar(RR("x.example.", QTYPE.A, rdata=A("1.2.3.4")))
    r = ask(answerer, bytes(q.pack()))
    assert r.header.id == q.header.id
    assert sorted(addrs(r)) == ["10.32.0.2", "10.32.0.3", "10.40.0.1"]
    assert answerer.respond(bytes(DNSRecord.question("example.com").pack())) is None


def test_bad_queries(answerer: Answerer) -> None:
    q = query("web.weave.local")
    assert answerer.respond(q[:5]) == b""  # not even a header: drop
    response = bytearray(q)
    response[2] |= 0x80
    assert answerer.respond(bytes(response)) == b""  # never answer answers
    notify = bytearray(q)
    notify[2] |= 4 << 3
    assert DNSRecord.parse(answerer.respond(bytes(notify))).header.rcode == RCODE.NOTIMP
    assert DNSRecord.parse(answerer.respond(q[:-3])).header.rcode == RCODE.FORMERR
    two = bytearray(q)
    two[5] = 2
    assert DNSRecord.parse(answerer.respond(bytes(two) + q[12:])).header.rcode == RCODE.FORMERR


def test_lookup_for_the_cli(answerer: Answerer) -> None:
    assert sorted(answerer.lookup("web")) == ["10.32.0.2", "10.32.0.3", "10.40.0.1"]
    assert sorted(answerer.lookup("WEB.weave.local.")) == ["10.32.0.2", "10.32.0.3", "10.40.0.1"]
    assert answerer.lookup("nope") == []
    assert answerer.lookup("example.com") == []


def test_forwarding_helpers() -> None:
    q = query("example.com", bufsize=1232)
    assert udp_limit(q) == 1232
    assert udp_limit(query("example.com")) == 512
    fail = DNSRecord.parse(error_reply(q, RCODE_SERVFAIL))
    assert fail.header.rcode == RCODE.SERVFAIL and str(fail.q.qname) == "example.com."
    assert fail.header.id == DNSRecord.parse(q).header.id
    big = struct.pack(">HHHHHH", 0, 0x8180, 1, 1, 0, 0)
    cut = DNSRecord.parse(truncated_reply(big, q))
    assert cut.header.tc == 1 and cut.rr == [] and str(cut.q.qname) == "example.com."


@pytest.mark.parametrize(("qd", "ar"), [(65535, 0), (0, 0), (2, 0), (1, 65535)])
def test_question_and_record_count_floods_get_formerr_at_constant_cost(
    answerer: Answerer, qd: int, ar: int
) -> None:
    """A QDCOUNT of 65 535 (each question a 2-byte pointer) kept the server at 94 % CPU."""
    q = struct.pack(">HHHHHH", 7, 0x0100, qd, 0, 0, ar) + b"\x01a\x00\x00\x01\x00\x01"
    q += b"\xc0\x0c\x00\x01\x00\x01" * 680
    start = time.perf_counter()
    for _ in range(100):
        r = answerer.respond(q)
    assert (time.perf_counter() - start) / 100 < 0.0002  # was ~4 ms
    assert r is not None and r[:2] == q[:2]
    assert r[3] & 0x0F == RCODE.FORMERR


def test_answers_from_the_cache_are_the_answers_built_fresh(zone: Zone) -> None:
    """A query asked again is answered from what the first one left (keyed by every byte
    after the id): same header, question and records as a fresh answerer builds."""
    rd_off = query("c1.weave.local", rd=False)
    cd = DNSRecord.question("Web.Weave.Local")
    cd.header.cd = 1
    asked = [
        query("c1.weave.local"),
        rd_off,
        bytes(cd.pack()),
        query("wEB"),
        query("web.weave.local", "AAAA"),
        query("nope.weave.local"),
        query("web.weave.local", bufsize=1232),
        query("big.weave.local"),
    ]

    def canonical(raw: bytes) -> tuple[object, ...]:
        r = DNSRecord.parse(raw)
        h = r.header
        records = len(r.rr) if h.tc else sorted(map(str, r.rr))  # cut: any prefix of a shuffle
        return (h.id, h.bitmap, h.q, h.a, str(r.q.qname), r.q.qtype, records)

    warm = Answerer(zone, "weave.local.", ttl=1, rng=random.Random(1))
    for q in asked:
        warm.respond(q)
    for q in asked:
        again = struct.pack(">H", 4242) + q[2:]  # another id
        fresh = Answerer(zone, "weave.local.", ttl=1, rng=random.Random(2)).respond(again)
        cached = warm.respond(again)
        assert cached is not None and fresh is not None
        assert canonical(cached) == canonical(fresh)
        assert DNSRecord.parse(cached).header.id == 4242


def test_many_spellings_of_a_name_share_its_prepared_orders(answerer: Answerer) -> None:
    """Case variants are cached one by one (each echoes its spelling) without a copy of
    every order of the addresses each: a flood of spellings cannot multiply memory."""
    spellings = [
        "".join(c.upper() if (i >> k) & 1 else c for k, c in enumerate("web")) for i in range(8)
    ]
    for name in spellings:
        for _ in range(2):
            r = ask(answerer, query(f"{name}.weave.local"))
            assert str(r.q.qname) == f"{name}.weave.local."
            assert sorted(addrs(r)) == ["10.32.0.2", "10.32.0.3", "10.40.0.1"]
    orders = {id(v[1]) for v in answerer._ready.values() if isinstance(v, tuple)}
    assert len(orders) == 1
