"""The receive side of a sleeve worker: datagrams from peers to our bridge and onwards.

Each datagram is opened with its forwarder's opener (replays and forgeries counted and
dropped); the control plane's special frames go back to the event loop; frames for us are
injected into the TAP (merged into TCP superframes at the end of the round, `gro`), the
rest relayed and broadcasts continued. Segmented datagrams from offload peers are put
together again (`frames.Reassembly`), a run of them from one UDP GRO read in one go.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING, cast

from weaved.datapath.sleeve.counters import Counters
from weaved.datapath.sleeve.ethernet import ETH_HLEN, BytesLike
from weaved.datapath.sleeve.forwarder import SleeveForwarder
from weaved.datapath.sleeve.frames import (
    OFFLOAD_MARKER,
    OFFLOAD_PREFIX,
    SEGMENT_HEADER,
    SEGMENT_MARKER,
    Reassembly,
)
from weaved.datapath.sleeve.oversize import plan_oversized_inject
from weaved.datapath.sleeve.send import Outbox
from weaved.datapath.sleeve.vnet import (
    F_NEEDS_CSUM,
    ZERO_VNET,
    OffloadError,
    VnetHeader,
    plain_frames,
)
from weaved.datapath.sleeve.wire import classify_special
from weaved.mesh.crypto import DecryptError
from weaved.mesh.peername import format_peer_name

if TYPE_CHECKING:
    from weaved.datapath.sleeve.datapath import SleeveDatapath

__all__ = ["Receiver"]

log = logging.getLogger(__name__)

_ZERO14 = bytes(ETH_HLEN)


class Receiver:
    """One worker's receiving: its counters, its output of the round, its reassembly."""

    def __init__(self, dp: SleeveDatapath, stats: Counters, out: Outbox) -> None:
        self.dp = dp
        self.stats = stats
        self.out = out
        self.reassembly = Reassembly()

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

    def segment_run(self, data: bytes, size: int, addr: tuple[str, int], now: float) -> bool:
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
