"""The sleeve overlay's I/O shell: the UDP socket on the mesh port.

Control logic lives in `control.SleeveControl`, one per connection, driven by its
`forwarder.SleeveForwarder`; this module owns the socket, reads it on the event loop and
hands datagrams to the forwarder of their sender; `sockets` has the DF senders. Received
data frames go to a pluggable callback; by default they are counted and dropped.

The data plane (`datapath`) moves frames on threads of its own: it takes over reading the
UDP socket (`detach_reader`, handing special frames back with
`SleeveForwarder.special_threadsafe`) and sends with `SleeveForwarder.send_body`, which
may be called from any thread (sealing is serialised per path, so sequence numbers stay
unique). When the data plane asks for it (`offload = True`) we announce the feature
`WeavedSleeveOffload`; Weave ignores unknown features, and a forwarder whose remote sent
it too has `offload` set: both ends then carry frames with their virtio-net headers and
send big datagrams as path-sized segments in one UDP GSO send (`send_segments`; the socket
then has UDP GRO on, `set_gro`).
"""

from __future__ import annotations

import asyncio
import errno
import logging
import socket
import struct
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from weaved.datapath.sleeve.forwarder import OFFLOAD_FEATURE, OFFLOAD_VERSION, SleeveForwarder
from weaved.datapath.sleeve.sockets import (
    IP_MTU_DISCOVER,
    IP_PMTUDISC_DONT,
    SOL_UDP,
    UDP_GRO,
    UDP_SEGMENT,
    Buffer,
    RawDFSender,
    open_df_twin,
    reuseport,
    steer_to_first,
    try_option,
    wait_writable,
)
from weaved.datapath.sleeve.wire import NAME_SIZE, SleeveFrame, classify_special, unpack_frames
from weaved.mesh.crypto import DecryptError
from weaved.mesh.gossip_api import PeerName
from weaved.mesh.overlay import Forwarder, ForwarderHooks, OverlayParams
from weaved.mesh.peername import format_peer_name, peer_name_from_bytes, peer_name_to_bytes

__all__ = [
    "OFFLOAD_FEATURE",
    "OFFLOAD_VERSION",
    "FrameHandler",
    "SleeveForwarder",
    "SleeveOverlay",
    "SleeveStats",
]

log = logging.getLogger(__name__)

FrameHandler = Callable[[PeerName, SleeveFrame, tuple[str, int]], None]
"""(peer whose datagram carried it, frame, UDP source address)."""

_RECV_SIZE = 65536
_READS_PER_WAKEUP = 64


