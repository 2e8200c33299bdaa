"""The sleeve data path: frames between the TAP on our bridge and the mesh's UDP socket.

Frames move on worker threads (worker.py): what is captured from the TAP leaves through
the send side (send.py: batching, trains of equal datagrams in one UDP GSO send, segments
for offload peers), what comes from the socket goes through the receive side (receive.py:
opening, special frames, injection, relaying). This module starts and stops them and keeps
what they read: the forwarding snapshot and the TAP.

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
import errno
import fcntl
import itertools
import logging
import os
import socket
import struct
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

from weaved.datapath.sleeve import tap as taplib
from weaved.datapath.sleeve.counters import Counters
from weaved.datapath.sleeve.ethernet import BytesLike
from weaved.datapath.sleeve.forwarder import SleeveForwarder
from weaved.datapath.sleeve.forwarding import ForwardingTable, Switch
from weaved.datapath.sleeve.overlay import SleeveOverlay
from weaved.datapath.sleeve.send import Link
from weaved.datapath.sleeve.worker import Worker
from weaved.mesh.gossip_api import PeerName
from weaved.mesh.peername import peer_name_to_bytes
from weaved.mesh.router import Router
from weaved.mesh.routes import Routes
from weaved.model.resources import BRIDGE

__all__ = ["Counters", "Link", "SleeveDatapath"]

log = logging.getLogger(__name__)
T = TypeVar("T")

OLD_TAP_CLOSE_DELAY = 5.0  # a replaced TAP fd is closed once no worker can still use it
REFRESH_INTERVAL = 0.1
TAP_CHECK_INTERVAL = 2.0
MAC_EXPIRY_INTERVAL = 60.0  # Weave checks every max age / 10
SOCKET_BUFFER = 8 << 20
MAX_BRIDGE_MTU = 65535
_SIOCGIFMTU = 0x8921
_SO_SNDBUFFORCE = 32
_SO_RCVBUFFORCE = 33


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
        self.stopping = threading.Event()
        self.workers: list[Worker] = []
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
        self.stopping.clear()
        if self.workers_wanted == 1:
            self.workers = [Worker(self, "sleeve", tap=True, udp=True)]
        else:
            self.workers = [
                Worker(self, "sleeve-capture", tap=True, udp=False),
                Worker(self, "sleeve-receive", tap=False, udp=True),
            ]
        for worker in self.workers:
            worker.thread.start()
        self.running = True
        self._tasks = [
            asyncio.create_task(self._maintain(), name="sleeve-maintain"),
            asyncio.create_task(self._keep_tap(), name="sleeve-tap"),
        ]
        log.info(
            "sleeve data path started offload=%s workers=%d tap=%s",
            self.offload,
            len(self.workers),
            self.tap_name,
        )

    async def stop(self) -> None:
        if not self.running:
            return
        self.running = False
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self.stopping.set()
        for worker in self.workers:
            worker.wake()
        for worker in self.workers:
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
        for worker in self.workers:
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
        for worker in self.workers:
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
