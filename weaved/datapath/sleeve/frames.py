"""Sleeve datagram bodies for the data path (FACTS.md §7.1, §7.3), and how each frame is
carried to one peer. Pure.

Weave's body: records `[6 src peer][6 dst peer][u16 BE length][Ethernet frame]`, batched up
to 100 per datagram while the total fits the path's payload. Frames travel on one of two
paths: DF (raw socket, Don't Fragment) or non-DF (ordinary UDP socket, the kernel may
fragment). `plan_weave` applies Weave's rules: IPv4 with DF, and IPv4 without DF until the
fragmentation test passed, take the DF path; a DF frame longer than the overlay MTU is
answered with ICMP "fragmentation needed" (dropped if broadcast); a non-DF one is split
into IPv4 fragments by us until the test passed; everything else takes the non-DF path.

Offload records (only between weaved peers that both sent the `WeavedSleeveOffload`
feature): the record's data is `[0x01][10-byte virtio-net header][frame]`, where the frame
may be a GSO superframe and its checksum partial. They always take the non-DF path, so the
overlay MTU does not limit them; only a frame too large for any UDP datagram is segmented
first. The leading 0x01 keeps a record from ever looking like Weave's all-zero special
frames.

Segmented datagrams (offload peers only): a datagram larger than the path's payload is not
left to IP fragmentation but cut into path-sized UDP datagrams with one UDP GSO send, each
`[6 sender][8 bytes 0xFF][u32 BE datagram id][u8 index][u8 count][piece]`, and put together
again by the receiver (normally handed over whole by UDP GRO). The pieces are of the
datagram as it would otherwise have been sent (sealed, when encrypted), after the sender's
name. Eight 0xFF bytes can start neither a Weave datagram body (a record's source peer
ff:ff:ff:ff:ff:ff, or the sequence number 2^64-1) nor anything else we send.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence

from weaved.datapath.sleeve.ethernet import (
    ETH_HLEN,
    BytesLike,
    fragment_ipv4,
    icmp_frag_needed,
)
from weaved.datapath.sleeve.vnet import (
    F_NEEDS_CSUM,
    GSO_NONE,
    VNET_HDR_LEN,
    ZERO_VNET,
    OffloadError,
    VnetHeader,
    plain_frames,
)
from weaved.datapath.sleeve.wire import NAME_SIZE

__all__ = [
    "MAX_BATCH_FRAMES",
    "MAX_SEGMENTS",
    "MAX_UDP_PAYLOAD",
    "OFFLOAD_MARKER",
    "OFFLOAD_PREFIX",
    "RECORD_HEADER",
    "SEGMENT_HEADER",
    "SEGMENT_MARKER",
    "Plan",
    "Reassembly",
    "offload_capacity",
    "parse_body",
    "plan_offload",
    "plan_weave",
    "plan_weave_vnet",
    "segment_datagram",
    "weave_df_path",
]

MAX_BATCH_FRAMES = 100  # Weave's per-datagram limit
MAX_UDP_PAYLOAD = 65507  # 65535 - IPv4 header - UDP header
RECORD_HEADER = struct.Struct(">6s6sH")
OFFLOAD_MARKER = 0x01
OFFLOAD_PREFIX = 1 + VNET_HDR_LEN
SEGMENT_MARKER = b"\xff" * 8
SEGMENT_HEADER = struct.Struct(">6s8sIBB")
MAX_SEGMENTS = 64  # the kernel's limit per UDP GSO send (UDP_MAX_SEGMENTS)

Record = tuple[bool, BytesLike]
"""(DF path, record data)."""


class Plan:
    """How one frame is carried to one peer."""

    __slots__ = ("drop", "icmp", "records")

    def __init__(
        self, records: Sequence[Record] = (), icmp: bytes | None = None, drop: str | None = None
    ) -> None:
        self.records = records
        self.icmp = icmp  # to inject back into our bridge
        self.drop = drop

    def __repr__(self) -> str:
        return f"Plan(records={len(self.records)}, icmp={self.icmp is not None}, drop={self.drop})"


_DROPPED_BIG_BROADCAST = Plan(drop="too_big_broadcast")
_DROPPED_BAD = Plan(drop="bad_offload")


def _is_ipv4(frame: BytesLike) -> bool:
    return len(frame) >= ETH_HLEN + 20 and frame[12] == 8 and frame[13] == 0 and frame[14] >> 4 == 4


def weave_df_path(frame: BytesLike, stack_frag: bool) -> bool:
    """The path of a frame that fits the overlay MTU: DF for IPv4 with DF, and for IPv4
    without DF until the fragmentation test passed; non-DF for everything else."""
    return _is_ipv4(frame) and (bool(frame[20] & 0x40) or not stack_frag)


def plan_weave(frame: bytes, mtu: int, stack_frag: bool, broadcast: bool) -> Plan:
    """One ordinary frame to a peer speaking Weave's format (FACTS.md §7.1, §7.3)."""
    if len(frame) <= mtu + ETH_HLEN:
        return Plan(((weave_df_path(frame, stack_frag), frame),))
    if not _is_ipv4(frame):
        return Plan(((False, frame),))
    df = frame[20] & 0x40
    if df:
        if broadcast:
            return _DROPPED_BIG_BROADCAST
        return Plan(icmp=icmp_frag_needed(frame, mtu), drop="frag_needed")
    if stack_frag:
        return Plan(((False, frame),))
    return Plan(tuple((True, f) for f in fragment_ipv4(frame, mtu)))


