"""One sleeve connection's forwarder: sealing and sending on the DF and non-DF paths, the
special frames and control messages of its `SleeveControl`, and the data plane's
thread-safe sends (whole datagrams, sealed payloads, UDP GSO segments).

Encrypted datagrams are sealed with libsodium called directly when available (`sodium`):
the sealers' sequence numbers and nonces (weaved.mesh.crypto) without PyNaCl's copies.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Sequence
from typing import TYPE_CHECKING

from weaved.datapath.sleeve.control import (
    Action,
    Established,
    Failed,
    RemoteAddrChanged,
    SendControl,
    SendSpecial,
    SleeveControl,
)
from weaved.datapath.sleeve.sockets import Buffer
from weaved.datapath.sleeve.sodium import DF_BIT, HAVE_SODIUM, DirectOpener, box
from weaved.datapath.sleeve.wire import (
    ETHERNET_OVERHEAD,
    FRAME_OVERHEAD,
    NAME_SIZE,
    UDP_OVERHEAD,
    SleeveFrame,
    SpecialKind,
    pack_frames,
)
from weaved.mesh.crypto import SEQ_SIZE, SleeveOpener, SleeveSealer, sleeve_nonce
from weaved.mesh.deadline_timer import DeadlineTimer
from weaved.mesh.overlay import ForwarderHooks, OverlayParams
from weaved.mesh.peername import format_peer_name, peer_name_to_bytes

if TYPE_CHECKING:
    from weaved.datapath.sleeve.overlay import SleeveOverlay

__all__ = ["OFFLOAD_FEATURE", "OFFLOAD_VERSION", "SleeveForwarder"]

log = logging.getLogger(__name__)

OFFLOAD_FEATURE = "WeavedSleeveOffload"
OFFLOAD_VERSION = "1"


class SleeveForwarder:
    name = "sleeve"

    def __init__(
        self, overlay: SleeveOverlay, params: OverlayParams, hooks: ForwarderHooks
    ) -> None:
        self._overlay = overlay
        self._hooks = hooks
        self.remote = params.remote
        self.remote_bin = peer_name_to_bytes(params.remote)
        key = params.session_key
        self.encrypted = key is not None
        # Both ends announced it: data frames carry their virtio-net headers (data plane).
        self.offload = overlay.offload and params.features.get(OFFLOAD_FEATURE) == OFFLOAD_VERSION
        us_bin = overlay.us_bin
        self._sealer = SleeveSealer(us_bin, key, params.outbound, df=False)
        self._sealer_df = SleeveSealer(us_bin, key, params.outbound, df=True)
        # Sealing advances a sequence number: one lock per path, as threads send too.
        self._seal_lock = threading.Lock()
        self._seal_lock_df = threading.Lock()
        self._key = key
        self._outbound = params.outbound
        self._direct = key is not None and HAVE_SODIUM
        self.opener: SleeveOpener | DirectOpener = (
            DirectOpener(key, params.outbound)
            if key is not None and HAVE_SODIUM
            else SleeveOpener(key, params.outbound)
        )
        overhead_df = (
            UDP_OVERHEAD + self._sealer_df.packet_overhead + FRAME_OVERHEAD + ETHERNET_OVERHEAD
        )
        remote_udp = params.remote_addr if params.outbound else None
        self.control = SleeveControl(params.conn_uid, remote_udp, overhead_df)
        self._local_ip = params.local_addr[0]
        self._timer = DeadlineTimer(self._on_timer)
        self._loop = asyncio.get_running_loop()
        self._stopped = False

    # Forwarder ---------------------------------------------------------------------------

    def confirm(self) -> None:
        if self._stopped:
            return
        # Only the confirmed connection to a peer receives its datagrams.
        self._overlay.forwarders[self.remote] = self
        self._overlay.forwarders_by_name[self.remote_bin] = self
        self._overlay.df_sender(self._local_ip)  # created here, used by threads as well
        self._run(self.control.confirm(self._now()))

    def control_message(self, subtag: int, body: bytes) -> None:
        if not self._stopped:
            self._run(self.control.on_control(subtag, body, self._now()))

    def attrs(self) -> dict[str, object]:
        return {"name": "sleeve", "mtu": self.control.mtu}

    def stop(self) -> None:
        if self._stopped:
            return
        self._stopped = True
        if self._overlay.forwarders.get(self.remote) is self:
            del self._overlay.forwarders[self.remote]
        if self._overlay.forwarders_by_name.get(self.remote_bin) is self:
            del self._overlay.forwarders_by_name[self.remote_bin]
        self._timer.cancel()

    # data plane --------------------------------------------------------------------------

    @property
    def mtu(self) -> int:
        return self.control.mtu

    @property
    def stopped(self) -> bool:
        return self._stopped

    def send_frames(self, frames: list[SleeveFrame], df: bool) -> None:
        """Send frames to this peer in one datagram (event loop only)."""
        if self._stopped or self.control.remote_addr is None:
            return
        body = pack_frames(frames)
        if df:
            self._send_df(self._seal(body, True))
        else:
            self._overlay.send_plain(self._seal(body, False), self.control.remote_addr)

    def send_body(self, parts: Sequence[Buffer], df: bool, size: int) -> None:
        """Send one datagram whose body is the concatenation of `parts` (frame records
        `[src][dst][len][frame]`…, `size` bytes in all) on the DF or non-DF path.
        Thread-safe: the data plane calls it from its own threads. Unencrypted, the parts
        go to the kernel as they are (scatter-gather, no copy). A full send buffer is
        waited for briefly; a DF send the kernel refuses as too big restarts the MTU search
        on the event loop."""
        payload, size = self.seal_payload(parts, df, size)
        self.send_payload(payload, df, size)

    def seal_payload(
        self, parts: Sequence[Buffer], df: bool, size: int
    ) -> tuple[Sequence[Buffer], int]:
        """What follows the sender's name in the datagram of this body: the parts as they
        are, or sealed (which consumes a sequence number of the path). Thread-safe."""
        if not self.encrypted:
            return parts, size
        sealed = memoryview(self._seal(b"".join(parts), df))[NAME_SIZE:]
        return (sealed,), len(sealed)

    def send_payload(self, payload: Sequence[Buffer], df: bool, size: int) -> None:
        """Send `[our name] + payload` (from `seal_payload`). Thread-safe."""
        addr = self.control.remote_addr
        if self._stopped or addr is None:
            return
        pieces = (self._overlay.us_bin, *payload)
        size += NAME_SIZE
        if not df:
            self._overlay.send_parts(pieces, addr)
            return
        sender = self._overlay.df_senders.get(self._local_ip)
        if sender is None:
            self._overlay.send_parts(pieces, addr)
            return
        try:
            pmtu = sender.send_parts(pieces, size, addr)
        except OSError as e:
            log.debug("sleeve DF send failed peer=%s error=%s", format_peer_name(self.remote), e)
            return
        if pmtu is not None:
            self._loop.call_soon_threadsafe(self._too_big, pmtu)

    def send_segments(
        self, sends: Sequence[Sequence[Buffer]], segment_size: int, df: bool = False
    ) -> bool:
        """Send datagrams of `segment_size` bytes (the last may be shorter), each group in
        one UDP GSO send (UDP_SEGMENT) on the non-DF socket or its DF twin. False if the
        kernel cannot segment them (nothing was sent then). Thread-safe."""
        addr = self.control.remote_addr
        if self._stopped or addr is None:
            return True
        return self._overlay.send_segments(sends, segment_size, addr, df)

    def special_threadsafe(self, kind: SpecialKind, frame: bytes, addr: tuple[str, int]) -> None:
        """A special frame read by a data-plane thread: handled on the event loop."""
        self._loop.call_soon_threadsafe(self.special, kind, frame, addr)

    def _seal(self, body: bytes, df: bool) -> Buffer:
        """The datagram for `body` on a path: the sealers' sequence numbers and nonces
        (crypto.SleeveSealer), the box made by libsodium directly when available."""
        sealer, lock = (
            (self._sealer_df, self._seal_lock_df) if df else (self._sealer, self._seal_lock)
        )
        if not self._direct:
            with lock:
                return sealer.seal(body)
        with lock:
            seq = sealer.seq
            sealer.seq = seq + 1
        assert self._key is not None
        seq_field = seq | (DF_BIT if df else 0)
        prefix = self._overlay.us_bin + seq_field.to_bytes(SEQ_SIZE, "big")
        return box(prefix, body, sleeve_nonce(self._outbound, seq_field), self._key)

    def _too_big(self, pmtu: int) -> None:
        if not self._stopped:
            self._run(self.control.on_send_too_big(pmtu, self._now()))

    # internals ---------------------------------------------------------------------------

    @staticmethod
    def _now() -> float:
        return asyncio.get_running_loop().time()

    def special(self, kind: SpecialKind, frame: bytes, addr: tuple[str, int]) -> None:
        if self._stopped:
            return
        if kind is SpecialKind.HEARTBEAT:
            actions = self.control.on_heartbeat(frame, addr, self._now())
        elif kind is SpecialKind.FRAG_TEST:
            actions = self.control.on_frag_test(frame)
        else:
            actions = self.control.on_mtu_probe(frame)
        self._run(actions)

    def _send_df(self, datagram: Buffer) -> int | None:
        addr = self.control.remote_addr
        if addr is None:
            return None
        sender = self._overlay.df_sender(self._local_ip)
        if sender is None:
            self._overlay.send_plain(datagram, addr)
            return None
        try:
            return sender.send(datagram, addr)
        except OSError as e:
            log.info("sleeve DF send failed peer=%s error=%s", format_peer_name(self.remote), e)
            return None

    def _run(self, actions: list[Action]) -> None:
        queue = list(actions)
        while queue and not self._stopped:
            action = queue.pop(0)
            if isinstance(action, SendSpecial):
                if self.control.remote_addr is None:
                    continue
                body = pack_frames([SleeveFrame(self._overlay.us, self.remote, action.frame)])
                if action.df:
                    pmtu = self._send_df(self._seal(body, True))
                    if pmtu is not None:
                        queue[0:0] = self.control.on_send_too_big(pmtu, self._now())
                else:
                    self._overlay.send_plain(self._seal(body, False), self.control.remote_addr)
            elif isinstance(action, SendControl):
                self._hooks.send_control(action.subtag, action.body)
            elif isinstance(action, Established):
                self._hooks.established()
            elif isinstance(action, Failed):
                self._hooks.failed(action.reason)
                return
            elif isinstance(action, RemoteAddrChanged):
                pass  # the control keeps the address; nothing else caches it
        self._schedule()

    def _schedule(self) -> None:
        self._timer.set(None if self._stopped else self.control.next_deadline())

    def _on_timer(self) -> None:
        if not self._stopped:
            self._run(self.control.on_timer(self._now()))