@dataclass
class SleeveStats:
    datagrams_received: int = 0
    datagrams_dropped: int = 0  # unknown sender, undecryptable, replayed, malformed
    frames_delivered: int = 0
    frames_dropped: int = 0  # data frames nobody consumed, unknown peers
    raw_df_unavailable: bool = False
    send_dropped: int = 0  # full socket buffer
    last_errors: list[str] = field(default_factory=list)


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
        self.offload = False  # announce OFFLOAD_FEATURE (set by the data plane before start)
        self.gso = True  # UDP segmentation offload works (until the kernel says otherwise)
        self._raw_df = raw_df
        self.sock: socket.socket | None = None
        self.df_sock: socket.socket | None = None  # the DF twin (send only), see open_df_twin
        self._loop: asyncio.AbstractEventLoop | None = None
        self._reading = False
        self.us: PeerName = PeerName(0)
        self.us_bin = bytes(NAME_SIZE)
        self._is_known: Callable[[PeerName], bool] = lambda _n: False
        self.forwarders: dict[PeerName, SleeveForwarder] = {}
        self.forwarders_by_name: dict[bytes, SleeveForwarder] = {}  # same, keyed by 6 bytes
        self.df_senders: dict[str, RawDFSender] = {}

    async def start(self, us: PeerName, is_known_peer: Callable[[PeerName], bool]) -> None:
        self.us = us
        self.us_bin = peer_name_to_bytes(us)
        self._is_known = is_known_peer
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            # Datagrams on this socket never carry DF: the kernel may fragment them.
            sock.setsockopt(socket.IPPROTO_IP, IP_MTU_DISCOVER, IP_PMTUDISC_DONT)
            steered = reuseport(sock)
            sock.bind((self.host or "0.0.0.0", self.port))
            if steered:
                steered = try_option(steer_to_first, sock)
            sock.setblocking(False)
        except OSError:
            sock.close()
            raise
        self.sock = sock
        self.df_sock = open_df_twin(sock) if steered else None
        self._loop = asyncio.get_running_loop()
        self.attach_reader()
        log.info("sleeve listening host=%s port=%d", self.host or "0.0.0.0", self.port)

    async def stop(self) -> None:
        for fwd in list(self.forwarders.values()):
            fwd.stop()
        for sender in self.df_senders.values():
            sender.close()
        self.df_senders.clear()
        if self.df_sock is not None:
            self.df_sock.close()
            self.df_sock = None
        if self.sock is not None:
            self.detach_reader()
            self.sock.close()
            self.sock = None

    def diagnostics(self) -> object:
        return None

    def features(self) -> dict[str, str]:
        """Extra handshake features (merged by the OverlaySwitch)."""
        return {OFFLOAD_FEATURE: OFFLOAD_VERSION} if self.offload else {}

    # --- reading the UDP socket -----------------------------------------------------------

    def attach_reader(self) -> None:
        """Read the socket on the event loop (the default)."""
        if self.sock is None or self._loop is None or self._reading:
            return
        self._loop.add_reader(self.sock.fileno(), self._read_ready)
        self._reading = True

    def detach_reader(self) -> None:
        """Stop reading on the event loop: a data-plane thread reads `sock` instead."""
        if self.sock is None or self._loop is None or not self._reading:
            return
        self._loop.remove_reader(self.sock.fileno())
        self._reading = False

    def _read_ready(self) -> None:
        sock = self.sock
        if sock is None:
            return
        for _ in range(_READS_PER_WAKEUP):
            try:
                data, addr = sock.recvfrom(_RECV_SIZE)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as e:
                log.debug("sleeve UDP error error=%s", e)
                return
            self._datagram(data, addr)

    def prepare(self, params: OverlayParams, hooks: ForwarderHooks) -> Forwarder:
        return SleeveForwarder(self, params, hooks)

    # --- plumbing used by forwarders ---------------------------------------------------------

    def send_plain(self, datagram: Buffer, addr: tuple[str, int]) -> None:
        """The non-DF path, from the event loop (never blocks: a full buffer drops)."""
        sock = self.sock
        if sock is None:
            return
        try:
            sock.sendto(datagram, addr)
        except BlockingIOError:
            self.stats.send_dropped += 1
        except OSError as e:
            log.debug("sleeve UDP send failed addr=%s:%d error=%s", addr[0], addr[1], e)

    def send_segments(
        self,
        sends: Sequence[Sequence[Buffer]],
        segment_size: int,
        addr: tuple[str, int],
        df: bool = False,
    ) -> bool:
        sock = self.df_sock if df else self.sock
        if sock is None or not self.gso:
            return False
        cmsg = [(SOL_UDP, UDP_SEGMENT, struct.pack("H", segment_size))]
        for parts in sends:
            try:
                try:
                    sock.sendmsg(parts, cmsg, 0, addr)
                except BlockingIOError:
                    if not wait_writable(sock):
                        raise
                    sock.sendmsg(parts, cmsg, 0, addr)
            except BlockingIOError:
                self.stats.send_dropped += 1
            except OSError as e:
                if df and e.errno in (errno.EINVAL, errno.EMSGSIZE):
                    return False  # segments over the path MTU: sent one by one, found out
                if e.errno in (errno.EINVAL, errno.EIO, errno.ENOPROTOOPT, errno.EOPNOTSUPP):
                    log.warning("sleeve: no UDP segmentation offload here error=%s", e)
                    self.gso = False
                    return False
                log.debug("sleeve UDP send failed addr=%s:%d error=%s", addr[0], addr[1], e)
        return True

    def set_gro(self, on: bool) -> bool:
        """Let the kernel hand over runs of datagrams from one peer as one buffer (UDP_GRO;
        the reader must then split them: `recvmsg` tells the segment size)."""
        if self.sock is None:
            return False
        try:
            self.sock.setsockopt(SOL_UDP, UDP_GRO, 1 if on else 0)
        except OSError:
            return False
        return True

    def send_parts(self, parts: Sequence[Buffer], addr: tuple[str, int]) -> None:
        """The non-DF path from a data-plane thread: a datagram in pieces; a full send
        buffer is waited for briefly."""
        sock = self.sock
        if sock is None:
            return
        try:
            try:
                sock.sendmsg(parts, (), 0, addr)
            except BlockingIOError:
                if not wait_writable(sock):
                    raise
                sock.sendmsg(parts, (), 0, addr)
        except BlockingIOError:
            self.stats.send_dropped += 1
        except OSError as e:
            log.debug("sleeve UDP send failed addr=%s:%d error=%s", addr[0], addr[1], e)

    def df_sender(self, local_ip: str) -> RawDFSender | None:
        if not self._raw_df or self.stats.raw_df_unavailable:
            return None
        sender = self.df_senders.get(local_ip)
        if sender is None:
            try:
                sender = RawDFSender(local_ip, self.port)
            except PermissionError:
                self.stats.raw_df_unavailable = True
                log.warning(
                    "sleeve has no CAP_NET_RAW: DF datagrams go out on the normal socket, "
                    "path MTU discovery is off"
                )
                return None
            self.df_senders[local_ip] = sender
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
            if frame.src == fwd.remote and frame.dst == self.us:
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
