"""The sleeve data path: frames between the TAP on our bridge and the mesh's UDP socket.

Workers: by default one thread polls both the TAP and the mesh's UDP socket (taken over
from the event loop) and drains each in turn, up to 64 frames or datagrams at a time; with
`workers=2` one thread captures and another receives. One is cheaper (measured: 10-30 %
less CPU per MB, as two threads hand the GIL over at every frame). For each frame:

* captured from the TAP (non-blocking fd): learn the source MAC, decide with the `Switch`,
  queue the frame's records per (next hop, path); queued records go out as one datagram
  per peer and path when nothing more is ready, so bursts are batched as Weave batches
  them (a full-size frame gets a datagram of its own), and unencrypted datagrams go to the
  kernel in pieces (sendmsg, no copy);
* received from UDP: open the datagram with the forwarder's opener (replays and forgeries
  counted and dropped), hand the control plane's special frames back to the event loop,
  inject frames for us into the TAP, relay the rest and continue broadcasts.

Host-side offloads that leave Weave's format on the wire untouched, so they serve Weave Net
peers as well: Weave-format datagrams of one size for one peer and path board a "train"
that leaves in one UDP GSO send at the end of the round (the DF path through a DF twin of
the sleeve socket; the kernel cuts the train into the datagrams Weave sends), and the UDP
socket reads with UDP GRO, so a run of datagrams from one peer is one read.

Userspace GRO (`gro.coalesce`) at the end of each round: TCP segments to inject are merged
into superframes, so the bridge and the container's TCP stack see one packet instead of
dozens and acknowledge it once. Segments that came authenticated (encrypted) or in
checksummed datagrams (offload peers) merge as they are; others once the run's TCP
checksums verify. Segments captured for a peer taking offloads are merged before they are
sent (one record instead of dozens).

The event loop keeps the control plane: every 100 ms it refreshes the forwarding snapshot
(routes, known peers, one `Link` per peer whose best forwarder is sleeve) when the router's
routes or connections changed, switches the TAP's offloads, expires MACs, and keeps the TAP
itself (created, configured, recreated when deleted; netlink on a helper thread).

Offloads: the TAP always carries virtio-net headers. When at least one established peer
negotiated `WeavedSleeveOffload`, the TAP accepts partial checksums and TCP superframes
(TUNSETOFFLOAD): to such peers the header travels with the frame, one superframe per UDP
datagram (the underlay fragments and reassembles it), and the receiver writes header and
frame into its TAP, so neither side touches individual segments. To Weave Net peers the
same frames are finished in software first (checksums, segmentation). This relies on the
kernel filling in virtio-net headers correctly (partial checksums are then carried
properly, so containers may keep TX checksum offload on; with it off, the kernel segments
and checksums before the TAP and the offload path only saves work on the receiver).
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import ctypes.util
import errno
import fcntl
import itertools
import logging
import os
import select
import socket
import struct
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, fields
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar, cast

from weaved.datapath.sleeve import tap as taplib
from weaved.datapath.sleeve.ethernet import ETH_HLEN, BytesLike
from weaved.datapath.sleeve.forwarding import ForwardingTable, Switch
from weaved.datapath.sleeve.frames import (
    MAX_BATCH_FRAMES,
    OFFLOAD_MARKER,
    OFFLOAD_PREFIX,
    SEGMENT_HEADER,
    SEGMENT_MARKER,
    Reassembly,
    offload_capacity,
    plan_offload,
    plan_weave,
    plan_weave_vnet,
    segment_datagram,
)
from weaved.datapath.sleeve.gro import Item, coalesce
from weaved.datapath.sleeve.oversize import plan_oversized_inject
from weaved.datapath.sleeve.vnet import (
    F_NEEDS_CSUM,
    VNET_HDR_LEN,
    ZERO_VNET,
    OffloadError,
    VnetHeader,
    plain_frames,
)
from weaved.mesh.crypto import DecryptError
from weaved.mesh.gossip_api import PeerName
from weaved.mesh.peername import format_peer_name, peer_name_to_bytes
from weaved.mesh.router import Router
from weaved.mesh.routes import Routes
from weaved.mesh.sleeve_frames import NAME_SIZE, classify_special
from weaved.mesh.sleeve_overlay import SleeveForwarder, SleeveOverlay
from weaved.model.resources import BRIDGE

__all__ = ["Counters", "Link", "SleeveDatapath"]

log = logging.getLogger(__name__)
T = TypeVar("T")

READ_SIZE = 65536 + VNET_HDR_LEN + 64
RECV_SIZE = 65536
BURST = 64  # frames or datagrams read from one source before turning to the other
POLL_MS = 500
OLD_TAP_CLOSE_DELAY = 5.0  # a replaced TAP fd is closed once no worker can still use it
REFRESH_INTERVAL = 0.1
TAP_CHECK_INTERVAL = 2.0
MAC_EXPIRY_INTERVAL = 60.0  # Weave checks every max age / 10
SOCKET_BUFFER = 8 << 20
MAX_BRIDGE_MTU = 65535
_SIOCGIFMTU = 0x8921
_ZERO14 = bytes(ETH_HLEN)
_TAP_GONE = {errno.EBADFD, errno.ENODEV, errno.EIO, errno.ENXIO}
_RECORD = struct.Struct(">6s6sH")  # frames.RECORD_HEADER
_MIN_SHARE = 2 * 14 + 60  # two record headers and the smallest Ethernet frame
_SOL_UDP = 17
_UDP_GRO = 104
_CMSG_SPACE = socket.CMSG_SPACE(4)
_SO_SNDBUFFORCE = 32
_SO_RCVBUFFORCE = 33
GSO_MAX_SEGMENTS = 64  # UDP_MAX_SEGMENTS of older kernels (newer take 128)
MAX_GSO_BYTES = 65000  # one GSO send is one UDP datagram to the kernel: under 64 KB


@dataclass(slots=True)
class Counters:
    """One worker's counters (only it writes them; reports add them up)."""

    captured: int = 0  # frames read from the TAP
    captured_bytes: int = 0
    superframes: int = 0  # GSO frames among them
    datagrams_sent: int = 0
    datagrams_received: int = 0
    received_bytes: int = 0
    frames_received: int = 0
    injected: int = 0
    merged: int = 0  # segments merged into superframes (fewer TAP writes or records)
    relayed: int = 0  # frames passed on (relays and broadcast continuation)
    special: int = 0  # control-plane frames handed to the event loop
    icmp_frag_needed: int = 0
    too_big_answered: int = 0  # received DF frames over our bridge's MTU: ICMP sent back
    too_big_fragmented: int = 0  # received non-DF IPv4 frames over it: injected in fragments
    no_link: int = 0
    unknown_sender: int = 0
    decrypt_failed: int = 0  # forgeries, corruption, wrong key
    replayed: int = 0
    malformed: int = 0
    inject_errors: int = 0
    segments_sent: int = 0  # segmented datagrams (UDP GSO) to peers taking offloads
    segments_received: int = 0
    gro_runs: int = 0  # reads that held several datagrams (UDP GRO)
    gso_sends: int = 0  # sends of several Weave-format datagrams at once (UDP GSO)
    drops: Counter[str] = field(default_factory=Counter)

    def add(self, other: Counters) -> None:
        """Add another worker's counters (while it may be counting: one C-level copy)."""
        for f in fields(self):
            if f.name == "drops":
                self.drops.update(dict(other.drops))
            else:
                setattr(self, f.name, getattr(self, f.name) + getattr(other, f.name))


