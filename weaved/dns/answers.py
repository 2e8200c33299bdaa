"""DNS answers for the weaveDNS domain, as Weave Net 2.8.1 gives them. Pure: bytes in, bytes out.

Rules (Weave's `nameserver/dns.go`):
* a name in the domain, or a single-label name (qualified with the domain on the server side),
  is answered from the zone: A → every live address, shuffled, TTL from the spec; any other
  type for a known name → NOERROR with an empty answer; unknown name → NXDOMAIN. Answers are
  authoritative (AA) and say recursion is available (RA); errors carry RA only.
* `*.in-addr.arpa.`: PTR for an address in the zone; an address not in the zone is forwarded;
  a non-PTR type or an unparsable address → NXDOMAIN.
* everything else is forwarded upstream (`respond` returns None).
* over UDP the answer is cut to the largest prefix that fits 512 bytes or the client's EDNS0
  size, with TC set (a single record is never cut); over TCP the full answer is sent.

Differences from Weave, on purpose: answer names are compressed (a pointer to the question),
so about twice as many addresses fit a UDP answer; an EDNS0 size below 512 counts as 512.
Like Weave, replies carry no OPT record.

Speed: a plain query (no EDNS0) asked before, whose answer fits 512 bytes, is answered by
one dict lookup of everything after its id (which decides the whole response) and one
concatenation: its id and the response kept for those bytes. Other queries check their
header bytes, walk the labels of their question, and use a response prepared once per
(name as spelt, type): a prepared header, the query's own question bytes (so the client's
spelling is echoed), and a prepared answer section whose records point back at the question
name. Both caches are dropped whenever the zone changes. The order of the addresses comes
from a few prepared permutations used in turn. dnslib is only used for unusual queries.
"""

from __future__ import annotations

import ipaddress
import itertools
import random
import struct
from typing import Final

from dnslib import DNSError, DNSRecord

from weaved.dns.zone import Zone

TYPE_A: Final = 1
TYPE_PTR: Final = 12
TYPE_OPT: Final = 41
CLASS_IN: Final = 1

RCODE_NOERROR: Final = 0
RCODE_FORMERR: Final = 1
RCODE_SERVFAIL: Final = 2
RCODE_NXDOMAIN: Final = 3
RCODE_NOTIMP: Final = 4

MIN_UDP_SIZE: Final = 512
MAX_MESSAGE: Final = 65535

_QR = 0x8000
_AA = 0x0400
_TC = 0x0200
_RD = 0x0100
_RA = 0x0080
_CD = 0x0010

_POINTER_TO_QNAME = b"\xc0\x0c"
_ONE_QUESTION_ONLY = b"\x00\x01\x00\x00\x00\x00"
_OPT_TYPE = b"\x00\x29"
_REVERSE_SUFFIX = (b"in-addr", b"arpa")
_CACHE_LIMIT = 100_000
_MAX_EXTRA_RECORDS = 4  # answer + authority + additional records a query may carry (OPT, TSIG)
_MAX_PERMUTATIONS = 64


class Prepared:
    """A ready response for one (name, type), minus the id and the echoed question."""

    __slots__ = ("count", "headers", "perms", "rr_size", "size_after_question")

    def __init__(self, flags: int, rcode: int, records: list[bytes], rng: random.Random) -> None:
        self.count = len(records)
        # Flags and counts for each value of the query's (RD, CD) bits, which a reply copies.
        self.headers = tuple(
            struct.pack(
                ">HHHHH",
                flags | rcode | (_RD if bits & 1 else 0) | (_CD if bits & 2 else 0),
                1,
                self.count,
                0,
                0,
            )
            for bits in range(4)
        )
        self.perms = tuple(b"".join(p) for p in _permutations(records, rng))
        self.rr_size = len(records[0]) if records else 0
        self.size_after_question = len(self.perms[0])


def _permutations(records: list[bytes], rng: random.Random) -> list[list[bytes]]:
    """Orders to serve in turn: all of them for small sets; otherwise rotations of a shuffle,
    so that every address comes first equally often (what clients mostly use)."""
    n = len(records)
    if n <= 1:
        return [records]
    if n <= 4:
        orders = [list(p) for p in itertools.permutations(records)]
        rng.shuffle(orders)
        return orders
    base = list(records)
    rng.shuffle(base)
    if n <= _MAX_PERMUTATIONS:
        return [base[i:] + base[:i] for i in range(n)]
    orders = []
    for _ in range(_MAX_PERMUTATIONS):
        rng.shuffle(base)
        orders.append(list(base))
    return orders


