"""The sleeve overlay's I/O shell: the UDP socket on the mesh port and the DF sender.

Control logic lives in `sleeve.SleeveControl`; this module moves datagrams. Two send paths,
as Weave: the normal UDP socket with DF off (kernel fragments), and a raw IP socket with DF
set that builds its own UDP header with checksum 0 (heartbeats, MTU probes, the PMTU
trigger whose EMSGSIZE reveals the path MTU). Without CAP_NET_RAW the DF path falls back to
the normal socket (no path-MTU discovery then). Received data frames go to a pluggable
callback; by default they are counted and dropped.
"""

from __future__ import annotations

import asyncio
import ctypes
import errno
import logging
import socket
import struct
from collections.abc import Callable
from dataclasses import dataclass, field

from weaved.mesh.crypto import DecryptError, SleeveOpener, SleeveSealer
from weaved.mesh.gossip_api import PeerName
from weaved.mesh.overlay import Forwarder, ForwarderHooks, OverlayParams
from weaved.mesh.peername import format_peer_name, peer_name_from_bytes, peer_name_to_bytes
from weaved.mesh.sleeve import (
    Action,
    Established,
    Failed,
    RemoteAddrChanged,
    SendControl,
    SendSpecial,
    SleeveControl,
)
from weaved.mesh.sleeve_frames import (
    ETHERNET_OVERHEAD,
    FRAME_OVERHEAD,
    NAME_SIZE,
    UDP_OVERHEAD,
    SleeveFrame,
    SpecialKind,
    classify_special,
    pack_frames,
    unpack_frames,
)

__all__ = ["FrameHandler", "SleeveForwarder", "SleeveOverlay", "SleeveStats"]

log = logging.getLogger(__name__)

FrameHandler = Callable[[PeerName, SleeveFrame, tuple[str, int]], None]
"""(peer whose datagram carried it, frame, UDP source address)."""

_IP_MTU_DISCOVER = getattr(socket, "IP_MTU_DISCOVER", 10)
_IP_PMTUDISC_DONT = getattr(socket, "IP_PMTUDISC_DONT", 0)
_IP_PMTUDISC_DO = getattr(socket, "IP_PMTUDISC_DO", 2)
_IP_MTU = getattr(socket, "IP_MTU", 14)
_SO_ATTACH_FILTER = 26


@dataclass
class SleeveStats:
    datagrams_received: int = 0
    datagrams_dropped: int = 0  # unknown sender, undecryptable, replayed, malformed
    frames_delivered: int = 0
    frames_dropped: int = 0  # data frames nobody consumed, unknown peers
    raw_df_unavailable: bool = False
    last_errors: list[str] = field(default_factory=list)


def _drop_all_filter(sock: socket.socket) -> None:
    """A raw UDP socket gets a copy of every UDP packet; we only send on it."""
    insn = struct.pack("HBBI", 0x06, 0, 0, 0)  # BPF_RET | BPF_K, 0: accept nothing
    buf = ctypes.create_string_buffer(insn)
    prog = struct.pack("HL", 1, ctypes.addressof(buf))
    sock.setsockopt(socket.SOL_SOCKET, _SO_ATTACH_FILTER, prog)


class _RawDFSender:
    """Weave's `udpSenderDF`: a raw IPPROTO_UDP socket with DF set that writes its own UDP
    header (checksum 0). One per local IP, shared by all forwarders (Weave opens one per
    connection; sharing keeps a large mesh within its file-descriptor budget)."""

    def __init__(self, local_ip: str, local_port: int) -> None:
        self._local_port = local_port
        sock = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_UDP)
        try:
            _drop_all_filter(sock)
            sock.setsockopt(socket.IPPROTO_IP, _IP_MTU_DISCOVER, _IP_PMTUDISC_DO)
            sock.setblocking(False)
            if local_ip and local_ip != "0.0.0.0":
                sock.bind((local_ip, 0))
        except OSError:
            sock.close()
            raise
        self._sock = sock

    def send(self, payload: bytes, addr: tuple[str, int]) -> int | None:
        """Returns the path MTU if the kernel refused the size (EMSGSIZE)."""
        header = struct.pack(">HHHH", self._local_port, addr[1], 8 + len(payload), 0)
        try:
            self._sock.sendto(header + payload, (addr[0], 0))
        except BlockingIOError:
            return None  # a dropped datagram; heartbeats and probes are repeated
        except OSError as e:
            if e.errno != errno.EMSGSIZE:
                raise
            pmtu = _path_mtu(addr)
            log.info(
                "sleeve EMSGSIZE on send, expecting PMTU update packet=%d pmtu=%d",
                len(payload) + 8 + 20,
                pmtu,
            )
            return pmtu
        return None

    def close(self) -> None:
        self._sock.close()