def _name_thread(name: str) -> None:
    """The kernel's thread name (top -H, /proc): helps to see where the CPU goes."""
    with contextlib.suppress(Exception):
        libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
        libc.prctl(15, name.encode()[:15], 0, 0, 0)  # PR_SET_NAME


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


class _Out:
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


class _Worker:
    """One forwarding thread: the TAP, the UDP socket, or both."""

    def __init__(self, dp: SleeveDatapath, name: str, tap: bool, udp: bool) -> None:
        self.dp = dp
        self.name = name
        self.tap = tap
        self.udp = udp
        self.stats = Counters()
        self.out = _Out(dp, self.stats)
        self.reassembly = Reassembly()
        self.wake_r, self.wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self.thread = threading.Thread(target=self.run, name=name, daemon=True)

    def wake(self) -> None:
        with contextlib.suppress(OSError):
            os.write(self.wake_w, b"x")

    def close(self) -> None:
        for fd in (self.wake_r, self.wake_w):
            with contextlib.suppress(OSError):
                os.close(fd)

    def run(self) -> None:
        _name_thread(self.name)
        try:
            self._loop()
        except Exception:
            log.exception("sleeve worker failed worker=%s", self.name)

    def _loop(self) -> None:
        dp = self.dp
        sock = dp.overlay.sock if self.udp else None
        poller = select.poll()
        poller.register(self.wake_r, select.POLLIN)
        if sock is not None:
            poller.register(sock.fileno(), select.POLLIN)
        registered: int | None = None
        out = self.out
        clock = dp.clock
        stopping = dp._stopping
        sock_fd = sock.fileno() if sock is not None else -1
        # Read a source until it has nothing more (then wait for poll to say it has): one
        # EAGAIN per quiet period, not one per source and round.
        tap_ready = udp_ready = True
        while not stopping.is_set():
            fd = dp.tap_fd if self.tap and dp.tap_fd != dp.tap_dead else None
            if fd != registered:
                if registered is not None:
                    with contextlib.suppress(KeyError, ValueError, OSError):
                        poller.unregister(registered)
                if fd is not None:
                    poller.register(fd, select.POLLIN)
                registered = fd
                tap_ready = True
            now = clock()
            if fd is not None and tap_ready:
                tap_ready = self._drain_tap(fd, now) == BURST
            if sock is not None and udp_ready:
                udp_ready = self._drain_udp(sock, now) == BURST
            out.flush()
            if self.reassembly.pending:
                self.reassembly.sweep(now)
            if (tap_ready and fd is not None) or (udp_ready and sock is not None):
                continue
            for efd, events in poller.poll(POLL_MS):
                if efd == self.wake_r:
                    with contextlib.suppress(OSError):
                        os.read(self.wake_r, 512)
                elif efd == sock_fd:
                    udp_ready = True
                elif efd == registered:
                    tap_ready = True
                    if events & (select.POLLERR | select.POLLHUP | select.POLLNVAL):
                        dp.tap_failed(efd, "poll error")

    def _drain_tap(self, fd: int, now: float) -> int:
        read = os.read
        captured = self.captured
        for n in range(BURST):
            try:
                pkt = read(fd, READ_SIZE)
            except BlockingIOError:
                return n
            except OSError as e:
                if e.errno in _TAP_GONE:
                    self.dp.tap_failed(fd, e.strerror or str(e))
                else:
                    log.warning("sleeve TAP read failed error=%s", e)
                return n
            captured(pkt, now)
        return BURST

    def _drain_udp(self, sock: socket.socket, now: float) -> int:
        if self.dp.gro:
            return self._drain_udp_gro(sock, now)
        recvfrom = sock.recvfrom
        received = self.received
        for n in range(BURST):
            try:
                data, addr = recvfrom(RECV_SIZE)
            except BlockingIOError:
                return n
            except OSError as e:
                log.debug("sleeve UDP receive error error=%s", e)
                return n
            received(data, addr, now)
        return BURST

    def _drain_udp_gro(self, sock: socket.socket, now: float) -> int:
        """With UDP_GRO, one read may hold a run of datagrams of one size from one peer."""
        recvmsg = sock.recvmsg
        received = self.received
        for n in range(BURST):
            try:
                data, ancillary, _flags, addr = recvmsg(RECV_SIZE, _CMSG_SPACE)
            except BlockingIOError:
                return n
            except OSError as e:
                log.debug("sleeve UDP receive error error=%s", e)
                return n
            size = len(data)
            for level, kind, value in ancillary:
                if level == _SOL_UDP and kind == _UDP_GRO and len(value) >= 4:
                    size = int.from_bytes(value[:4], sys.byteorder) or size
            if size >= len(data):
                received(data, addr, now)
                continue
            self.stats.gro_runs += 1
            if not self._segment_run(data, size, addr, now):
                for start in range(0, len(data), size):
                    received(data[start : start + size], addr, now)
        return BURST

    def _segment_run(self, data: bytes, size: int, addr: tuple[str, int], now: float) -> bool:
        """A run of consecutive pieces of one segmented datagram (the usual case; UDP GRO
        hands over at most 64 KB at a time, so a big datagram may come in two runs): taken
        in one go. The headers of the pieces in between are not looked at: what they carry
        is checked as a whole (opened, or parsed record by record)."""
        head = SEGMENT_HEADER.size
        if data[6:14] != SEGMENT_MARKER:
            return False
        first, count = data[18], data[19]
        pieces = -(-len(data) // size)
        last = (pieces - 1) * size
        if (
            first + pieces > count
            or data[last : last + 18] != data[:18]
            or data[last + 18] != first + pieces - 1
            or len(data) - last <= head
        ):
            return False
        fwd = self.dp.overlay.forwarders_by_name.get(data[:6])
        if fwd is None or not fwd.offload:
            return False
        stats = self.stats
        stats.datagrams_received += pieces
        stats.segments_received += pieces
        stats.received_bytes += len(data)
        view = memoryview(data)
        chunks: list[BytesLike] = [view[i + head : i + size] for i in range(0, len(data), size)]
        ident = int.from_bytes(data[14:18], "big")
        whole = self.reassembly.add_run(data[:6], ident, first, count, chunks, now)
        if whole is not None:
            self.datagram(fwd, whole[1], 0, addr, now)
        return True

    def captured(self, pkt: bytes, now: float) -> None:
        stats = self.stats
        stats.captured += 1
        stats.captured_bytes += len(pkt) - VNET_HDR_LEN
        if len(pkt) < VNET_HDR_LEN + ETH_HLEN:
            stats.drops["runt"] += 1
            return
        dp = self.dp
        decision = dp.switch.captured(pkt[16:22], pkt[10:16], now)
        if decision.drop is not None:
            stats.drops[decision.drop] += 1
            return
        view = memoryview(pkt)
        if pkt[1]:
            stats.superframes += 1
        vnet = view[:VNET_HDR_LEN]
        frame = view[VNET_HDR_LEN:]
        us = dp.us
        out = self.out
        if not decision.broadcast:
            hop, dst = decision.sends[0]
            link = dp.links.get(hop)
            if link is not None and link.offload:
                out.stage(link, dst, vnet, frame)
                return
        send = out.send
        for hop, dst in decision.sends:
            send(hop, us, dst, vnet, frame, decision.broadcast)

    def received(self, data: bytes, addr: tuple[str, int], now: float) -> None:
        stats = self.stats
        stats.datagrams_received += 1
        stats.received_bytes += len(data)
        dp = self.dp
        fwd = dp.overlay.forwarders_by_name.get(data[:6])
        if fwd is None:
            stats.unknown_sender += 1
            return
        if data[6:14] == SEGMENT_MARKER and fwd.offload:
            stats.segments_received += 1
            try:
                whole = self.reassembly.add(data, now)
            except ValueError:
                stats.malformed += 1
                return
            if whole is not None:
                self.datagram(fwd, whole[1], 0, addr, now)
            return
        self.datagram(fwd, data, 6, addr, now)

    def datagram(
        self, fwd: SleeveForwarder, data: bytes, base: int, addr: tuple[str, int], now: float
    ) -> None:
        """The datagram from `fwd`'s peer whose body (sealed or not) starts at `base`."""
        stats = self.stats
        dp = self.dp
        if fwd.encrypted:
            try:
                # A view, not a copy: open() only slices it (a 64 KB copy costs a third).
                opened = fwd.opener.open(cast(bytes, memoryview(data)[base:]))
            except DecryptError:
                stats.decrypt_failed += 1
                return
            if opened is None:
                stats.replayed += 1
                return
            body, base = opened, 0
        else:
            body = data
        view = memoryview(body)
        end = len(body)
        pos = base
        offload = fwd.offload
        trusted = offload or fwd.encrypted
        # With a password, a link left unencrypted (trusted subnets) stays bound to its peer's
        # address: data frames in its name from anywhere else are not delivered.
        remote = fwd.control.remote_addr
        unbound = (
            dp.encrypted_mesh and not fwd.encrypted and (remote is None or remote[0] != addr[0])
        )
        us = dp.us
        switch = dp.switch
        out = self.out
        send = out.send
        inject_limit = dp.bridge_mtu + ETH_HLEN
        while end - pos >= 14:
            src = body[pos : pos + 6]
            dst = body[pos + 6 : pos + 12]
            start = pos + 14
            pos = start + ((body[pos + 12] << 8) | body[pos + 13])
            if pos > end:
                stats.malformed += 1
                log.debug(
                    "sleeve bad datagram peer=%s problem=truncated frame",
                    format_peer_name(fwd.remote),
                )
                return
            stats.frames_received += 1
            if body[start] == 0 and pos - start >= ETH_HLEN and view[start : start + 14] == _ZERO14:
                stats.special += 1
                if src == fwd.remote_bin and dst == us:
                    special = body[start:pos]
                    kind = classify_special(special)
                    if kind is not None:
                        fwd.special_threadsafe(kind, special, addr)
                continue
            if unbound:
                stats.drops["unbound_source"] += 1
                continue
            if offload:
                if pos - start < OFFLOAD_PREFIX + ETH_HLEN or body[start] != OFFLOAD_MARKER:
                    stats.drops["bad_offload_record"] += 1
                    continue
                vnet: BytesLike = view[start + 1 : start + OFFLOAD_PREFIX]
                fstart = start + OFFLOAD_PREFIX
            else:
                if pos - start < ETH_HLEN:
                    stats.drops["runt"] += 1
                    continue
                vnet = ZERO_VNET
                fstart = start
            decision = switch.received(
                src, dst, body[fstart + 6 : fstart + 12], body[fstart : fstart + 6], now
            )
            if decision.drop is not None:
                stats.drops[decision.drop] += 1
                continue
            frame = view[fstart:pos]
            if decision.inject:
                if pos - fstart > inject_limit and vnet[1] == 0:  # no GSO: the bridge drops it
                    self.too_big(src, vnet, frame, decision.broadcast, inject_limit - ETH_HLEN)
                else:
                    # Untrusted (a Weave-format peer's DF datagrams carry no UDP checksum):
                    # merged only once the run's TCP checksums verify (gro.coalesce).
                    out.inject(vnet, frame, trusted)
            for hop, d in decision.sends:
                stats.relayed += 1
                send(hop, src, d, vnet, frame, decision.broadcast)
        if pos < end:
            stats.malformed += 1
            log.debug(
                "sleeve bad datagram peer=%s problem=%d octets of trailing garbage",
                format_peer_name(fwd.remote),
                end - pos,
            )

    def too_big(
        self, src: bytes, vnet: BytesLike, frame: BytesLike, broadcast: bool, mtu: int
    ) -> None:
        """A received frame our bridge would drop as over its MTU (oversize.py): answer it
        with ICMP "fragmentation needed" sent back to the peer that captured it, or inject it
        in fragments."""
        stats = self.stats
        frames: Sequence[BytesLike] = (frame,)
        if vnet[0] & F_NEEDS_CSUM:
            try:
                frames = plain_frames(VnetHeader.unpack(bytes(vnet)), frame)
            except OffloadError:
                stats.drops["bad_offload"] += 1
                return
        for whole in frames:
            plan = plan_oversized_inject(whole, mtu, broadcast)
            if plan.drop is not None:
                stats.drops[plan.drop] += 1
            if plan.icmp is not None:
                stats.too_big_answered += 1
                for hop, dst in self.dp.switch.table.to_peer(src).sends:
                    self.out.send(hop, self.dp.us, dst, ZERO_VNET, plan.icmp, False)
                return  # one answer is enough: the sender retries smaller
            if plan.frames:
                stats.too_big_fragmented += 1
                for fragment in plan.frames:
                    self.out.inject(ZERO_VNET, fragment, True)


class SleeveDatapath:
    def __init__(
        self,
        router: Router,
        *,
        offload: bool = True,
        workers: int = 1,
        tap_name: str = taplib.TAP_NAME,
        bridge: str = BRIDGE,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        overlay = router.overlay("sleeve")
        if not isinstance(overlay, SleeveOverlay):
            raise ValueError("the router runs no sleeve overlay")
        if workers not in (1, 2):
            raise ValueError("workers must be 1 or 2")
        self.router = router
        self.overlay = overlay
        self.offload = offload
        overlay.offload = offload  # announced in every handshake from now on
        self.workers_wanted = workers
        self.tap_name = tap_name
        self.bridge = bridge
        self.clock = clock
        self.us = peer_name_to_bytes(router.us)
        self.switch = Switch(self.us)
        self.links: dict[bytes, Link] = {}
        self.tap_fd: int | None = None
        self.tap_dead: int | None = None  # the fd a worker found broken
        self.tap_offload = False
        self.tap_changes: list[str] = []
        self.tap_error: str | None = None
        self.tap_created = 0
        self._signature: object = None
        self._stopping = threading.Event()
        self._workers: list[_Worker] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._kick = asyncio.Event()
        self._netlink = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sleeve-netlink")
        self._mac_expiry_due = 0.0
        self.idents = itertools.count(int.from_bytes(os.urandom(4), "big"))
        self.gro = False  # UDP_GRO on the socket: workers read with recvmsg and split
        self.bridge_mtu = MAX_BRIDGE_MTU  # frames to inject above it are answered (too_big)
        self.encrypted_mesh = router.config.password is not None  # see datagram()
        self.running = False

    # --- lifecycle (event loop) -------------------------------------------------------------

    async def start(self) -> None:
        """After `router.start()`: take over the sleeve socket and keep the TAP."""
        sock = self.overlay.sock
        if sock is None:
            raise RuntimeError("sleeve overlay not started")
        self._loop = asyncio.get_running_loop()
        _grow_buffers(sock)
        if self.overlay.df_sock is not None:
            _grow_buffers(self.overlay.df_sock)
        self.gro = self.overlay.set_gro(True)
        self.router.on_peer_removed(self._peer_removed)
        self.refresh()
        self.overlay.detach_reader()
        self._stopping.clear()
        if self.workers_wanted == 1:
            self._workers = [_Worker(self, "sleeve", tap=True, udp=True)]
        else:
            self._workers = [
                _Worker(self, "sleeve-capture", tap=True, udp=False),
                _Worker(self, "sleeve-receive", tap=False, udp=True),
            ]
        for worker in self._workers:
            worker.thread.start()
        self.running = True
        self._tasks = [
            asyncio.create_task(self._maintain(), name="sleeve-maintain"),
            asyncio.create_task(self._keep_tap(), name="sleeve-tap"),
        ]
        log.info(
            "sleeve data path started offload=%s workers=%d tap=%s",
            self.offload,
            len(self._workers),
            self.tap_name,
        )

    async def stop(self) -> None:
        if not self.running:
            return
        self.running = False
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._stopping.set()
        for worker in self._workers:
            worker.wake()
        for worker in self._workers:
            await asyncio.to_thread(worker.thread.join, 5.0)
            worker.close()
        if self.gro:
            self.overlay.set_gro(False)  # the event loop's reader reads one datagram a time
            self.gro = False
        self.overlay.attach_reader()
        if self.tap_fd is not None:
            with contextlib.suppress(OSError):
                os.close(self.tap_fd)
            self.tap_fd = None
        self._netlink.shutdown(wait=False, cancel_futures=True)
        log.info("sleeve data path stopped")

    def kick(self) -> None:
        """Check the TAP now (the bridge may just have been created)."""
        self._kick.set()

    @property
    def counters(self) -> Counters:
        total = Counters()
        for worker in self._workers:
            total.add(worker.stats)
        return total

    # --- control-plane snapshot (event loop) --------------------------------------------------

    def refresh(self) -> bool:
        """Rebuild the forwarding snapshot if routes or connections changed."""
        routes = self.router.routes()
        forwarders: list[SleeveForwarder] = []
        for peer, conn in list(self.router.connections.items()):
            switch = conn.forwarder
            if switch is None or switch.name != "sleeve":
                continue  # another overlay (fast datapath) carries this peer's frames
            fwd = switch.forwarder("sleeve")
            if isinstance(fwd, SleeveForwarder) and not fwd.stopped and fwd.remote == peer:
                forwarders.append(fwd)
        signature = (id(routes), tuple((id(f), f.offload) for f in forwarders))
        if signature == self._signature:
            return False
        self._signature = signature
        self.switch.table = self._table(routes)
        self.links = {f.remote_bin: Link(f) for f in forwarders}
        self._apply_tap_offload()
        return True

    def _table(self, routes: Routes) -> ForwardingTable:
        return ForwardingTable.from_routes(routes, list(self.router.topology.peers))

    def _want_tap_offload(self) -> bool:
        return self.offload and any(link.offload for link in self.links.values())

    def _apply_tap_offload(self) -> None:
        want = self._want_tap_offload()
        fd = self.tap_fd
        if fd is None or want == self.tap_offload:
            return
        try:
            taplib.set_offload(fd, want)
        except OSError as e:
            log.warning("sleeve cannot switch TAP offloads on=%s error=%s", want, e)
            return
        self.tap_offload = want
        log.info("sleeve TAP offloads %s", "on" if want else "off")

    def _peer_removed(self, peer: PeerName) -> None:
        self.switch.macs.delete_peer(peer_name_to_bytes(peer))

    async def _maintain(self) -> None:
        while True:
            await asyncio.sleep(REFRESH_INTERVAL)
            try:
                self.refresh()
                now = self.clock()
                if now >= self._mac_expiry_due:
                    self._mac_expiry_due = now + MAC_EXPIRY_INTERVAL
                    for mac, peer in self.switch.macs.expire(now):
                        log.debug("expired MAC mac=%s peer=%s", mac.hex(":"), peer.hex(":"))
            except Exception:
                log.exception("sleeve maintenance failed")

    # --- the TAP (event loop + netlink thread) -----------------------------------------------

    async def _blocking(self, fn: Callable[[], T]) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._netlink, fn)

    async def _keep_tap(self) -> None:
        while True:
            self.bridge_mtu = _interface_mtu(self.bridge) or MAX_BRIDGE_MTU
            try:
                await self._ensure_tap()
                self.tap_error = None
            except OSError as e:
                if self.tap_error != str(e):
                    log.warning("sleeve TAP not ready error=%s", e)
                self.tap_error = str(e)
            except Exception:
                log.exception("sleeve TAP keeper failed")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._kick.wait(), TAP_CHECK_INTERVAL)
            self._kick.clear()

    async def _ensure_tap(self) -> None:
        name, bridge = self.tap_name, self.bridge
        if self.tap_fd is not None and self.tap_fd != self.tap_dead:
            try:
                changes = await self._blocking(lambda: taplib.configure_link(name, bridge))
            except taplib.TapError as e:
                if e.errno != errno.ENODEV:
                    raise
                log.warning("sleeve TAP %s was deleted; creating it again", name)
            else:
                self._note(changes)
                return
        fd = await self._blocking(self._open_tap)
        try:
            changes = await self._blocking(lambda: taplib.configure_link(name, bridge))
        except OSError:
            os.close(fd)
            raise
        self._note(changes)
        old, self.tap_fd = self.tap_fd, fd
        self.tap_dead = None
        self.tap_offload = False
        self.tap_created += 1
        self._apply_tap_offload()
        for worker in self._workers:
            worker.wake()
        if old is not None and self._loop is not None:
            self._loop.call_later(OLD_TAP_CLOSE_DELAY, _close_quietly, old)
        log.info("sleeve TAP ready name=%s bridge=%s", name, bridge)

    def _open_tap(self) -> int:
        try:
            return taplib.open_tap(self.tap_name)
        except taplib.TapError as e:
            if e.errno not in (errno.EBUSY, errno.EINVAL, errno.EEXIST):
                raise
        if taplib.held_by_another_process(self.tap_name):
            raise taplib.TapError(
                errno.EBUSY,
                f"TAP device {self.tap_name} is held by another process (another weaved daemon?)",
            )
        # A device of our name that is not ours to open (a leftover): it is weaved's by name.
        if taplib.delete_link(self.tap_name):
            log.info("sleeve deleted leftover device name=%s", self.tap_name)
        return taplib.open_tap(self.tap_name)

    def _note(self, changes: list[str]) -> None:
        if changes:
            log.info("sleeve TAP configured changes=%s", "; ".join(changes))
            self.tap_changes = (self.tap_changes + changes)[-20:]

    def tap_failed(self, fd: int, why: str) -> None:
        """A worker found the TAP broken (deleted): recreate it (any thread)."""
        if self.tap_dead == fd:
            return
        self.tap_dead = fd
        log.warning("sleeve lost its TAP device name=%s reason=%s", self.tap_name, why)
        loop = self._loop
        if loop is not None and self.running:
            loop.call_soon_threadsafe(self.kick)

    def inject(self, vnet: BytesLike, frame: BytesLike) -> bool:
        """Write one frame into our bridge (any thread)."""
        fd = self.tap_fd
        if fd is None:
            return False
        try:
            os.writev(fd, (vnet, frame))
        except OSError:
            return False
        return True

    # --- views ------------------------------------------------------------------------------

    def interface(self) -> str:
        return f"{self.tap_name} (via tap)"

    def tap_kernel_drops(self) -> int:
        path = Path(f"/sys/class/net/{self.tap_name}/statistics/tx_dropped")
        try:
            return int(path.read_text().strip())
        except (OSError, ValueError):
            return 0

    def capture_stats_report(self) -> dict[str, int]:
        """Weave's `CaptureStats` (pcap's names): frames read from the TAP, frames we
        dropped, frames the kernel dropped because we did not read fast enough."""
        c = self.counters
        return {
            "PacketsDropped": sum(c.drops.values()) + c.no_link,
            "PacketsIfDropped": self.tap_kernel_drops(),
            "PacketsReceived": c.captured,
        }

    def macs_report(self) -> list[dict[str, Any]]:
        """Weave's `MACs`: every MAC with its peer and when it was last seen."""
        nicknames = self.router.topology.nicknames()
        offset = time.time() - self.clock()
        out = []
        for mac, entry in self.switch.macs.entries():
            peer = PeerName(int.from_bytes(entry.peer, "big"))
            out.append(
                {
                    "Mac": mac.hex(":"),
                    "Name": format_peer_name(peer),
                    "NickName": nicknames.get(peer, ""),
                    "LastSeen": _rfc3339_nano(entry.last_seen + offset),
                }
            )
        return out

    def router_extra(self) -> dict[str, Any]:
        """The data plane's keys of Weave's `Router` report object."""
        return {
            "Interface": self.interface(),
            "CaptureStats": self.capture_stats_report(),
            "MACs": self.macs_report() or None,
        }

    def report(self) -> dict[str, Any]:
        """Everything the data path counts, for `weaved report`."""
        c = self.counters
        counters: dict[str, Any] = {}
        for f in fields(c):
            value = getattr(c, f.name)
            counters[f.name] = dict(sorted(value.items())) if isinstance(value, Counter) else value
        links = []
        for link in list(self.links.values()):
            ctl = link.fwd.control
            links.append(
                {
                    "Peer": format_peer_name(link.fwd.remote),
                    "Offload": link.offload,
                    "Encrypted": link.fwd.encrypted,
                    "MTU": ctl.mtu,
                    "StackFragmentation": ctl.stack_frag,
                }
            )
        return {
            "Interface": self.interface(),
            "TapReady": self.tap_fd is not None and self.tap_fd != self.tap_dead,
            "TapError": self.tap_error,
            "TapCreated": self.tap_created,
            "TapOffloads": self.tap_offload,
            "OffloadAnnounced": self.offload,
            "Workers": len(self._workers),
            "Links": links,
            "MACs": len(self.switch.macs),
            "Counters": counters,
        }

    def status_text(self) -> str:
        c = self.counters
        offload_peers = sum(1 for link in self.links.values() if link.offload)
        ready = self.tap_fd is not None and self.tap_fd != self.tap_dead
        state = "ready" if ready else f"not ready ({self.tap_error or 'waiting'})"
        return (
            "        Service: sleeve\n"
            f"      Interface: {self.interface()} {state}\n"
            f"       Offloads: {'on' if self.tap_offload else 'off'}"
            f" ({offload_peers} of {len(self.links)} peers)\n"
            f"           MACs: {len(self.switch.macs)}\n"
            f"       Captured: {c.captured} frames; {c.datagrams_sent} datagrams sent\n"
            f"       Received: {c.datagrams_received} datagrams; {c.injected} frames injected,"
            f" {c.relayed} relayed\n"
            f"        Dropped: {c.decrypt_failed} undecryptable, {c.replayed} replayed,"
            f" {c.unknown_sender} from unknown peers\n"
            f"        Too big: {c.too_big_answered} answered (ICMP frag-needed, bridge MTU"
            f" {self.bridge_mtu}), {c.too_big_fragmented} fragmented\n"
        )


