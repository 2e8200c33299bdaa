"""Which container veths came, went or changed since the last look, from the kernel's link
announcements (RTM_NEWLINK/RTM_DELLINK to the RTMGRP_LINK group) instead of listing every link
of the host every few seconds (`if_nameindex()` cost grew with the containers).

A socket that lost announcements (ENOBUFS: its buffer overflowed in a burst) or could not be
opened says "something may have changed", so the caller falls back to its full check: nothing
is missed, only looked for more often.
"""

from __future__ import annotations

import errno
import socket
from collections.abc import Collection

from weaved.attach.model import CNI_VETH_PREFIX, VETH_PREFIX
from weaved.dataplane.rtnl import link_name, messages, receive

RTMGRP_LINK = 1
RTM_NEWLINK, RTM_DELLINK = 16, 17


def veths_in(data: bytes) -> list[str]:
    """Names of weaved's container veths (`vethwepl*`, not CNI's) in announcements of links
    made, changed or deleted."""
    out = []
    for kind, start, end in messages(data):
        family = data[start] if end > start else -1
        # Links come and go in AF_UNSPEC announcements; the bridge's (a port's flags) and
        # IPv6's (its per-link state) name every port over and over on an idle host.
        if kind in (RTM_NEWLINK, RTM_DELLINK) and family == socket.AF_UNSPEC:
            name = link_name(data, start, end)
            if name.startswith(VETH_PREFIX) and not name.startswith(CNI_VETH_PREFIX):
                out.append(name)
    return out


class LinkEvents:
    """Link announcements of the namespace this is made in; `moved` drains them."""

    def __init__(self) -> None:
        self._sock: socket.socket | None = None
        self._lost = True  # nothing was heard before the socket existed

    def open(self) -> None:
        try:
            sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, socket.NETLINK_ROUTE)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
            sock.bind((0, RTMGRP_LINK))
            sock.setblocking(False)
        except OSError:
            return  # `moved` keeps saying "maybe": the full check every time, as before
        self._sock = sock

    def moved(self, busy: Collection[str] = ()) -> bool:
        """True when a container veth not in `busy` (calls under way make or remove those) was
        announced since the last call, announcements were lost, or none can be heard."""
        lost, self._lost = self._lost, False
        if self._sock is None:
            return True
        seen = False
        while True:
            try:
                data = receive(self._sock)
            except BlockingIOError:
                break
            except OSError as exc:
                if exc.errno in (errno.ENOBUFS, errno.EMSGSIZE):  # some unread: look at all
                    lost = True
                    continue
                raise
            if not seen and not lost:  # once known, the rest is only drained
                seen = any(name not in busy for name in veths_in(data))
        return lost or seen

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None