def _path_mtu(addr: tuple[str, int]) -> int:
    """The kernel's current path MTU towards `addr` (what EMSGSIZE just updated)."""
    probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        probe.setsockopt(socket.IPPROTO_IP, _IP_MTU_DISCOVER, _IP_PMTUDISC_DO)
        probe.connect(addr)
        return int(probe.getsockopt(socket.IPPROTO_IP, _IP_MTU))
    finally:
        probe.close()


class _UdpProtocol(asyncio.DatagramProtocol):
    def __init__(self, overlay: SleeveOverlay) -> None:
        self._overlay = overlay

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self._overlay._datagram(data, addr)

    def error_received(self, exc: Exception) -> None:
        log.debug("sleeve UDP error error=%s", exc)


class SleeveOverlay:
    name = "sleeve"

    def __init__(
        self,
        host: str,
        port: int,
        *,
        on_frame: FrameHandler | None = None,
        raw_df: bool = True,
    ) -> None:
        self.host = host
        self.port = port
        self.on_frame = on_frame
        self.stats = SleeveStats()
        self._raw_df = raw_df
        self._transport: asyncio.DatagramTransport | None = None
        self._us: PeerName = PeerName(0)
        self._us_bin = bytes(NAME_SIZE)
        self._is_known: Callable[[PeerName], bool] = lambda _n: False
        self.forwarders: dict[PeerName, SleeveForwarder] = {}
        self._df_senders: dict[str, _RawDFSender] = {}

    async def start(self, us: PeerName, is_known_peer: Callable[[PeerName], bool]) -> None:
        self._us = us
        self._us_bin = peer_name_to_bytes(us)
        self._is_known = is_known_peer
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            # Datagrams on this socket never carry DF: the kernel may fragment them.
            sock.setsockopt(socket.IPPROTO_IP, _IP_MTU_DISCOVER, _IP_PMTUDISC_DONT)
            sock.bind((self.host or "0.0.0.0", self.port))
            sock.setblocking(False)
        except OSError:
            sock.close()
            raise
        loop = asyncio.get_running_loop()
        transport, _ = await loop.create_datagram_endpoint(lambda: _UdpProtocol(self), sock=sock)
        self._transport = transport
        log.info("sleeve listening host=%s port=%d", self.host or "0.0.0.0", self.port)

    async def stop(self) -> None:
        for fwd in list(self.forwarders.values()):
            fwd.stop()
        for sender in self._df_senders.values():
            sender.close()
        self._df_senders.clear()
        if self._transport is not None:
            self._transport.close()
            self._transport = None

    def diagnostics(self) -> object:
        return None

    def prepare(self, params: OverlayParams, hooks: ForwarderHooks) -> Forwarder:
        return SleeveForwarder(self, params, hooks)

    # --- plumbing used by forwarders ---------------------------------------------------------

    def _send_plain(self, datagram: bytes, addr: tuple[str, int]) -> None:
        if self._transport is not None:
            self._transport.sendto(datagram, addr)

    def _df_sender(self, local_ip: str) -> _RawDFSender | None:
        if not self._raw_df or self.stats.raw_df_unavailable:
            return None
        sender = self._df_senders.get(local_ip)
        if sender is None:
            try:
                sender = _RawDFSender(local_ip, self.port)
            except PermissionError:
                self.stats.raw_df_unavailable = True
                log.warning(
                    "sleeve has no CAP_NET_RAW: DF datagrams go out on the normal socket, "
                    "path MTU discovery is off"
                )
                return None
            self._df_senders[local_ip] = sender
        return sender

    def _datagram(self, data: bytes, addr: tuple[str, int]) -> None:
        self.stats.datagrams_received += 1
        if len(data) < NAME_SIZE:
            self.stats.datagrams_dropped += 1
            return
        sender = peer_name_from_bytes(data[:NAME_SIZE])
        fwd = self.forwarders.get(sender)
        if fwd is None:
            self.stats.datagrams_dropped += 1
            return
        try:
            body = fwd.opener.open(data[NAME_SIZE:])
        except DecryptError as e:
            self.stats.datagrams_dropped += 1
            log.debug("sleeve datagram dropped peer=%s error=%s", format_peer_name(sender), e)
            return
        if body is None:
            self.stats.datagrams_dropped += 1  # a replay: opened, not delivered
            return
        frames, problem = unpack_frames(body)
        for frame in frames:
            self._frame(fwd, frame, addr)
        if problem is not None:
            log.info(
                "sleeve bad datagram peer=%s addr=%s:%d problem=%s",
                format_peer_name(sender),
                addr[0],
                addr[1],
                problem,
            )

    def _frame(self, fwd: SleeveForwarder, frame: SleeveFrame, addr: tuple[str, int]) -> None:
        if not (self._is_known(frame.src) and self._is_known(frame.dst)):
            self.stats.frames_dropped += 1
            return
        kind = classify_special(frame.data)
        if kind is not None:
            if frame.src == fwd.remote and frame.dst == self._us:
                fwd.special(kind, frame.data, addr)
            return
        if self.on_frame is None:
            self.stats.frames_dropped += 1
            return
        try:
            self.on_frame(fwd.remote, frame, addr)
            self.stats.frames_delivered += 1
        except Exception:
            self.stats.frames_dropped += 1
            log.exception("sleeve frame handler failed")