def encode_name(name: str) -> bytes:
    """`a.b.` -> wire labels (no compression). Raises ValueError for names DNS cannot carry."""
    out = bytearray()
    for label in name.rstrip(".").split(".") if name.strip(".") else []:
        raw = label.encode()
        if not 0 < len(raw) < 64:
            raise ValueError(f"bad label in {name!r}")
        out.append(len(raw))
        out += raw
    out.append(0)
    if len(out) > 255:
        raise ValueError(f"name too long: {name!r}")
    return bytes(out)


def _labels(wire: bytes) -> list[bytes]:
    """Labels of an uncompressed wire name (validated by the caller's walk)."""
    labels = []
    i = 0
    while wire[i]:
        n = wire[i]
        labels.append(wire[i + 1 : i + 1 + n])
        i += n + 1
    return labels


def parse_reverse(labels: list[bytes]) -> int | None:
    """`4.3.2.1.in-addr.arpa.` labels (without the suffix) -> 1.2.3.4 as a number."""
    if len(labels) != 4:
        return None
    try:
        text = ".".join(label.decode("ascii") for label in reversed(labels))
        return int(ipaddress.IPv4Address(text))
    except (UnicodeDecodeError, ValueError):
        return None


def header_only(query: bytes, rcode: int) -> bytes:
    """A reply carrying just the header (no question): for queries we cannot read."""
    flags = _QR | (query[2] << 8 & 0x7900) | _RA | rcode  # keep opcode and RD
    return query[:2] + struct.pack(">HHHHH", flags, 0, 0, 0, 0)


def question_end(query: bytes) -> tuple[int, int] | None:
    """(end of the question, UDP size limit) for a simple query, None if it is not one."""
    try:
        if query[4:10] != _ONE_QUESTION_ONLY:
            return None
        i = 12
        n = query[i]
        while n:
            if n > 63:
                return None
            i += n + 1
            n = query[i]
        end = i + 5
        if end > len(query):
            return None
        if query[10] or query[11] > 1:
            return None
        if query[11]:
            if query[end] or query[end + 1 : end + 3] != _OPT_TYPE:
                return None
            return end, max(MIN_UDP_SIZE, query[end + 3] << 8 | query[end + 4])
        return end, MIN_UDP_SIZE
    except IndexError:
        return None


