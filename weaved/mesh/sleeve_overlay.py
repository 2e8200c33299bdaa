"""The sleeve overlay's I/O shell: the UDP socket on the mesh port and the DF sender.

Control logic lives in `sleeve.SleeveControl`; this module moves datagrams. Two send paths,
as Weave: the normal UDP socket with DF off (kernel fragments), and a raw IP socket with DF
set that builds its own UDP header with checksum 0 (heartbeats, MTU probes, the PMTU
trigger whose EMSGSIZE reveals the path MTU). Without CAP_NET_RAW the DF path falls back to
the normal socket (no path-MTU discovery then). Received data frames go to a pluggable
callback; by default they are counted and dropped.

The data plane (weaved.datapath.sleeve) moves frames on threads of its own: it takes over
reading the UDP socket (`detach_reader`, handing special frames back with
`SleeveForwarder.special_threadsafe`) and sends with `SleeveForwarder.send_body`, which
may be called from any thread (sealing is serialised per path, so sequence numbers stay
unique). When the data plane asks for it (`offload = True`) we announce the feature
`WeavedSleeveOffload`; Weave ignores unknown features, and a forwarder whose remote sent
it too has `offload` set: both ends then carry frames with their virtio-net headers and
send big datagrams as path-sized segments in one UDP GSO send (`send_segments`; the socket
then has UDP GRO on, `set_gro`). Encrypted datagrams are sealed and opened with PyNaCl's
libsodium called directly (`_box`, `_DirectOpener`): Weave's nonces and replay windows
(crypto.py) without PyNaCl's padding copies.
"""

from __future__ import annotations

import asyncio
import ctypes
import errno
import logging
import select
import socket
import struct
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from weaved.mesh.crypto import (
    SECRETBOX_OVERHEAD,
    SEQ_SIZE,
    DecryptError,
    ReplayWindow,
    SleeveOpener,
    SleeveSealer,
    sleeve_nonce,
)
from weaved.mesh.deadline_timer import DeadlineTimer
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

__all__ = [
    "OFFLOAD_FEATURE",
    "OFFLOAD_VERSION",
    "FrameHandler",
    "SleeveForwarder",
    "SleeveOverlay",
    "SleeveStats",
]

log = logging.getLogger(__name__)

Buffer = bytes | bytearray | memoryview

FrameHandler = Callable[[PeerName, SleeveFrame, tuple[str, int]], None]
"""(peer whose datagram carried it, frame, UDP source address)."""

_IP_MTU_DISCOVER = getattr(socket, "IP_MTU_DISCOVER", 10)
_IP_PMTUDISC_DONT = getattr(socket, "IP_PMTUDISC_DONT", 0)
_IP_PMTUDISC_DO = getattr(socket, "IP_PMTUDISC_DO", 2)
_IP_MTU = getattr(socket, "IP_MTU", 14)
_SO_ATTACH_FILTER = 26
_SO_ATTACH_REUSEPORT_CBPF = 51
_RECV_SIZE = 65536
_READS_PER_WAKEUP = 64
_SEND_WAIT_MS = 20  # how long a data-plane thread waits for a full send buffer

_DF_BIT = 1 << 63

try:  # PyNaCl's own libsodium build, called directly (see _box)
    from nacl._sodium import ffi as _ffi
    from nacl._sodium import lib as _sodium
except ImportError:  # pragma: no cover
    _ffi = _sodium = None

_SOL_UDP = 17
_UDP_SEGMENT = 103
_UDP_GRO = 104

OFFLOAD_FEATURE = "WeavedSleeveOffload"
OFFLOAD_VERSION = "1"


@dataclass
class SleeveStats:
    datagrams_received: int = 0
    datagrams_dropped: int = 0  # unknown sender, undecryptable, replayed, malformed
    frames_delivered: int = 0
    frames_dropped: int = 0  # data frames nobody consumed, unknown peers
    raw_df_unavailable: bool = False
    send_dropped: int = 0  # full socket buffer
    last_errors: list[str] = field(default_factory=list)


def _attach_return_zero(sock: socket.socket, option: int) -> None:
    """Attach the classic BPF program `return 0` (the kernel copies it at once)."""
    insn = struct.pack("HBBI", 0x06, 0, 0, 0)  # BPF_RET | BPF_K, 0
    buf = ctypes.create_string_buffer(insn)
    prog = struct.pack("HL", 1, ctypes.addressof(buf))
    sock.setsockopt(socket.SOL_SOCKET, option, prog)


def _drop_all_filter(sock: socket.socket) -> None:
    """A raw UDP socket gets a copy of every UDP packet; we only send on it."""
    _attach_return_zero(sock, _SO_ATTACH_FILTER)  # a socket filter: accept nothing


