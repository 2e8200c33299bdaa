"""What attaching a container means, as plain frozen data (no I/O here).

A `Target` is where the container's network lives (a Docker container, a named network
namespace or a process); an `Attachment` is the veth pair weaved plugged into it, as the kernel
shows it. Both round-trip through JSON (`codec.py`) so the daemon can keep them.
"""

from __future__ import annotations

import hashlib
import ipaddress
from dataclasses import dataclass, field, replace
from enum import StrEnum

from weaved.attach.codec import NOT_SAVED, JsonRecord

CONTAINER_IFNAME = "ethwe"
VETH_PREFIX = "vethwepl"  # Weave's host-side name: "v" + "ethwe" + "pl" + the container's id
# CNI's veths (weaved.cni, recorded in cni.json) are containers too, for the firewall's
# `vethwepl*` rules, but not `weaved attach`'s: a PID or `n…` id never starts with "c".
CNI_VETH_PREFIX = VETH_PREFIX + "c"
# ethwe is created as `vethwepg<id>` and renamed as it comes up. Its accept_ra is written
# under that name: every container's `ethwe` shares one /proc/sys dentry hash chain, walked
# whole by each lookup (~0.5 ms of CPU per attach with 1 000 containers, growing with them).
MADE_AS_PREFIX = "vethwepg"
IFNAMSIZ = 16  # the kernel's limit, including the trailing NUL
MAX_ID_LEN = IFNAMSIZ - 1 - len(VETH_PREFIX)  # 7 characters are left for the id
NETNS_ID_MARK = "n"  # a named netns gets "n" + a short hash, never all digits like a PID
# … or "m" + the hash's next digits when its "n" name is another namespace's veth already (six
# hex digits collide: ~3 % of hosts with 1 000 named namespaces hold such a pair).
NETNS_SECOND_MARK = "m"
MULTICAST_NET = ipaddress.IPv4Network("224.0.0.0/4")


class TargetKind(StrEnum):
    DOCKER = "docker"
    NETNS = "netns"
    PID = "pid"


class AttachmentState(StrEnum):
    ATTACHED = "attached"  # the veth exists and its container (process or named netns) lives
    ORPHANED = "orphaned"  # the veth exists but the container's process is gone
    GONE = "gone"  # known before, now nothing is left (the netns died, taking the veth with it)


def netns_veth_ids(name: str) -> tuple[str, str]:
    """The stable short ids of a named netns in its veth's name (it has no single PID): the
    first, and the second for when the first is another namespace's (a hash collision)."""
    digest = hashlib.sha256(name.encode()).hexdigest()
    size = MAX_ID_LEN - len(NETNS_ID_MARK)
    return NETNS_ID_MARK + digest[:size], NETNS_SECOND_MARK + digest[size : 2 * size]


def netns_veth_id(name: str) -> str:
    return netns_veth_ids(name)[0]


def made_as_name(veth: str) -> str:
    """The name a container's ethwe is created under, from its host veth's."""
    return MADE_AS_PREFIX + veth[len(VETH_PREFIX) :]


def veth_name(veth_id: str) -> str:
    """Weave's host-side name `vethwepl<id>`, the id cut to fit IFNAMSIZ."""
    return VETH_PREFIX + veth_id[:MAX_ID_LEN]


@dataclass(frozen=True)
class Target(JsonRecord):
    """A container's network namespace, resolved.

    `key` identifies the container to IPAM and DNS: the full Docker ID, `netns:NAME` or
    `pid:PID`. `netns_path` is how the namespace is opened; `netns_inode` tells two names of
    one namespace apart from two namespaces.
    """

    kind: TargetKind
    key: str
    name: str  # Docker name (without "/"), netns name, or the PID as text
    pid: int | None
    netns_path: str
    netns_inode: int = 0

    @property
    def veth_id(self) -> str:
        if self.kind is TargetKind.NETNS:
            return netns_veth_id(self.name)
        return str(self.pid)

    @property
    def veth(self) -> str:
        return veth_name(self.veth_id)

    @property
    def second_veth(self) -> str:
        """The veth's name when `veth` is another container's already (named netns only)."""
        if self.kind is TargetKind.NETNS:
            return veth_name(netns_veth_ids(self.name)[1])
        return ""

    @property
    def label(self) -> str:
        """How `weaved ps` names it: Docker's short ID, the netns name or the PID (≤ 12)."""
        return self.key.removeprefix("netns:").removeprefix("pid:")[:12]


@dataclass(frozen=True)
class Attachment(JsonRecord):
    """One container's plug into the bridge, as observed in the kernel."""

    target: Target
    veth: str  # host side, a port of the bridge
    ifname: str = CONTAINER_IFNAME
    mac: str = ""  # of the container side (what `weave ps` prints)
    mtu: int = 0
    addresses: tuple[ipaddress.IPv4Interface, ...] = ()
    multicast_route: bool = False
    tx_checksum: bool | None = None  # None when it could not be read
    bridged: bool = True  # the host side is a port of the weave bridge
    state: AttachmentState = AttachmentState.ATTACHED
    veth_index: int = 0  # host-side ifindex (stable while the veth lives; orders `ps`)
    dns: bool = True  # False: attached with `--without-dns` (no weaveDNS name, also after restarts)
    # ethwe's ifindex inside the container as last read there (not saved: after a restart
    # every namespace is read again); 0 = never read.
    peer_index: int = field(default=0, compare=False, metadata=NOT_SAVED)

    @property
    def key(self) -> str:
        """The container's identity (its record's key in attachments.json)."""
        return self.target.key

    @property
    def alive(self) -> bool:
        return self.state is AttachmentState.ATTACHED

    @property
    def subnets(self) -> tuple[ipaddress.IPv4Network, ...]:
        seen: dict[ipaddress.IPv4Network, None] = {}
        for iface in self.addresses:
            seen.setdefault(iface.network, None)
        return tuple(seen)

    def gone(self) -> Attachment:
        return replace(self, state=AttachmentState.GONE)


@dataclass(frozen=True)
class Detached:
    """What `detach` did: the addresses it removed and whether the veth went with them."""

    target: Target
    removed: tuple[ipaddress.IPv4Interface, ...] = ()
    veth_removed: bool = False
    remaining: tuple[ipaddress.IPv4Interface, ...] = field(default=())


@dataclass(frozen=True)
class BridgeInfo:
    """The bridge as `ps` shows it: its MAC and every IPv4 address on it."""

    mac: str
    addresses: tuple[ipaddress.IPv4Interface, ...] = ()