def _interface_mtu(name: str) -> int | None:
    """The MTU of a device of this network namespace (None if there is no such device)."""
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            ifreq = struct.pack("16si12x", name.encode()[:15], 0)
            reply = fcntl.ioctl(sock.fileno(), _SIOCGIFMTU, ifreq)
    except OSError:
        return None
    return int(struct.unpack_from("16si", reply)[1])


def _close_quietly(fd: int) -> None:
    with contextlib.suppress(OSError):
        os.close(fd)


def _grow_buffers(sock: socket.socket) -> None:
    """Room for bursts of 64 KB datagrams; the FORCE variants pass net.core.*mem_max."""
    for force, plain in ((_SO_RCVBUFFORCE, socket.SO_RCVBUF), (_SO_SNDBUFFORCE, socket.SO_SNDBUF)):
        try:
            sock.setsockopt(socket.SOL_SOCKET, force, SOCKET_BUFFER)
        except OSError:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, plain, SOCKET_BUFFER)


def _rfc3339_nano(wall: float) -> str:
    """Go's RFC3339Nano in UTC (trailing zeros of the fraction trimmed)."""
    ns = round(wall * 1e9)
    seconds, nanos = divmod(ns, 1_000_000_000)
    stamp = datetime.fromtimestamp(seconds, tz=UTC).strftime("%Y-%m-%dT%H:%M:%S")
    frac = f".{nanos:09d}".rstrip("0") if nanos else ""
    return f"{stamp}{frac}Z"
