"""The send side of a sleeve worker: frames to peers as Weave-format datagrams.

Each frame's records are queued per (next hop, path); queued records go out as one datagram
per peer and path when nothing more is ready, so bursts are batched as Weave batches them
(a full-size frame gets a datagram of its own), and unencrypted datagrams go to the kernel
in pieces (sendmsg, no copy).

Host-side offloads that leave Weave's format on the wire untouched, so they serve Weave Net
peers as well: Weave-format datagrams of one size for one peer and path board a "train"
that leaves in one UDP GSO send at the end of the round (the DF path through a DF twin of
the sleeve socket; the kernel cuts the train into the datagrams Weave sends). To a peer
taking offloads (`WeavedSleeveOffload`), records carry their virtio-net headers, captured
TCP segments are merged into superframes first (`gro.coalesce`), and a datagram bigger
than the path goes as path-sized segments in one UDP GSO send, not as IP fragments.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from typing import TYPE_CHECKING

from weaved.datapath.sleeve.counters import Counters
from weaved.datapath.sleeve.ethernet import ETH_HLEN, BytesLike
from weaved.datapath.sleeve.forwarder import SleeveForwarder
from weaved.datapath.sleeve.frames import (
    MAX_BATCH_FRAMES,
    offload_capacity,
    plan_offload,
    plan_weave,
    plan_weave_vnet,
    segment_datagram,
)
from weaved.datapath.sleeve.gro import Item, coalesce
from weaved.datapath.sleeve.vnet import ZERO_VNET
from weaved.datapath.sleeve.wire import NAME_SIZE

if TYPE_CHECKING:
    from weaved.datapath.sleeve.datapath import SleeveDatapath

__all__ = ["GSO_MAX_SEGMENTS", "MAX_GSO_BYTES", "Link", "Outbox"]

_RECORD = struct.Struct(">6s6sH")  # frames.RECORD_HEADER
_MIN_SHARE = 2 * 14 + 60  # two record headers and the smallest Ethernet frame
GSO_MAX_SEGMENTS = 64  # UDP_MAX_SEGMENTS of older kernels (newer take 128)
MAX_GSO_BYTES = 65000  # one GSO send is one UDP datagram to the kernel: under 64 KB


class Link:
    """What the workers know about one directly connected peer."""

    __slots__ = ("capacity", "fwd", "offload", "overhead", "peer")

    def __init__(self, fwd: SleeveForwarder) -> None:
        self.fwd = fwd
        self.peer = fwd.remote_bin
        self.offload = fwd.offload
        self.capacity = offload_capacity(fwd.encrypted)
        self.overhead = NAME_SIZE + (24 if fwd.encrypted else 0)  # sequence number, tag


class _Pending:
    """Records queued for one datagram to one peer on one path."""

    __slots__ = ("count", "link", "parts", "size")

    def __init__(self, link: Link) -> None:
        self.link = link
        self.parts: list[BytesLike] = []
        self.size = 0
        self.count = 0


class _Train:
    """Weave-format datagrams of one size for one peer and path, to leave in one UDP GSO
    send: the kernel cuts them apart again, so the wire carries what Weave sends (the last
    may be shorter, and ends the train)."""

    __slots__ = ("closed", "link", "payloads", "size", "total")

    def __init__(self, link: Link, size: int) -> None:
        self.link = link
        self.size = size  # of each datagram, our name included
        self.payloads: list[tuple[Sequence[BytesLike], int]] = []  # after the name; size
        self.total = 0
        self.closed = False


class Outbox:
    """One worker's output of one round: records queued per (next hop, DF path); frames
    captured for peers taking offloads, staged per (link, destination) to be merged into
    superframes (GRO) first; frames to inject, merged likewise."""

    __slots__ = ("dp", "injects", "pending", "staged", "stats", "trains")

    def __init__(self, dp: SleeveDatapath, stats: Counters) -> None:
        self.dp = dp
        self.stats = stats
        self.pending: dict[tuple[bytes, bool], _Pending] = {}
        self.staged: dict[tuple[Link, bytes], list[Item]] = {}
        self.injects: list[Item] = []
        self.trains: dict[tuple[bytes, bool], _Train] = {}

    def inject(self, vnet: BytesLike, frame: BytesLike, trusted: bool) -> None:
        self.injects.append((vnet, frame, trusted))

    def stage(self, link: Link, dst: bytes, vnet: BytesLike, frame: BytesLike) -> None:
        """A frame we captured, for a peer taking offloads."""
        key = (link, dst)
        staged = self.staged.get(key)
        if staged is None:
            self.staged[key] = [(vnet, frame, True)]
        else:
            staged.append((vnet, frame, True))

    def send(
        self,
        hop: bytes,
        src: bytes,
        dst: bytes,
        vnet: BytesLike,
        frame: BytesLike,
        broadcast: bool,
    ) -> None:
        link = self.dp.links.get(hop)
        if link is None:
            self.stats.no_link += 1
            return
        ctl = link.fwd.control
        # Records that fit the path: its UDP payload less our name (and sequence number and
        # tag when encrypted).
        room = ctl.max_payload - link.overhead
        if link.offload:
            if len(frame) <= link.capacity:
                self._queue(link, False, src, dst, b"\x01" + vnet, frame, room)
                return
            plan = plan_offload(bytes(vnet), bytes(frame), link.capacity, broadcast)
        elif not vnet[0] & 1 and vnet[1] == 0:
            if len(frame) <= ctl.mtu + ETH_HLEN:
                # frames.weave_df_path, inlined: IPv4 with DF, or any IPv4 until the
                # fragmentation test passed, takes the DF path.
                df = (
                    frame[12] == 8
                    and frame[13] == 0
                    and len(frame) >= 34
                    and frame[14] >> 4 == 4
                    and (frame[20] & 0x40 != 0 or not ctl.stack_frag)
                )
                self._queue(link, df, src, dst, b"", frame, room)
                return
            plan = plan_weave(bytes(frame), ctl.mtu, ctl.stack_frag, broadcast)
        else:
            plan = plan_weave_vnet(bytes(vnet), bytes(frame), ctl.mtu, ctl.stack_frag, broadcast)
        if plan.icmp is not None:
            self.stats.icmp_frag_needed += 1
            self.dp.inject(ZERO_VNET, plan.icmp)
        if plan.drop is not None:
            self.stats.drops[plan.drop] += 1
        for df, data in plan.records:
            self._queue(link, df, src, dst, b"", data, room)

    def _queue(
        self,
        link: Link,
        df: bool,
        src: bytes,
        dst: bytes,
        prefix: bytes,
        data: BytesLike,
        limit: int,
    ) -> None:
        """Add the record `[src][dst][len][prefix + data]` to the datagram being built."""
        length = len(prefix) + len(data)
        key = (link.peer, df)
        pending = self.pending.get(key)
        if length + _MIN_SHARE > limit:
            # Nothing else would fit next to it (a full-size TCP segment): send it now, after
            # whatever was queued before it for the same peer and path.
            if pending is not None and pending.count:
                self._send(pending, df)
            header = _RECORD.pack(src, dst, length)
            if prefix:
                header += prefix
            self._transmit(link, (header, data), df, 14 + length)
            return
        if pending is None or pending.link is not link:
            if pending is not None and pending.count:
                self._send(pending, df)
            pending = self.pending[key] = _Pending(link)
        elif pending.count and (
            pending.count >= MAX_BATCH_FRAMES or pending.size + 14 + length > limit
        ):
            self._send(pending, df)
        parts = pending.parts
        if prefix:
            parts.append(_RECORD.pack(src, dst, length) + prefix)
        else:
            parts.append(_RECORD.pack(src, dst, length))
        parts.append(data)
        pending.size += 14 + length
        pending.count += 1

    def _send(self, pending: _Pending, df: bool) -> None:
        parts, size = pending.parts, pending.size
        pending.parts = []
        pending.size = 0
        pending.count = 0
        self._transmit(pending.link, parts, df, size)

    def _transmit(self, link: Link, parts: Sequence[BytesLike], df: bool, size: int) -> None:
        """One datagram to a peer. In Weave's format, one that fits the path boards a train
        (sent with the datagrams around it); to a peer taking offloads, one bigger than the
        path goes as path-sized segments in one UDP GSO send, not as IP fragments."""
        fwd = link.fwd
        stats = self.stats
        stats.datagrams_sent += 1
        limit = fwd.control.max_payload
        if not link.offload:
            if size + link.overhead <= limit and self.dp.overlay.gso:
                payload, payload_size = fwd.seal_payload(parts, df, size)
                self._board(link, df, payload, payload_size)
                return
            train = self.trains.get((link.peer, df))
            if train is not None:
                self._depart(train, df)  # it goes first: order is kept per peer and path
            fwd.send_body(parts, df, size)
            return
        if not (size + link.overhead > limit and self.dp.overlay.gso):
            fwd.send_body(parts, df, size)
            return
        payload, payload_size = fwd.seal_payload(parts, df, size)
        blob = payload[0] if len(payload) == 1 else b"".join(payload)
        sends = segment_datagram(self.dp.us, blob, limit, next(self.dp.idents))
        if fwd.send_segments(sends, limit):
            stats.segments_sent += sum(len(parts) for parts in sends) // 2
        else:
            fwd.send_payload(payload, df, payload_size)  # the underlay fragments it

    def _board(self, link: Link, df: bool, payload: Sequence[BytesLike], size: int) -> None:
        """Queue a sealed datagram body (`size` bytes after our name) on its train."""
        key = (link.peer, df)
        datagram = size + NAME_SIZE
        train = self.trains.get(key)
        if train is not None and (
            train.link is not link
            or train.closed
            or datagram > train.size
            or len(train.payloads) >= GSO_MAX_SEGMENTS
            or train.total + datagram > MAX_GSO_BYTES
        ):
            self._depart(train, df)
            train = None
        if train is None:
            train = self.trains[key] = _Train(link, datagram)
        train.payloads.append((payload, size))
        train.total += datagram
        train.closed = datagram < train.size

    def _depart(self, train: _Train, df: bool) -> None:
        payloads = train.payloads
        if not payloads:
            return
        train.payloads = []
        train.total = 0
        train.closed = False
        fwd = train.link.fwd
        if len(payloads) > 1:
            us = self.dp.us
            parts: list[BytesLike] = []
            for payload, _size in payloads:
                parts.append(us)
                parts.extend(payload)
            if fwd.send_segments([parts], train.size, df):
                self.stats.gso_sends += 1
                return
        for payload, size in payloads:  # a lone datagram, or the kernel said no
            fwd.send_payload(payload, df, size)

    def flush(self) -> None:
        dp = self.dp
        stats = self.stats
        if self.staged:
            us = dp.us
            for (link, dst), items in self.staged.items():
                merged = coalesce(items) if len(items) > 1 else items
                stats.merged += len(items) - len(merged)
                for vnet, frame, *_ in merged:
                    self.send(link.peer, us, dst, vnet, frame, False)
            self.staged.clear()
        if self.injects:
            items = self.injects
            self.injects = []
            merged = coalesce(items) if len(items) > 1 else items
            stats.merged += len(items) - len(merged)
            for vnet, frame, *_ in merged:
                if dp.inject(vnet, frame):
                    stats.injected += 1
                else:
                    stats.inject_errors += 1
        for (_peer, df), pending in self.pending.items():
            if pending.count:
                self._send(pending, df)
        for (_peer, df), train in self.trains.items():
            self._depart(train, df)
