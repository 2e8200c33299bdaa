"""The TAP device sleeve captures from and injects into: `vethwe-tap`, a port of `weave`.

Created non-persistent with a virtio-net header (IFF_VNET_HDR), so it lives exactly as long
as the daemon's file descriptor: nothing is left behind, and a device of that name that is
not held open is a leftover that may be deleted (the `vethwe-` prefix is weaved's). The
offloads the kernel may hand us (TUNSETOFFLOAD: partial checksums, TCP segmentation) can be
switched at any time; without them the kernel finishes checksums and segments before a frame
reaches us. The link is configured through netlink: MTU the device's maximum (as Weave's
bridge in sleeve mode, so the bridge never drops a frame for size on our port), master
`weave`, an isolated port with hairpin off (model.host.TAP_FLAGS), up, and no IPv6 of its
own (it must not send anything by itself).

All functions block; call them off the event loop.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import logging
import os
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pyroute2 import IPRoute
from pyroute2.netlink.exceptions import NetlinkError

from weaved.datapath.sleeve.vnet import VNET_HDR_LEN
from weaved.dataplane.brport import hairpin_mode, set_flags
from weaved.model.host import TAP_FLAGS
from weaved.model.resources import BRIDGE

__all__ = [
    "TAP_NAME",
    "TapError",
    "TapLink",
    "configure_link",
    "delete_link",
    "held_by_another_process",
    "observe_link",
    "open_tap",
    "set_offload",
]

log = logging.getLogger(__name__)

TAP_NAME = "vethwe-tap"
TAP_MAX_MTU = 65521  # the tun driver's maximum

_TUNSETIFF = 0x400454CA
_TUNSETOFFLOAD = 0x400454D0
_TUNSETVNETHDRSZ = 0x400454D8
_TUNSETVNETLE = 0x400454DC
_IFF_TAP = 0x0002
_IFF_NO_PI = 0x1000
_IFF_VNET_HDR = 0x4000
_IFF_PERSIST = 0x0800
TUN_F_CSUM = 0x01
TUN_F_TSO4 = 0x02
TUN_F_TSO6 = 0x04
TUN_F_TSO_ECN = 0x08
OFFLOADS = TUN_F_CSUM | TUN_F_TSO4 | TUN_F_TSO6 | TUN_F_TSO_ECN
_IFF_UP = 1


class TapError(OSError):
    pass


@dataclass(frozen=True)
class TapLink:
    index: int
    kind: str
    mtu: int
    max_mtu: int
    master: int | None
    up: bool
    bridge_index: int | None
    hairpin: bool | None


def open_tap(name: str = TAP_NAME) -> int:
    """A non-blocking file descriptor of a new TAP device `name` with virtio-net headers."""
    fd = os.open("/dev/net/tun", os.O_RDWR | os.O_CLOEXEC | os.O_NONBLOCK)
    try:
        ifr = struct.pack("16sH22x", name.encode(), _IFF_TAP | _IFF_NO_PI | _IFF_VNET_HDR)
        fcntl.ioctl(fd, _TUNSETIFF, ifr)
        fcntl.ioctl(fd, _TUNSETVNETHDRSZ, struct.pack("i", VNET_HDR_LEN))
        with contextlib.suppress(OSError):  # little-endian already on x86; explicit elsewhere
            fcntl.ioctl(fd, _TUNSETVNETLE, struct.pack("i", 1))
        fcntl.ioctl(fd, _TUNSETOFFLOAD, 0)
    except OSError as e:
        os.close(fd)
        raise TapError(e.errno, f"cannot create TAP device {name}: {e.strerror}") from None
    return fd


def held_by_another_process(name: str = TAP_NAME) -> bool:
    """A TUN/TAP device that is not persistent exists only while a process holds it open:
    then it is not a leftover (another daemon runs?) and must not be taken away."""
    try:
        flags = int(Path(f"/sys/class/net/{name}/tun_flags").read_text().strip(), 16)
    except (OSError, ValueError):
        return False  # gone, or not a TUN/TAP device at all
    return not flags & _IFF_PERSIST


def set_offload(fd: int, on: bool) -> None:
    """Let the kernel hand us partial checksums and TCP superframes (or not)."""
    fcntl.ioctl(fd, _TUNSETOFFLOAD, OFFLOADS if on else 0)


def _kind(link: Any) -> str:
    info = link.get_attr("IFLA_LINKINFO")
    return str(info.get_attr("IFLA_INFO_KIND") or "") if info is not None else ""


def observe_link(name: str = TAP_NAME, bridge: str = BRIDGE) -> TapLink | None:
    ipr = IPRoute()
    try:
        found = ipr.link_lookup(ifname=name)
        if not found:
            return None
        link = ipr.get_links(found[0])[0]
        bridges = ipr.link_lookup(ifname=bridge)
        master = link.get_attr("IFLA_MASTER")
        return TapLink(
            index=int(found[0]),
            kind=_kind(link),
            mtu=int(link.get_attr("IFLA_MTU") or 0),
            max_mtu=int(link.get_attr("IFLA_MAX_MTU") or TAP_MAX_MTU),
            master=int(master) if master else None,
            up=bool(link["flags"] & _IFF_UP),
            bridge_index=int(bridges[0]) if bridges else None,
            hairpin=hairpin_mode(ipr, int(found[0])) if master else None,
        )
    finally:
        ipr.close()


def _disable_ipv6(name: str) -> bool:
    path = Path(f"/proc/sys/net/ipv6/conf/{name}/disable_ipv6")
    try:
        if path.read_text().strip() == "1":
            return False
        path.write_text("1\n")
        return True
    except OSError:
        return False  # no IPv6 in this kernel


def configure_link(name: str = TAP_NAME, bridge: str = BRIDGE) -> list[str]:
    """Make the TAP a working port of the bridge; returns what was changed. Without a bridge
    (not converged yet) the TAP is configured as far as it can be."""
    changes: list[str] = []
    if _disable_ipv6(name):
        changes.append(f"{name}: ipv6 off")
    ipr = IPRoute()
    try:
        found = ipr.link_lookup(ifname=name)
        if not found:
            raise TapError(errno.ENODEV, f"TAP device {name} vanished")
        index = int(found[0])
        link = ipr.get_links(index)[0]
        max_mtu = int(link.get_attr("IFLA_MAX_MTU") or TAP_MAX_MTU)
        if link.get_attr("IFLA_MTU") != max_mtu:
            ipr.link("set", index=index, mtu=max_mtu)
            changes.append(f"{name}: mtu {max_mtu}")
        bridges = ipr.link_lookup(ifname=bridge)
        if bridges and link.get_attr("IFLA_MASTER") != bridges[0]:
            ipr.link("set", index=index, master=bridges[0])
            # The port's flags are the reconciler's (planned, shown, repaired); set here only
            # as the TAP is plugged in, so it is never a non-isolated port, not even briefly.
            set_flags(ipr, index, TAP_FLAGS)
            changes.append(f"{name}: master {bridge}, isolated")
        if not link["flags"] & _IFF_UP:
            ipr.link("set", index=index, state="up")
            changes.append(f"{name}: up")
    except NetlinkError as e:
        raise TapError(e.code, f"cannot configure {name}: {e}") from None
    finally:
        ipr.close()
    return changes


def delete_link(name: str = TAP_NAME) -> bool:
    """Delete a leftover device of our name (not held open by us)."""
    ipr = IPRoute()
    try:
        found = ipr.link_lookup(ifname=name)
        if not found:
            return False
        ipr.link("del", index=found[0])
        return True
    except NetlinkError as e:
        raise TapError(e.code, f"cannot delete {name}: {e}") from None
    finally:
        ipr.close()
