"""The fast datapath as a mesh overlay (`weaved-vxlan`): heartbeats through the tunnel.

The kernel carries the data (VXLAN device + forwarding entries, kept by `FastdpPart`); this
module only decides, per connection, whether the tunnel works. Heartbeat frames leave through
a raw AF_PACKET socket on the VXLAN device (the device's entry for the peer's name sends them
to that peer only) and arrive on a socket bound to our EtherType: the remote bridge delivers
them to its host because they are addressed to its MAC. Acks, hello, MAC announcements travel
on the TCP connection as overlay-control messages.

The part and the overlay talk through three calls: the overlay reports changes (`on_change`),
the part reads `paths()`, and tells the overlay what the kernel can do (`kernel_state`) and
which MACs are local (`set_local_macs`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import Callable, Collection
from dataclasses import dataclass, field

from weaved.datapath.fastdp.config import (
    DEVICE,
    DISPLAY_NAME,
    ETHERTYPE,
    OVERLAY_NAME,
    Timing,
)
from weaved.datapath.fastdp.forwarder import FastdpForwarder
from weaved.datapath.fastdp.frames import (
    HeartbeatError,
    parse_heartbeat,
)
from weaved.datapath.fastdp.health import (
    PathState,
)
from weaved.mesh.gossip_api import PeerName
from weaved.mesh.overlay import Forwarder, ForwarderHooks, OverlayParams
from weaved.mesh.peername import format_peer_name
from weaved.model.resources import BRIDGE

__all__ = [
    "ENCRYPTED_MESH_REASON",
    "ENCRYPTED_REASON",
    "FastdpForwarder",
    "FastdpOverlay",
    "FastdpStats",
    "NotOffered",
    "PathView",
    "carried_by_fastdp",
]

log = logging.getLogger(__name__)

ENCRYPTED_REASON = (
    "fastdp off: encryption is on and this kernel has no IPsec ESP, "
    "so encrypted sleeve carries the data"
)
ENCRYPTED_MESH_REASON = (
    "fastdp off: encryption is on (a password is set) and VXLAN cannot authenticate what it "
    "receives, so there is no VXLAN device and sleeve carries the data"
)
NOT_SET_UP = "the fast datapath is not set up on this host (no reconciler for it)"
RELAYING = "this link also carries relayed traffic, and relayed paths use sleeve"
_RECV_SIZE = 65536 + 64
_RECV_BATCH = 64


class NotOffered(Exception):
    """This connection cannot use the fast datapath (the text says why)."""


def carried_by_fastdp(forwarder: object) -> bool:
    """Does this connection's `SwitchForwarder` (router.forwarder(peer)) use fastdp now? The
    hook for sleeve: broadcasts to such a peer already went through the VXLAN device."""
    return getattr(forwarder, "name", None) == DISPLAY_NAME


@dataclass
class FastdpStats:
    heartbeats_sent: int = 0
    heartbeats_received: int = 0
    frames_dropped: int = 0  # not ours, wrong peer/UID, damaged
    send_errors: int = 0
    last_send_error: str = ""


@dataclass(frozen=True)
class PathView:
    """One confirmed connection as the reconciler and status need it."""

    peer: PeerName
    nickname: str
    ip: str
    port: int | None  # the peer's VXLAN port (None until it said hello)
    state: PathState
    reason: str
    served: bool  # healthy and chosen by the connection: fastdp carries the traffic
    macs: frozenset[str] = field(default=frozenset())
    macs_at: float = 0.0


class FastdpOverlay:
    name = OVERLAY_NAME

    def __init__(
        self,
        host: str,
        port: int,
        *,
        timing: Timing | None = None,
        mtu: int = 1450,
        device: str = DEVICE,
        bridge: str = BRIDGE,
    ) -> None:
        self.host = host
        self.port = port  # our VXLAN port (mesh port + 1)
        self.timing = timing or Timing()
        self.mtu = mtu
        self.device = device
        self.bridge = bridge
        self.stats = FastdpStats()
        self.forwarders: dict[PeerName, FastdpForwarder] = {}
        self.on_change: Callable[[str], None] | None = None
        # Is this forwarder the one its connection uses? (the part asks the router)
        self.selected: Callable[[PeerName, FastdpForwarder], bool] = lambda _p, _f: True
        self.us = PeerName(0)
        self.local_macs: frozenset[str] = frozenset()
        self.socket_problem: str | None = None  # no raw sockets: no heartbeats at all
        self.kernel_problem: str | None = None  # the reconciler's verdict
        self.reconciled = False  # a reconciler (FastdpPart) has told us about the kernel
        # A password is set: no link may use VXLAN, trusted ones neither (anyone on the
        # underlay could inject frames into the bridge through the device).
        self.encrypted_mesh = False
        self._ready: frozenset[PeerName] = frozenset()
        self._relaying: frozenset[PeerName] = frozenset()
        self._rx: socket.socket | None = None
        self._tx: socket.socket | None = None

    # --- Overlay ------------------------------------------------------------------------------
    async def start(self, us: PeerName, is_known_peer: Callable[[PeerName], bool]) -> None:
        self.us = us
        try:
            rx = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETHERTYPE))
            tx = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)
        except OSError as exc:
            self.socket_problem = f"no raw packet sockets for heartbeats ({exc.strerror})"
            log.warning("fastdp disabled: %s", self.socket_problem)
            return
        rx.setblocking(False)
        tx.setblocking(False)
        self._rx, self._tx = rx, tx
        asyncio.get_running_loop().add_reader(rx.fileno(), self._readable)
        log.info("fastdp overlay started vxlan_port=%d device=%s", self.port, self.device)

    async def stop(self) -> None:
        for fwd in list(self.forwarders.values()):
            fwd.stop()
        if self._rx is not None:
            with contextlib.suppress(Exception):
                asyncio.get_running_loop().remove_reader(self._rx.fileno())
            self._rx.close()
            self._rx = None
        if self._tx is not None:
            self._tx.close()
            self._tx = None

    def prepare(self, params: OverlayParams, hooks: ForwarderHooks) -> Forwarder:
        if params.session_key is not None:
            raise NotOffered(ENCRYPTED_REASON)
        if self.encrypted_mesh:
            raise NotOffered(ENCRYPTED_MESH_REASON)
        return FastdpForwarder(self, params, hooks)

    @property
    def blocked(self) -> str | None:
        """Why no connection can use fastdp here now (None: it can)."""
        return self.socket_problem or self.kernel_problem

    def diagnostics(self) -> object:
        return {
            "Device": self.device,
            "Port": self.port,
            "MTU": self.mtu,
            "Problem": self.blocked or "",
            "Paths": {
                format_peer_name(p.peer): (p.state.value + (f": {p.reason}" if p.reason else ""))
                for p in self.paths()
            },
            "HeartbeatsSent": self.stats.heartbeats_sent,
            "HeartbeatsReceived": self.stats.heartbeats_received,
            "FramesDropped": self.stats.frames_dropped,
            "SendErrors": self.stats.send_errors,
        }

    # --- the reconciler's side ------------------------------------------------------------------
    def paths(self) -> list[PathView]:
        out = []
        for peer, fwd in sorted(self.forwarders.items()):
            c = fwd.control
            out.append(
                PathView(
                    peer=peer,
                    nickname=fwd.nickname,
                    ip=fwd.ip,
                    port=c.remote_port,
                    state=c.state,
                    reason=c.reason,
                    served=c.healthy and self.selected(peer, fwd),
                    macs=c.remote_macs,
                    macs_at=c.macs_at,
                )
            )
        return out

    def kernel_state(self, *, blocked: str | None, mtu: int, ready: Collection[PeerName]) -> None:
        """What the kernel can do now: `blocked` = why fastdp cannot run here at all; `ready`
        = peers whose heartbeat entry is in place."""
        self.reconciled = True
        self.kernel_problem = blocked
        self.mtu = mtu
        self._ready = frozenset(ready)
        for peer, fwd in list(self.forwarders.items()):
            fwd.kernel_changed(self.blocked, mtu, peer in self._ready)

    def set_local_macs(self, macs: frozenset[str]) -> None:
        if macs == self.local_macs:
            return
        self.local_macs = macs
        for fwd in list(self.forwarders.values()):
            fwd.announce_macs()

    def is_ready(self, peer: PeerName) -> bool:
        return peer in self._ready

    def set_relaying(self, peers: frozenset[PeerName]) -> None:
        """Peers whose link with us carries relayed traffic: fastdp stands by for them."""
        if peers == self._relaying:
            return
        self._relaying = peers
        for peer, fwd in list(self.forwarders.items()):
            fwd.standby(RELAYING if peer in peers else None)

    def standby_reason(self, peer: PeerName) -> str | None:
        return RELAYING if peer in self._relaying else None

    def check_reconciled(self) -> None:
        """A connection waited a whole timeout and nobody set the kernel up: say so."""
        if self.reconciled or self.kernel_problem == NOT_SET_UP:
            return
        self.kernel_problem = NOT_SET_UP
        log.warning("fastdp: %s", NOT_SET_UP)
        for peer, fwd in list(self.forwarders.items()):
            fwd.kernel_changed(self.blocked, self.mtu, peer in self._ready)

    # --- plumbing -------------------------------------------------------------------------------
    def changed(self, why: str) -> None:
        if self.on_change is not None:
            try:
                self.on_change(why)
            except Exception:
                log.exception("fastdp change listener failed")

    def send_frame(self, frame: bytes) -> None:
        if self._tx is None:
            return
        try:
            self._tx.sendto(frame, (self.device, ETHERTYPE))
            self.stats.heartbeats_sent += 1
        except OSError as exc:
            self.stats.send_errors += 1
            text = exc.strerror or str(exc)
            if text != self.stats.last_send_error:
                log.info("fastdp heartbeat send failed device=%s error=%s", self.device, text)
            self.stats.last_send_error = text

    def _readable(self) -> None:
        rx = self._rx
        if rx is None:
            return
        for _ in range(_RECV_BATCH):
            try:
                data, addr = rx.recvfrom(_RECV_SIZE)
            except BlockingIOError:
                return
            except OSError as exc:
                log.info("fastdp heartbeat receive failed error=%s", exc)
                return
            self._frame(data, str(addr[0]))

    def _frame(self, data: bytes, ifname: str) -> None:
        if ifname != self.bridge:
            self.stats.frames_dropped += 1
            return
        try:
            hb = parse_heartbeat(data)
        except HeartbeatError:
            self.stats.frames_dropped += 1
            return
        fwd = self.forwarders.get(hb.src)
        if hb.dst != self.us or fwd is None or not fwd.heartbeat(hb):
            self.stats.frames_dropped += 1
            return
        self.stats.heartbeats_received += 1