def _steer_to_first(sock: socket.socket) -> None:
    """In `sock`'s SO_REUSEPORT group, every datagram goes to the group's first socket."""
    _attach_return_zero(sock, _SO_ATTACH_REUSEPORT_CBPF)  # a group program: socket index 0


def _open_df_twin(sock: socket.socket) -> socket.socket | None:
    """A send-only twin of the sleeve socket, bound to the same address in its SO_REUSEPORT
    group, with DF set (IP_PMTUDISC_DO): DF datagrams can then leave in one UDP GSO send,
    which the raw DF sender cannot do. The group's program (attached to `sock` before the
    twin joins) keeps every received datagram on `sock`. None where the kernel refuses."""
    twin = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        twin.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        twin.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        twin.setsockopt(socket.IPPROTO_IP, _IP_MTU_DISCOVER, _IP_PMTUDISC_DO)
        twin.bind(sock.getsockname())
        twin.setblocking(False)
    except OSError as e:
        twin.close()
        log.info("sleeve: no DF twin socket, DF datagrams go one by one error=%s", e)
        return None
    return twin


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

    def send(self, payload: Buffer, addr: tuple[str, int]) -> int | None:
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

    def send_parts(self, parts: Sequence[Buffer], size: int, addr: tuple[str, int]) -> int | None:
        """`send` for a payload in pieces of `size` bytes in all (data-plane threads: waits
        briefly when the send buffer is full)."""
        header = struct.pack(">HHHH", self._local_port, addr[1], 8 + size, 0)
        dest = (addr[0], 0)
        try:
            try:
                self._sock.sendmsg((header, *parts), (), 0, dest)
            except BlockingIOError:
                if not _wait_writable(self._sock):
                    return None
                self._sock.sendmsg((header, *parts), (), 0, dest)
        except BlockingIOError:
            return None
        except OSError as e:
            if e.errno != errno.EMSGSIZE:
                raise
            return _path_mtu(addr)
        return None

    def close(self) -> None:
        self._sock.close()


def _box(prefix: bytes, message: Buffer, nonce: bytes, key: bytes) -> Buffer:
    """`prefix` + secretbox(message): libsodium's easy interface straight into one buffer,
    with none of PyNaCl's padding copies (a third less time per frame, more for 64 KB)."""
    size = len(message)
    out = _ffi.new("unsigned char[]", len(prefix) + SECRETBOX_OVERHEAD + size)
    _ffi.memmove(out, prefix, len(prefix))
    _sodium.crypto_secretbox_easy(out + len(prefix), _ffi.from_buffer(message), size, nonce, key)
    view: Buffer = memoryview(_ffi.buffer(out))
    return view


class _DirectOpener:
    """crypto.SleeveOpener's semantics (nonce from the received `seq|DF` field, one replay
    window per path) with libsodium called directly."""

    def __init__(self, session_key: bytes, outbound: bool) -> None:
        self._key = session_key
        self._sender_outbound = not outbound
        self._windows = {False: ReplayWindow(), True: ReplayWindow()}

    def __repr__(self) -> str:
        return "SleeveOpener(encrypted=True)"

    def open(self, packet: Buffer) -> bytes | None:
        size = len(packet) - SEQ_SIZE - SECRETBOX_OVERHEAD
        if size < 0:
            raise DecryptError("message shorter than sequence number and authenticator")
        view = memoryview(packet)
        seq_field = int.from_bytes(view[:SEQ_SIZE], "big")
        nonce = sleeve_nonce(self._sender_outbound, seq_field)
        out = _ffi.new("unsigned char[]", max(size, 1))
        box = _ffi.from_buffer(view[SEQ_SIZE:])
        if _sodium.crypto_secretbox_open_easy(out, box, len(view) - SEQ_SIZE, nonce, self._key):
            raise DecryptError("Unable to decrypt msg")
        if not self._windows[bool(seq_field & _DF_BIT)].accept(seq_field & (_DF_BIT - 1)):
            return None
        return bytes(_ffi.buffer(out, size))


def _reuseport(sock: socket.socket) -> bool:
    return _try(lambda s: s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1), sock)


def _try(fn: Callable[[socket.socket], None], sock: socket.socket) -> bool:
    """Did `fn(sock)` succeed (an optional socket feature)?"""
    try:
        fn(sock)
    except OSError:
        return False
    return True


def _wait_writable(sock: socket.socket) -> bool:
    poller = select.poll()
    poller.register(sock.fileno(), select.POLLOUT)
    return bool(poller.poll(_SEND_WAIT_MS))