class Answerer:
    """Answers queries for `domain` from `zone`; keep one per daemon (it owns the cache)."""

    def __init__(
        self,
        zone: Zone,
        domain: str = "weave.local.",
        ttl: int = 1,
        rng: random.Random | None = None,
    ) -> None:
        self.zone = zone
        self.domain = domain if domain.endswith(".") else domain + "."
        self.ttl = ttl
        self._domain_labels = tuple(_labels(encode_name(self.domain.lower())))
        self._rng = rng if rng is not None else random.Random()
        self._cache: dict[bytes, Prepared] = {}
        self._ready: dict[bytes, bytes | tuple[bytes, tuple[bytes, ...]]] = {}
        self._turn = 0
        self._rr_header = struct.pack(">HHI", TYPE_A, CLASS_IN, ttl)
        zone.subscribe(self._forget)

    def _forget(self) -> None:
        self._cache.clear()
        self._ready.clear()

    # -- the hot path ----------------------------------------------------------------------

    def respond(self, q: bytes, tcp: bool = False) -> bytes | None:
        """The response to query `q`, or None to forward it upstream; b"" means drop it."""
        # The commonest query: a plain one (no EDNS0) asked before, with an answer under 512
        # bytes. Everything after the id decides the response, so it is found by those bytes
        # and is those bytes' whole response minus the id: one dict lookup, one concatenation.
        ready = self._ready.get(q[2:])
        if ready is not None:
            if isinstance(ready, bytes):
                return q[:2] + ready
            self._turn += 1
            head, perms = ready
            return b"".join((q[:2], head, perms[self._turn % len(perms)]))
        try:
            # QR = 0, opcode QUERY, one question, no answers or authorities.
            if q[2] & 0xF8 or q[4:10] != _ONE_QUESTION_ONLY:
                return self._unusual(q, tcp)
            i = 12
            n = q[12]
            while n:
                if n > 63:  # a compression pointer or a reserved label type
                    return self._unusual(q, tcp)
                i += n + 1
                n = q[i]
            end = i + 5
            if end > len(q):
                return self._unusual(q, tcp)
            if tcp:
                limit = MAX_MESSAGE
            elif q[11]:
                if q[10] or q[11] > 1 or q[end] or q[end + 1 : end + 3] != _OPT_TYPE:
                    return self._unusual(q, tcp)
                limit = max(MIN_UDP_SIZE, q[end + 3] << 8 | q[end + 4])
            else:
                limit = MIN_UDP_SIZE
            # Keyed by the name as spelt and the type (one slice).
            key = q[12 : i + 3]
            p = self._cache.get(key)
            fresh = p is None
            if p is None:
                p = self._prepare(q[12 : i + 1], key)
                if p is None:
                    return None
            self._turn += 1
            header = p.headers[(q[2] & 1) | (q[3] >> 3 & 2)]
            if end + p.size_after_question > limit:
                if p.count > 1:
                    if fresh:
                        self._remember(key, p)
                    return self._truncate(q, end, p, p.perms[self._turn % len(p.perms)], limit)
            elif end + p.size_after_question <= MIN_UDP_SIZE and not q[11] and end == len(q):
                # A plain query: its response goes to `_ready` (not `p`: one copy), whole if
                # it has one order, else its head and the orders (shared by all spellings).
                head = header + q[12:end]
                if len(self._ready) >= _CACHE_LIMIT:
                    self._ready.clear()  # bounds memory against floods of random names
                if len(p.perms) == 1:
                    self._ready[q[2:]] = whole = head + p.perms[0]
                    return q[:2] + whole
                self._ready[q[2:]] = (head, p.perms)
                return b"".join((q[:2], head, p.perms[self._turn % len(p.perms)]))
            if fresh:
                self._remember(key, p)
            return b"".join((q[:2], header, q[12:end], p.perms[self._turn % len(p.perms)]))
        except IndexError:
            return self._unusual(q, tcp)

    def _truncate(self, q: bytes, end: int, p: Prepared, answer: bytes, limit: int) -> bytes:
        """Weave's rule: the largest prefix of the shuffled answers that fits, and TC."""
        fit = max(0, (limit - end) // p.rr_size)
        flags = struct.unpack(">H", p.headers[(q[2] & 1) | (q[3] >> 3 & 2)][:2])[0]
        header = struct.pack(">HHHHH", flags | _TC, 1, fit, 0, 0)
        return b"".join((q[:2], header, q[12:end], answer[: fit * p.rr_size]))

    # -- building prepared answers ---------------------------------------------------------

    def _prepare(self, qname: bytes, key: bytes) -> Prepared | None:
        """Built for this name, or shared with other spellings when it has several orders
        (so a flood of spellings cannot hold a copy of every order each)."""
        lowered = qname.lower() + key[-2:]
        p = self._cache.get(lowered)
        if p is None:
            p = self._build(qname, key[-2] << 8 | key[-1])
            if p is not None and len(p.perms) > 1:
                self._remember(lowered, p)
        return p

    def _remember(self, key: bytes, p: Prepared) -> None:
        if len(self._cache) >= _CACHE_LIMIT:
            self._cache.clear()  # bounds memory against floods of random names
        self._cache[key] = p

    def _build(self, qname: bytes, qtype: int) -> Prepared | None:
        labels = [label.lower() for label in _labels(qname)]
        if not labels:
            return None  # the root: upstream's business
        nd = len(self._domain_labels)
        p: Prepared | None
        if len(labels) == 1 or (
            len(labels) >= nd and tuple(labels[len(labels) - nd :]) == self._domain_labels
        ):
            p = self._prepare_local(labels, qtype)
        elif labels[-2:] == list(_REVERSE_SUFFIX):
            p = self._prepare_reverse(labels[:-2], qtype)
            if p is None:
                return None
        else:
            return None
        return p

    def _hostname(self, labels: list[bytes]) -> str:
        name = b".".join(labels).decode("utf-8", "replace") + "."
        return name + self.domain if len(labels) == 1 else name

    def _prepare_local(self, labels: list[bytes], qtype: int) -> Prepared:
        addrs = self.zone.lookup(self._hostname(labels))
        if not addrs:
            return Prepared(_QR | _RA, RCODE_NXDOMAIN, [], self._rng)
        if qtype != TYPE_A:
            # RFC 4074: the name exists, so no error, just nothing of that type.
            return Prepared(_QR | _AA | _RA, RCODE_NOERROR, [], self._rng)
        records = [
            _POINTER_TO_QNAME + self._rr_header + b"\x00\x04" + a.to_bytes(4, "big") for a in addrs
        ]
        return Prepared(_QR | _AA | _RA, RCODE_NOERROR, records, self._rng)

    def _prepare_reverse(self, labels: list[bytes], qtype: int) -> Prepared | None:
        addr = parse_reverse(labels)
        if qtype != TYPE_PTR or addr is None:
            return Prepared(_QR | _RA, RCODE_NXDOMAIN, [], self._rng)
        hostname = self.zone.reverse_lookup(addr)
        if hostname is None:
            return None
        try:
            target = encode_name(hostname)
        except ValueError:
            return Prepared(_QR | _RA, RCODE_SERVFAIL, [], self._rng)
        rr = (
            _POINTER_TO_QNAME
            + struct.pack(">HHIH", TYPE_PTR, CLASS_IN, self.ttl, len(target))
            + target
        )
        return Prepared(_QR | _AA | _RA, RCODE_NOERROR, [rr], self._rng)

    # -- queries off the fast path ---------------------------------------------------------

    def _unusual(self, q: bytes, tcp: bool) -> bytes | None:
        """Compressed question names, extra records, other opcodes, garbage: via dnslib."""
        if len(q) < 12 or q[2] & 0x80:
            return b""  # not a query: never answer, so two servers cannot loop
        if q[2] & 0x78:
            return header_only(q, RCODE_NOTIMP)
        # One question and at most a few extra records, or FORMERR at once: parsing 65 535
        # announced questions (each a 2-byte pointer) is what kept a flood at 94 % CPU.
        qd, an, ns, ar = struct.unpack_from(">HHHH", q, 4)
        if qd != 1 or an + ns + ar > _MAX_EXTRA_RECORDS:
            return header_only(q, RCODE_FORMERR)
        try:
            record = DNSRecord.parse(q)
        except (DNSError, IndexError, ValueError, UnicodeDecodeError):
            return header_only(q, RCODE_FORMERR)
        if len(record.questions) != 1:
            return header_only(q, RCODE_FORMERR)
        question = record.questions[0]
        try:
            qname = encode_name(str(question.qname))
        except ValueError:
            return header_only(q, RCODE_FORMERR)
        # Rebuild it as a plain query and answer that (the question is echoed in its plain form).
        opt = [rr for rr in record.ar if rr.rtype == TYPE_OPT]
        plain = bytearray(q[:4])
        plain += struct.pack(">HHHH", 1, 0, 0, 1 if opt else 0)
        plain += qname + struct.pack(">HH", question.qtype, question.qclass)
        if opt:
            plain += b"\x00" + _OPT_TYPE + struct.pack(">HIH", opt[0].rclass, 0, 0)
        if question_end(bytes(plain)) is None:
            return header_only(q, RCODE_FORMERR)
        return self.respond(bytes(plain), tcp)

    # -- helpers for the CLI ---------------------------------------------------------------

    def lookup(self, name: str) -> list[str]:
        """Addresses `name` resolves to through us, in served order (for `dns-lookup`)."""
        labels = [label.lower().encode() for label in name.rstrip(".").split(".") if label]
        if not labels:
            return []
        nd = len(self._domain_labels)
        local = len(labels) == 1 or tuple(labels[len(labels) - nd :]) == self._domain_labels
        if not local:
            return []
        addrs = self.zone.lookup(self._hostname(labels))
        self._rng.shuffle(addrs)
        return [str(ipaddress.IPv4Address(a)) for a in addrs]


def udp_limit(query: bytes) -> int:
    """The client's UDP size limit (512 or its EDNS0 size), for forwarded answers."""
    found = question_end(query)
    if found is not None:
        return found[1]
    try:
        record = DNSRecord.parse(query)
    except (DNSError, IndexError, ValueError, UnicodeDecodeError):
        return MIN_UDP_SIZE
    for rr in record.ar:
        if rr.rtype == TYPE_OPT:
            return max(MIN_UDP_SIZE, int(rr.rclass))
    return MIN_UDP_SIZE


def error_reply(query: bytes, rcode: int) -> bytes:
    """A reply with the query's question and `rcode` (SERVFAIL when upstreams fail)."""
    found = question_end(query)
    if found is None:
        return header_only(query, rcode) if len(query) >= 12 else b""
    end = found[0]
    flags = _QR | (query[2] << 8 & 0x7900) | (query[3] & _CD) | _RA | rcode
    return query[:2] + struct.pack(">HHHHH", flags, 1, 0, 0, 0) + query[12:end]


def truncated_reply(response: bytes, query: bytes) -> bytes:
    """An upstream answer too big for the client's UDP limit: header + question with TC."""
    found = question_end(query)
    end = found[0] if found is not None else 12
    qd = 1 if found is not None else 0
    flags = struct.unpack(">H", response[2:4])[0] | _TC
    return query[:2] + struct.pack(">HHHHH", flags, qd, 0, 0, 0) + query[12:end]


__all__ = [
    "MAX_MESSAGE",
    "MIN_UDP_SIZE",
    "RCODE_FORMERR",
    "RCODE_NOTIMP",
    "RCODE_NXDOMAIN",
    "RCODE_SERVFAIL",
    "Answerer",
    "Prepared",
    "encode_name",
    "error_reply",
    "header_only",
    "question_end",
    "truncated_reply",
    "udp_limit",
]