class SleeveForwarder:
    name = "sleeve"

    def __init__(
        self, overlay: SleeveOverlay, params: OverlayParams, hooks: ForwarderHooks
    ) -> None:
        self._overlay = overlay
        self._hooks = hooks
        self.remote = params.remote
        self._remote_bin = peer_name_to_bytes(params.remote)
        key = params.session_key
        us_bin = overlay._us_bin
        self._sealer = SleeveSealer(us_bin, key, params.outbound, df=False)
        self._sealer_df = SleeveSealer(us_bin, key, params.outbound, df=True)
        self.opener = SleeveOpener(key, params.outbound)
        overhead_df = (
            UDP_OVERHEAD + self._sealer_df.packet_overhead + FRAME_OVERHEAD + ETHERNET_OVERHEAD
        )
        remote_udp = params.remote_addr if params.outbound else None
        self.control = SleeveControl(params.conn_uid, remote_udp, overhead_df)
        self._local_ip = params.local_addr[0]
        self._timer: asyncio.TimerHandle | None = None
        self._stopped = False

    # Forwarder ---------------------------------------------------------------------------

    def confirm(self) -> None:
        if self._stopped:
            return
        # Only the confirmed connection to a peer receives its datagrams.
        self._overlay.forwarders[self.remote] = self
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
        if self._timer is not None:
            self._timer.cancel()

    # data plane --------------------------------------------------------------------------

    @property
    def mtu(self) -> int:
        return self.control.mtu

    def send_frames(self, frames: list[SleeveFrame], df: bool) -> None:
        """Send frames to this peer in one datagram (the data-plane engineer's entry point)."""
        if self._stopped or self.control.remote_addr is None:
            return
        sealer = self._sealer_df if df else self._sealer
        datagram = sealer.seal(pack_frames(frames))
        if df:
            self._send_df(datagram)
        else:
            self._overlay._send_plain(datagram, self.control.remote_addr)

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

    def _send_df(self, datagram: bytes) -> int | None:
        addr = self.control.remote_addr
        if addr is None:
            return None
        sender = self._overlay._df_sender(self._local_ip)
        if sender is None:
            self._overlay._send_plain(datagram, addr)
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
                body = pack_frames([SleeveFrame(self._overlay._us, self.remote, action.frame)])
                if action.df:
                    pmtu = self._send_df(self._sealer_df.seal(body))
                    if pmtu is not None:
                        queue[0:0] = self.control.on_send_too_big(pmtu, self._now())
                else:
                    self._overlay._send_plain(self._sealer.seal(body), self.control.remote_addr)
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
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._stopped:
            return
        deadline = self.control.next_deadline()
        if deadline is not None:
            loop = asyncio.get_running_loop()
            self._timer = loop.call_at(deadline, self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        if not self._stopped:
            self._run(self.control.on_timer(self._now()))