def _path_mtu(addr: tuple[str, int]) -> int:
    """The kernel's current path MTU towards `addr` (what EMSGSIZE just updated)."""
    probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        probe.setsockopt(socket.IPPROTO_IP, _IP_MTU_DISCOVER, _IP_PMTUDISC_DO)
        probe.connect(addr)
        return int(probe.getsockopt(socket.IPPROTO_IP, _IP_MTU))
    finally:
        probe.close()


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
        self.df_sock: socket.socket | None = None  # the DF twin (send only), see _open_df_twin
        self._loop: asyncio.AbstractEventLoop | None = None
        self._reading = False
        self._us: PeerName = PeerName(0)
        self._us_bin = bytes(NAME_SIZE)
        self._is_known: Callable[[PeerName], bool] = lambda _n: False
        self.forwarders: dict[PeerName, SleeveForwarder] = {}
        self.forwarders_by_name: dict[bytes, SleeveForwarder] = {}  # same, keyed by 6 bytes
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
            steered = _reuseport(sock)
            sock.bind((self.host or "0.0.0.0", self.port))
            if steered:
                steered = _try(_steer_to_first, sock)
            sock.setblocking(False)
        except OSError:
            sock.close()
            raise
        self.sock = sock
        self.df_sock = _open_df_twin(sock) if steered else None
        self._loop = asyncio.get_running_loop()
        self.attach_reader()
        log.info("sleeve listening host=%s port=%d", self.host or "0.0.0.0", self.port)

    async def stop(self) -> None:
        for fwd in list(self.forwarders.values()):
            fwd.stop()
        for sender in self._df_senders.values():
            sender.close()
        self._df_senders.clear()
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

    def _send_plain(self, datagram: Buffer, addr: tuple[str, int]) -> None:
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

    def _send_segments(
        self,
        sends: Sequence[Sequence[Buffer]],
        segment_size: int,
        addr: tuple[str, int],
        df: bool = False,
    ) -> bool:
        sock = self.df_sock if df else self.sock
        if sock is None or not self.gso:
            return False
        cmsg = [(_SOL_UDP, _UDP_SEGMENT, struct.pack("H", segment_size))]
        for parts in sends:
            try:
                try:
                    sock.sendmsg(parts, cmsg, 0, addr)
                except BlockingIOError:
                    if not _wait_writable(sock):
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
            self.sock.setsockopt(_SOL_UDP, _UDP_GRO, 1 if on else 0)
        except OSError:
            return False
        return True

    def _send_parts(self, parts: Sequence[Buffer], addr: tuple[str, int]) -> None:
        """The non-DF path from a data-plane thread: a datagram in pieces; a full send
        buffer is waited for briefly."""
        sock = self.sock
        if sock is None:
            return
        try:
            try:
                sock.sendmsg(parts, (), 0, addr)
            except BlockingIOError:
                if not _wait_writable(sock):
                    raise
                sock.sendmsg(parts, (), 0, addr)
        except BlockingIOError:
            self.stats.send_dropped += 1
        except OSError as e:
            log.debug("sleeve UDP send failed addr=%s:%d error=%s", addr[0], addr[1], e)

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
        self.remote_bin = peer_name_to_bytes(params.remote)
        key = params.session_key
        self.encrypted = key is not None
        # Both ends announced it: data frames carry their virtio-net headers (data plane).
        self.offload = overlay.offload and params.features.get(OFFLOAD_FEATURE) == OFFLOAD_VERSION
        us_bin = overlay._us_bin
        self._sealer = SleeveSealer(us_bin, key, params.outbound, df=False)
        self._sealer_df = SleeveSealer(us_bin, key, params.outbound, df=True)
        # Sealing advances a sequence number: one lock per path, as threads send too.
        self._seal_lock = threading.Lock()
        self._seal_lock_df = threading.Lock()
        self._key = key
        self._outbound = params.outbound
        self._direct = key is not None and _sodium is not None
        self.opener: SleeveOpener | _DirectOpener = (
            _DirectOpener(key, params.outbound)
            if key is not None and _sodium is not None
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
        self._overlay._df_sender(self._local_ip)  # created here, used by threads as well
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
            self._overlay._send_plain(self._seal(body, False), self.control.remote_addr)

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
        pieces = (self._overlay._us_bin, *payload)
        size += NAME_SIZE
        if not df:
            self._overlay._send_parts(pieces, addr)
            return
        sender = self._overlay._df_senders.get(self._local_ip)
        if sender is None:
            self._overlay._send_parts(pieces, addr)
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
        return self._overlay._send_segments(sends, segment_size, addr, df)

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
        seq_field = seq | (_DF_BIT if df else 0)
        prefix = self._overlay._us_bin + seq_field.to_bytes(SEQ_SIZE, "big")
        return _box(prefix, body, sleeve_nonce(self._outbound, seq_field), self._key)

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
                    pmtu = self._send_df(self._seal(body, True))
                    if pmtu is not None:
                        queue[0:0] = self.control.on_send_too_big(pmtu, self._now())
                else:
                    self._overlay._send_plain(self._seal(body, False), self.control.remote_addr)
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
