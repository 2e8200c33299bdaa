"""The MACs that live on this host, kept current from the bridge's own announcements.

Peers learn from us which MACs are ours, and no peer may claim one of them (fdb.desired_state).
They were re-read from the bridge's whole table on every neighbour or FDB event and every
second besides: ~30 ms per read with 1 000 containers (~5 000 entries), the daemon's largest
idle cost. Now each RTM_NEWNEIGH/RTM_DELNEIGH of the bridge's table is applied as it comes
(the bridge keys its table by MAC and VLAN, so an announcement replaces or removes one entry);
the whole table is read only at start, after the socket overflowed (ENOBUFS: announcements
were lost), and every `FULL_READ_SECONDS` as a safety net.

A full read races the announcements that arrive while it runs: those applied after the
read began are applied again on top of its result (`mark` before reading, `reset` after).
"""

from __future__ import annotations

import contextlib
import logging
import socket
import threading
from collections import Counter, deque
from collections.abc import Iterable

from weaved.datapath.fastdp.fdb import FdbRow, is_local_row
from weaved.datapath.fastdp.netlink import fdb_state
from weaved.dataplane.rtnl import NTF_SELF, Fdb, fdb_events, receive

__all__ = [
    "FULL_READ_SECONDS",
    "BridgeIndex",
    "LocalMacs",
    "bridge_changes",
    "neigh_socket",
    "read_changes",
]

log = logging.getLogger(__name__)

FULL_READ_SECONDS = 60.0
RTMGRP_NEIGH = 0x4
REPLAY_LOG = 4096  # announcements kept for replay over a full read running meanwhile

Change = tuple[bool, FdbRow]  # (added or changed, entry) / (deleted, entry)


def bridge_changes(events: list[tuple[bool, Fdb]], bridge_index: int) -> list[Change]:
    """The changes of bridge `bridge_index`'s table among the `fdb_events` of what an
    RTMGRP_NEIGH socket read (other bridges and devices' own entries are left out). Ports are
    named now (an ioctl each): an entry on a port already gone gets the name ""."""
    out: list[Change] = []
    for added, entry in events:
        if entry.master != bridge_index or entry.flags & NTF_SELF or not entry.mac:
            continue
        port = ""
        if added:
            with contextlib.suppress(OSError):
                port = socket.if_indextoname(entry.ifindex)
        row = FdbRow(entry.mac, port, True, fdb_state(entry.state), vlan=entry.vlan)
        out.append((added, row))
    return out


class BridgeIndex:
    """A bridge's ifindex, to pick its table's announcements out: looked up again (an ioctl,
    ~0.1 ms with 1 000 links, once per read of the socket before) only when an announcement
    names a master other than the one known: the bridge made again, or another bridge."""

    def __init__(self, bridge: str) -> None:
        self.bridge = bridge
        self._index = 0

    def among(self, masters: set[int]) -> int:
        if self._index and masters <= {self._index}:
            return self._index
        try:
            self._index = socket.if_nametoindex(self.bridge)
        except OSError:
            self._index = 0  # no bridge: nothing of its table to follow
        return self._index


class LocalMacs:
    """The bridge table's entries by (MAC, VLAN), each local or not. Used from the event
    loop (announcements) and the reconciler's thread (a converge's full read): locked."""

    def __init__(self, bridge: str, remote_ports: Iterable[str]) -> None:
        self.bridge = bridge
        self.remote = frozenset(remote_ports)
        self._lock = threading.Lock()
        self._local: dict[tuple[str, int], bool] = {}
        # Local entries by MAC (one MAC may be in several VLANs): `macs()` without a walk of
        # the whole table at every announcement (~0.2 ms of GIL each with 1 000 containers).
        self._local_count: Counter[str] = Counter()
        # `macs()` as last built; None once the set changed. Most announcements leave it as
        # it is (a port's own entry): no set of every local MAC built for them.
        self._frozen: frozenset[str] | None = None
        self._seq = 0
        self._log: deque[tuple[int, Change]] = deque(maxlen=REPLAY_LOG)
        self.stale = True  # no full read yet, or announcements were lost since

    def mark(self) -> int:
        """Take before a full read begins; hand to `reset` with its result."""
        with self._lock:
            return self._seq

    def reset(self, rows: Iterable[FdbRow], since: int) -> None:
        """A full read of the table, begun at `mark()` == since."""
        local = {
            (row.mac.lower(), row.vlan): is_local_row(row, self.bridge, self.remote)
            for row in rows
            if row.master
        }
        with self._lock:
            replay = [change for seq, change in self._log if seq > since]
            lost = len(replay) < self._seq - since  # fell off the log: read again
            self._local = local
            self._local_count = Counter(mac for (mac, _vlan), here in local.items() if here)
            self._frozen = None
            for change in replay:
                self._apply(change)
            self.stale = lost
            while self._log and self._log[0][0] <= since:  # older reads: read again (rare)
                self._log.popleft()

    def apply(self, changes: Iterable[Change]) -> None:
        with self._lock:
            for change in changes:
                self._seq += 1
                self._log.append((self._seq, change))
                self._apply(change)

    def _apply(self, change: Change) -> None:
        added, row = change
        key = (row.mac.lower(), row.vlan)
        was = key[0] in self._local_count
        if self._local.pop(key, False):
            self._local_count[key[0]] -= 1
            if not self._local_count[key[0]]:
                del self._local_count[key[0]]
        if added:
            here = self._local[key] = is_local_row(row, self.bridge, self.remote)
            if here:
                self._local_count[key[0]] += 1
        if was != (key[0] in self._local_count):  # the set of local MACs changed
            self._frozen = None

    def macs(self) -> frozenset[str]:
        """The local MACs; the same object until they change."""
        with self._lock:
            if self._frozen is None:
                self._frozen = frozenset(self._local_count)
            return self._frozen


def read_changes(sock: socket.socket, bridge: BridgeIndex) -> list[Change] | None:
    """Every change of `bridge`'s table queued on the non-blocking RTMGRP_NEIGH socket `sock`;
    None when some were lost (the socket overflowed: read the whole table again)."""
    changes: list[Change] = []
    while True:
        try:
            data = receive(sock)
        except BlockingIOError:
            return changes
        except OSError as exc:  # ENOBUFS
            log.debug("fastdp neighbour events lost error=%s", exc)
            return None
        if not data:
            return changes
        events = fdb_events(data)
        bridge_index = bridge.among({entry.master for _added, entry in events if entry.master})
        if bridge_index:
            changes += bridge_changes(events, bridge_index)


def neigh_socket() -> socket.socket | None:
    """A netlink socket that tells us of neighbour/FDB changes."""
    try:
        sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, socket.NETLINK_ROUTE)
        with contextlib.suppress(OSError):  # room for a burst (1 000 containers attached)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
        sock.bind((0, RTMGRP_NEIGH))
        sock.setblocking(False)
    except OSError as exc:
        log.info("fastdp: no netlink events, polling only error=%s", exc)
        return None
    return sock