def plan_weave_vnet(vnet: bytes, frame: bytes, mtu: int, stack_frag: bool, broadcast: bool) -> Plan:
    """A frame read with a virtio-net header (maybe partial checksum, maybe GSO) to a
    Weave-format peer: finished in software first (the slow path)."""
    if not vnet[0] & F_NEEDS_CSUM and vnet[1] == GSO_NONE:
        return plan_weave(frame, mtu, stack_frag, broadcast)
    try:
        frames = plain_frames(VnetHeader.unpack(vnet), frame)
    except OffloadError:
        return _DROPPED_BAD
    records: list[Record] = []
    icmp: bytes | None = None
    drop: str | None = None
    for f in frames:
        plan = plan_weave(f, mtu, stack_frag, broadcast)
        records.extend(plan.records)
        icmp = icmp or plan.icmp
        drop = drop or plan.drop
        if plan.icmp is not None:
            break  # one answer is enough; the sender retries with smaller segments
    return Plan(records, icmp, drop)


def offload_capacity(encrypted: bool) -> int:
    """The largest frame an offload record can carry in one UDP datagram."""
    overhead = NAME_SIZE + (24 if encrypted else 0) + RECORD_HEADER.size + OFFLOAD_PREFIX
    return MAX_UDP_PAYLOAD - overhead


def plan_offload(vnet: bytes, frame: bytes, capacity: int, broadcast: bool) -> Plan:
    """A frame to a weaved peer taking offloads: the header travels with it, one record."""
    prefix = b"\x01" + vnet
    if len(frame) <= capacity:
        return Plan(((False, prefix + frame),))
    try:
        frames = plain_frames(VnetHeader.unpack(vnet), frame)
    except OffloadError:
        return _DROPPED_BAD
    records: list[Record] = []
    for f in frames:
        if len(f) <= capacity:
            records.append((False, b"\x01" + ZERO_VNET + f))
            continue
        plan = plan_weave(f, capacity - ETH_HLEN, False, broadcast)
        if plan.icmp is not None or plan.drop is not None:
            return Plan(records, plan.icmp, plan.drop)
        records.extend((False, b"\x01" + ZERO_VNET + data) for _, data in plan.records)
    return Plan(records)


def parse_body(body: BytesLike) -> tuple[list[tuple[bytes, bytes, memoryview]], str | None]:
    """Records of a datagram body: (src peer, dst peer, data) up to the first problem, and
    a description of it (truncated record or trailing bytes), as Weave logs."""
    view = memoryview(body)
    out: list[tuple[bytes, bytes, memoryview]] = []
    pos = 0
    end = len(view)
    while end - pos >= RECORD_HEADER.size:
        length = (view[pos + 12] << 8) | view[pos + 13]
        start = pos + RECORD_HEADER.size
        if end - start < length:
            return out, f"too short; expected frame of length {length}, got {end - start}"
        out.append(
            (
                bytes(view[pos : pos + 6]),
                bytes(view[pos + 6 : pos + 12]),
                view[start : start + length],
            )
        )
        pos = start + length
    if pos < end:
        return out, f"{end - pos} octets of trailing garbage"
    return out, None


def segment_datagram(
    sender: bytes, payload: BytesLike, segment_size: int, ident: int
) -> list[list[BytesLike]]:
    """The pieces of one datagram (`payload` = everything after the sender's name) as
    segmented datagrams of `segment_size` bytes (the last shorter), grouped per UDP GSO send
    (at most MAX_SEGMENTS each, and at most MAX_UDP_PAYLOAD bytes)."""
    view = memoryview(payload)
    room = segment_size - SEGMENT_HEADER.size
    if room <= 0:
        raise ValueError(f"segment size {segment_size} leaves no room for data")
    count = -(-len(view) // room)
    if count > 255:
        raise ValueError(f"datagram of {len(view)} bytes needs {count} segments")
    per_send = min(MAX_SEGMENTS, MAX_UDP_PAYLOAD // segment_size)
    sends: list[list[BytesLike]] = []
    ident &= 0xFFFFFFFF
    for first in range(0, count, per_send):
        parts: list[BytesLike] = []
        for index in range(first, min(first + per_send, count)):
            parts.append(SEGMENT_HEADER.pack(sender, SEGMENT_MARKER, ident, index, count))
            parts.append(view[index * room : (index + 1) * room])
        sends.append(parts)
    return sends


class Reassembly:
    """Segmented datagrams being put together again, per (sender, id). Bounded: at most
    `limit` unfinished datagrams, each kept at most `timeout` seconds."""

    def __init__(self, limit: int = 64, timeout: float = 1.0) -> None:
        self.limit = limit
        self.timeout = timeout
        self.pending: dict[tuple[bytes, int], tuple[float, list[BytesLike | None], list[int]]] = {}
        self.expired = 0

    def add(self, segment: BytesLike, now: float) -> tuple[bytes, bytes] | None:
        """Feed one segmented datagram; returns (sender, payload) once all pieces are in."""
        view = memoryview(segment)
        if len(view) < SEGMENT_HEADER.size:
            raise ValueError("segment shorter than its header")
        sender, _marker, ident, index, count = SEGMENT_HEADER.unpack_from(view)
        return self.add_run(sender, ident, index, count, [view[SEGMENT_HEADER.size :]], now)

    def add_run(
        self,
        sender: bytes,
        ident: int,
        first: int,
        count: int,
        pieces: list[BytesLike],
        now: float,
    ) -> tuple[bytes, bytes] | None:
        """Feed consecutive pieces `first`, `first + 1`, … of one segmented datagram."""
        if first + len(pieces) > count:
            raise ValueError(f"segments {first}..{first + len(pieces) - 1} of {count}")
        if first == 0 and len(pieces) == count:
            return sender, b"".join(pieces)
        key = (sender, ident)
        entry = self.pending.get(key)
        if entry is None or len(entry[1]) != count:
            if len(self.pending) >= self.limit:
                self.sweep(now, force=True)
            entry = (now, [None] * count, [0])
            self.pending[key] = entry
        slots, have = entry[1], entry[2]
        for index, piece in enumerate(pieces, first):
            if slots[index] is None:
                slots[index] = piece
                have[0] += 1
        if have[0] < count:
            return None
        del self.pending[key]
        return sender, b"".join(p for p in slots if p is not None)

    def sweep(self, now: float, force: bool = False) -> None:
        """Drop what waited too long (and, when full, the oldest)."""
        stale = [k for k, (t, _, _) in self.pending.items() if now - t > self.timeout]
        if force and not stale and self.pending:
            stale = [min(self.pending, key=lambda k: self.pending[k][0])]
        for key in stale:
            del self.pending[key]
        self.expired += len(stale)
