"""Plug containers into the bridge: a veth pair `vethwepl<id>` (a port of `weave`) ↔ `ethwe`
inside the container, and find those plugs again after a restart.

Everything is idempotent and observed before it is changed: attaching twice changes nothing,
attaching with one more address adds just that address. Work inside a container's namespace
runs on a thread of its own (`netns.run_in_netns`); the caller's thread stays where it is, which
is the host namespace that holds the bridge.

How a restarted daemon knows these objects are its own: the host side's name prefix
`vethwepl` (ownership table in DEVELOPERS.md). What the name encodes: the container's PID, as
Weave does, or for a named netns `n` + a short hash of the name (`model.netns_veth_id`).
"""

from __future__ import annotations

import errno
import ipaddress
import logging
import os
import socket
import time
from collections.abc import Callable, Collection, Iterable, Sequence
from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path
from typing import Any

from pyroute2 import IPRoute
from pyroute2.netlink.exceptions import NetlinkError

from weaved.attach import arp, ethtool
from weaved.attach.model import (
    CONTAINER_IFNAME,
    MULTICAST_NET,
    VETH_PREFIX,
    Attachment,
    AttachmentState,
    BridgeInfo,
    Detached,
    Target,
    TargetKind,
    netns_veth_id,
)
from weaved.attach.netns import NetnsGone, inode_of, opened, run_in_netns
from weaved.attach.target import NETNS_DIR, PROC, pid_alive
from weaved.dataplane.brport import hairpin_mode
from weaved.errors import ApplyError, ConflictError, DependencyError
from weaved.integrations.docker_client import containers_by_pid
from weaved.model.resources import ALIAS, BRIDGE
from weaved.spec.models import DNS_LINK_ADDRESS

log = logging.getLogger(__name__)

AF_INET = socket.AF_INET
IFF_UP = 0x1
RT_SCOPE_LINK = 253
MAIN_TABLE = 254
NSID_UNASSIGNED = {-1, 0xFFFFFFFF}
# Weave's ARP cache settings in the container: notice a moved address within seconds.
# CNI's veths (weaved.cni, recorded in cni.json) are containers too, for the firewall's
# `vethwepl*` rules, but not this module's: a PID or `n…` id never starts with "c".
CNI_VETH_PREFIX = VETH_PREFIX + "c"
ARP_CACHE = {"base_reachable_time": "5", "delay_first_probe_time": "2", "ucast_solicit": "1"}
Changes = list[str]


class AttachError(ApplyError):
    """The kernel refused part of an attach or detach; what this call created was removed."""


# --- small helpers (any namespace: they act in the calling thread's) -----------------------
def _nl(what: str, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    try:
        return fn(*args, **kwargs)
    except NetlinkError as exc:
        name = errno.errorcode.get(exc.code, str(exc.code))
        raise AttachError(f"{what}: {name} ({os.strerror(exc.code)})") from None


def _nsid(value: Any) -> int | None:
    if value is None:
        return None
    number = int(value)
    return None if number in NSID_UNASSIGNED or number < 0 else number


def _kind(link: Any) -> str:
    info = link.get_attr("IFLA_LINKINFO")
    return str(info.get_attr("IFLA_INFO_KIND") or "") if info is not None else ""


def _sysctl(path: str, value: str, changes: Changes | None, what: str) -> None:
    """Write a /proc/sys value (of the calling thread's namespace) when it differs."""
    file = Path("/proc/sys") / path
    try:
        if file.read_text().strip() == value:
            return
        file.write_text(value)
    except FileNotFoundError:
        return  # e.g. IPv6 disabled: nothing to switch off
    except OSError as exc:
        raise AttachError(f"cannot set {path} = {value}: {exc.strerror}") from None
    if changes is not None:
        changes.append(what)


# --- the container side (runs inside the container's namespace) ----------------------------
@dataclass(frozen=True)
class ContainerSide:
    index: int
    name: str
    mac: str
    mtu: int
    up: bool
    addresses: tuple[ipaddress.IPv4Interface, ...]
    multicast_route: bool
    tx_checksum: bool | None


def _read_side(ipr: IPRoute, index: int | None = None) -> ContainerSide | None:
    if index is None:
        found = ipr.link_lookup(ifname=CONTAINER_IFNAME)
        if not found:
            return None
        index = int(found[0])
    try:
        link = ipr.get_links(index)[0]
    except NetlinkError:
        return None
    name = str(link.get_attr("IFLA_IFNAME"))
    addresses = tuple(
        ipaddress.IPv4Interface(f"{msg.get_attr('IFA_ADDRESS')}/{msg['prefixlen']}")
        for msg in ipr.get_addr(family=AF_INET, index=index)
    )
    multicast = any(
        r["dst_len"] == MULTICAST_NET.prefixlen
        and r.get_attr("RTA_DST") == str(MULTICAST_NET.network_address)
        and r.get_attr("RTA_OIF") == index
        for r in ipr.get_routes(family=AF_INET, table=MAIN_TABLE)
    )
    try:
        tx: bool | None = ethtool.tx_checksum(name)
    except OSError:
        tx = None
    return ContainerSide(
        index=index,
        name=name,
        mac=str(link.get_attr("IFLA_ADDRESS") or ""),
        mtu=int(link.get_attr("IFLA_MTU") or 0),
        up=bool(link["flags"] & IFF_UP),
        addresses=addresses,
        multicast_route=multicast,
        tx_checksum=tx,
    )


def _probe_side(index: int | None = None) -> ContainerSide | None:
    ipr = IPRoute()
    try:
        return _read_side(ipr, index)
    finally:
        ipr.close()


def _configure_side(
    mtu: int,
    addresses: Sequence[ipaddress.IPv4Interface],
    multicast_route: bool,
    changes: Changes,
    tx_checksum_off: bool = True,
    onlink_routes: Sequence[ipaddress.IPv4Network] = (),
) -> ContainerSide:
    """Bring ethwe to the wanted state; only what differs is written."""
    ipr = IPRoute()
    try:
        side = _read_side(ipr)
        if side is None:
            raise AttachError(f"{CONTAINER_IFNAME} disappeared from the container while attaching")
        idx, name = side.index, side.name
        if mtu and side.mtu != mtu:
            _nl(f"set {name} mtu {mtu}", ipr.link, "set", index=idx, mtu=mtu)
            changes.append(f"{name}: mtu {side.mtu} → {mtu}")
        for key, value in ARP_CACHE.items():
            _sysctl(f"net/ipv4/neigh/{name}/{key}", value, changes, f"{name}: arp {key}={value}")
        _sysctl(f"net/ipv6/conf/{name}/accept_ra", "0", changes, f"{name}: accept_ra=0")
        if tx_checksum_off and side.tx_checksum:
            try:
                ethtool.set_tx_checksum(name, False)
            except OSError as exc:
                raise AttachError(f"cannot turn TX checksum offload off on {name}: {exc}") from None
            changes.append(f"{name}: tx checksum offload off")
        have = {a.ip for a in side.addresses}
        added: list[ipaddress.IPv4Interface] = []
        for iface in addresses:
            if iface.ip in have:
                continue  # Weave's rule: the same IP under any prefix counts as present
            extra: dict[str, Any] = {}
            if iface.network.prefixlen < 31:
                extra["broadcast"] = str(iface.network.broadcast_address)
            _nl(
                f"add {iface} to {name}",
                ipr.addr,
                "add",
                index=idx,
                address=str(iface.ip),
                prefixlen=iface.network.prefixlen,
                **extra,
            )
            have.add(iface.ip)
            added.append(iface)
            changes.append(f"{name}: add {iface}")
        if not side.up:
            _nl(f"set {name} up", ipr.link, "set", index=idx, state="up")
            changes.append(f"{name}: up")
        for iface in added:
            time.sleep(0.001)  # as Weave: right after "up" the first frame can miss the bridge
            try:
                arp.announce(name, side.mac, iface.ip)
                changes.append(f"{name}: gratuitous ARP for {iface.ip}")
            except OSError as exc:  # peers' short ARP timeouts will catch up
                log.warning("gratuitous ARP failed ifname=%s ip=%s error=%s", name, iface.ip, exc)
        if multicast_route and not side.multicast_route:
            try:
                ipr.route(
                    "add",
                    dst=str(MULTICAST_NET),
                    oif=idx,
                    scope=RT_SCOPE_LINK,
                    table=MAIN_TABLE,
                )
                changes.append(f"{name}: route {MULTICAST_NET} dev {name}")
            except NetlinkError as exc:
                if exc.code != errno.EEXIST:  # someone else's multicast route: leave it
                    raise AttachError(
                        f"add route {MULTICAST_NET} dev {name}: {os.strerror(exc.code)}"
                    ) from None
        _add_onlink_routes(ipr, idx, name, onlink_routes, changes)
        after = _read_side(ipr, idx)
        if after is None:
            raise AttachError(f"{CONTAINER_IFNAME} disappeared from the container while attaching")
        return after
    finally:
        ipr.close()


def _add_onlink_routes(
    ipr: IPRoute, idx: int, name: str, nets: Sequence[ipaddress.IPv4Network], changes: Changes
) -> None:
    """Routes through ethwe for addresses on the bridge outside the container's subnets
    (weaveDNS's link address); one already there is left as it is."""
    for net in nets:
        try:
            ipr.route("add", dst=str(net), oif=idx, scope=RT_SCOPE_LINK, table=MAIN_TABLE)
        except NetlinkError as exc:
            if exc.code == errno.EEXIST:
                continue
            raise AttachError(f"add route {net} dev {name}: {os.strerror(exc.code)}") from None
        changes.append(f"{name}: route {net} dev {name}")


def _remove_addresses(
    wanted: Sequence[ipaddress.IPv4Interface] | None,
) -> tuple[tuple[ipaddress.IPv4Interface, ...], bool, tuple[ipaddress.IPv4Interface, ...]]:
    """Remove `wanted` (matched by IP; None = all) from ethwe; delete the veth when none is left.
    Returns (removed, veth removed, remaining)."""
    ipr = IPRoute()
    try:
        side = _read_side(ipr)
        if side is None:
            return (), False, ()
        if wanted is None:
            removed = side.addresses
            remaining: tuple[ipaddress.IPv4Interface, ...] = ()
        else:
            ips = {w.ip for w in wanted}
            removed = tuple(a for a in side.addresses if a.ip in ips)
            remaining = tuple(a for a in side.addresses if a.ip not in ips)
            for iface in removed:
                _nl(
                    f"remove {iface} from {side.name}",
                    ipr.addr,
                    "del",
                    index=side.index,
                    address=str(iface.ip),
                    prefixlen=iface.network.prefixlen,
                )
        if remaining:
            return removed, False, remaining
        # Deleting one end deletes the pair, and the multicast route with it.
        _nl(f"delete {side.name}", ipr.link, "del", index=side.index)
        return removed, True, ()
    finally:
        ipr.close()


# --- the host side (the calling thread's namespace) ----------------------------------------
def _bridge(ipr: IPRoute) -> Any:
    found = ipr.link_lookup(ifname=BRIDGE)
    if not found:
        raise DependencyError(
            f'bridge "{BRIDGE}" not present\n  hint: run `weaved apply` (or start `weaved daemon`)'
        )
    link = ipr.get_links(found[0])[0]
    if _kind(link) != "bridge":
        raise ConflictError(f'"{BRIDGE}" exists but is a {_kind(link) or "non-bridge"} device')
    if (link.get_attr("IFLA_IFALIAS") or "") != ALIAS:  # a name proves nothing: not ours
        raise ConflictError(
            f'the bridge "{BRIDGE}" was not created by weaved (it has no alias {ALIAS!r}):'
            " containers are not plugged into it\n  hint: see `weaved plan`"
        )
    return link


def _configure_host(
    ipr: IPRoute, index: int, bridge_index: int, mtu: int, changes: Changes
) -> None:
    link = ipr.get_links(index)[0]
    name = str(link.get_attr("IFLA_IFNAME"))
    if mtu and link.get_attr("IFLA_MTU") != mtu:
        _nl(f"set {name} mtu {mtu}", ipr.link, "set", index=index, mtu=mtu)
        changes.append(f"{name}: mtu {link.get_attr('IFLA_MTU')} → {mtu}")
    if link.get_attr("IFLA_MASTER") != bridge_index:
        _nl(f"set {name} master {BRIDGE}", ipr.link, "set", index=index, master=bridge_index)
        changes.append(f"{name}: master {BRIDGE}")
    if hairpin_mode(ipr, index):
        _nl(f"set {name} hairpin off", ipr.brport, "set", index=index, mode=0)
        changes.append(f"{name}: hairpin off")
    _sysctl(f"net/ipv6/conf/{name}/accept_ra", "0", changes, f"{name}: accept_ra=0")
    if not link["flags"] & IFF_UP:
        _nl(f"set {name} up", ipr.link, "set", index=index, state="up")
        changes.append(f"{name}: up")


def _host_peer(ipr: IPRoute, nsid: int | None, peer_index: int) -> Any | None:
    """The host link whose veth peer is `peer_index` in the namespace known here as `nsid`."""
    if nsid is None:
        return None
    for link in ipr.get_links():
        if (
            _kind(link) == "veth"
            and link.get_attr("IFLA_LINK") == peer_index
            and _nsid(link.get_attr("IFLA_LINK_NETNSID")) == nsid
        ):
            return link
    return None


def _netnsid(ipr: IPRoute, fd: int) -> int | None:
    answer = ipr.get_netnsid(fd=fd)
    return _nsid(answer.get("nsid")) if answer else None


def attach(
    target: Target,
    addresses: Sequence[ipaddress.IPv4Interface],
    mtu: int = 0,
    multicast_route: bool = True,
    *,
    tx_checksum_off: bool = True,
    changes: Changes | None = None,
    onlink_routes: Sequence[ipaddress.IPv4Network] = (),
) -> Attachment:
    """Plug `target` into the bridge with `addresses` (adding any it lacks) and return what the
    kernel then shows. `mtu` 0 = the bridge's MTU. `tx_checksum_off` False keeps the container's
    TX checksum offload (Weave's --keep-tx-on; only safe when no userspace datapath forwards its
    packets). Appends what was done to `changes`. Blocking; call it from a thread in the host
    namespace that runs no asyncio loop (the daemon's dataplane thread)."""
    done: Changes = [] if changes is None else changes
    ipr = IPRoute()
    created: str | None = None
    try:
        bridge = _bridge(ipr)
        bridge_index = int(bridge["index"])
        mtu = mtu or int(bridge.get_attr("IFLA_MTU"))
        with opened(target.netns_path) as fd:
            if target.netns_inode and os.fstat(fd).st_ino != target.netns_inode:
                raise NetnsGone(f"{target.label}: its network namespace changed; resolve it again")
            side = run_in_netns(fd, _probe_side)
            if side is None:
                name = target.veth
                if ipr.link_lookup(ifname=name):
                    raise ConflictError(
                        f"{name} already exists but its peer is not {CONTAINER_IFNAME} in"
                        f" {target.label}\n  hint: `ip link del {name}` if it is stale"
                    )
                _nl(
                    f"create veth {name} ↔ {CONTAINER_IFNAME}",
                    ipr.link,
                    "add",
                    ifname=name,
                    kind="veth",
                    mtu=mtu,
                    peer={"ifname": CONTAINER_IFNAME, "net_ns_fd": fd, "mtu": mtu},
                )
                created = name
                done.append(f"create veth {name} ↔ {target.label}:{CONTAINER_IFNAME}")
                host_index = int(ipr.link_lookup(ifname=name)[0])
            else:
                ipr.get_links()  # a dump makes the kernel assign the namespace's nsid
                host = _host_peer(ipr, _netnsid(ipr, fd), side.index)
                if host is None:
                    raise ConflictError(
                        f"{target.label} already has an {CONTAINER_IFNAME} that is not plugged"
                        " into this host's bridge"
                    )
                host_index = int(host["index"])
                if not str(host.get_attr("IFLA_IFNAME")).startswith(VETH_PREFIX):
                    raise ConflictError(
                        f"{target.label}'s {CONTAINER_IFNAME} is plugged into"
                        f" {host.get_attr('IFLA_IFNAME')}, which is not weaved's"
                    )
            _configure_host(ipr, host_index, bridge_index, mtu, done)
            after = run_in_netns(
                fd,
                lambda: _configure_side(
                    mtu, list(addresses), multicast_route, done, tx_checksum_off, onlink_routes
                ),
            )
        host_link = ipr.get_links(host_index)[0]
    except BaseException:
        if created is not None:
            _delete_quietly(ipr, created)
        raise
    finally:
        ipr.close()
    if done:
        log.info("attached target=%s changes=%s", target.label, "; ".join(done))
    return Attachment(
        target=target,
        veth=str(host_link.get_attr("IFLA_IFNAME")),
        ifname=after.name,
        mac=after.mac,
        mtu=after.mtu,
        addresses=after.addresses,
        multicast_route=after.multicast_route,
        tx_checksum=after.tx_checksum,
        bridged=host_link.get_attr("IFLA_MASTER") == bridge_index,
        veth_index=host_index,
        peer_index=after.index,
    )


def _delete_quietly(ipr: IPRoute, name: str) -> None:
    try:
        for index in ipr.link_lookup(ifname=name):
            ipr.link("del", index=index)
    except NetlinkError as exc:
        log.error("could not remove half-made veth name=%s error=%s", name, exc)


def detach(target: Target, addresses: Sequence[ipaddress.IPv4Interface] | None = None) -> Detached:
    """Remove `addresses` (None = all) from the target's ethwe; the veth goes with the last one.
    A target with nothing attached, or whose namespace is gone (taking the veth with it), is
    not an error: the goal is reached."""
    wanted = None if addresses is None else list(addresses)
    try:
        with opened(target.netns_path) as fd:
            removed, veth_removed, remaining = run_in_netns(fd, lambda: _remove_addresses(wanted))
    except NetnsGone:
        return Detached(target)
    if removed or veth_removed:
        log.info(
            "detached target=%s removed=%s veth_removed=%s",
            target.label,
            " ".join(map(str, removed)),
            veth_removed,
        )
    return Detached(target, removed, veth_removed, remaining)


def detach_all(names: Collection[str] | None = None) -> list[str]:
    """Delete every `vethwepl*` veth on this host, or only those of `names` (for `reset`, the
    recorded ones: a look-alike nobody recorded is not ours); returns the names removed."""
    ipr = IPRoute()
    gone = []
    try:
        for link in ipr.get_links():
            name = str(link.get_attr("IFLA_IFNAME"))
            if names is not None and name not in names:
                continue
            if name.startswith(VETH_PREFIX) and _kind(link) == "veth":
                try:
                    ipr.link("del", index=link["index"])
                    gone.append(name)
                except NetlinkError as exc:
                    if exc.code != errno.ENODEV:
                        raise AttachError(f"delete {name}: {os.strerror(exc.code)}") from None
    finally:
        ipr.close()
    return gone


def rebridge() -> list[str]:
    """Make every `vethwepl*` a port of the bridge again (after the bridge was re-created, its
    old ports are left masterless). Returns the names re-plugged."""
    ipr = IPRoute()
    fixed = []
    try:
        bridge_index = int(_bridge(ipr)["index"])
        for link in ipr.get_links():
            name = str(link.get_attr("IFLA_IFNAME"))
            if not name.startswith(VETH_PREFIX) or _kind(link) != "veth":
                continue
            if link.get_attr("IFLA_MASTER") != bridge_index:
                changes: Changes = []
                _configure_host(ipr, int(link["index"]), bridge_index, 0, changes)
                fixed.append(name)
    finally:
        ipr.close()
    return fixed


# --- observe ------------------------------------------------------------------------------
@dataclass(frozen=True)
class _Located:
    path: str
    kind: TargetKind
    name: str
    pid: int | None
    exact: bool  # found where its veth name says; False = found elsewhere (its owner is gone)


def _nsfs_mounts() -> list[str]:
    """Mount points of network namespaces (named netns, Docker's sandboxes, …)."""
    out = []
    try:
        for line in Path("/proc/self/mountinfo").read_text().splitlines():
            left, _, right = line.partition(" - ")
            if right.split(" ", 1)[0] == "nsfs" and "net:[" in left.split(" ")[3]:
                out.append(left.split(" ")[4].replace("\\040", " "))
    except OSError:
        pass
    return out


def _candidates_everywhere() -> Iterable[str]:
    yield from (str(NETNS_DIR / n) for n in _listdir(NETNS_DIR))
    yield from _nsfs_mounts()
    for entry in _listdir(PROC):
        if entry.isdigit():
            yield str(PROC / entry / "ns" / "net")


def _listdir(path: Path) -> list[str]:
    try:
        return sorted(os.listdir(path))
    except OSError:
        return []


class _Locator:
    """Finds the namespace behind an nsid, trying the place the veth's name points at first."""

    def __init__(self, ipr: IPRoute) -> None:
        self.ipr = ipr
        self._everywhere: dict[int, str] | None = None
        self._named: dict[str, list[str]] | None = None  # veth id → named netns behind it

    def _named_by_id(self) -> dict[str, list[str]]:
        # Hashed once per observation: once per veth made a resync quadratic in containers.
        if self._named is None:
            self._named = {}
            for name in _listdir(NETNS_DIR):
                self._named.setdefault(netns_veth_id(name), []).append(name)
        return self._named

    def nsid_of(self, path: str) -> int | None:
        try:
            with opened(path) as fd:
                return _netnsid(self.ipr, fd)
        except (NetnsGone, NetlinkError):
            return None

    def locate(self, veth_id: str, nsid: int) -> _Located | None:
        if veth_id.isdigit():
            path = str(PROC / veth_id / "ns" / "net")
            if self.nsid_of(path) == nsid:
                return _Located(path, TargetKind.PID, veth_id, int(veth_id), True)
        else:
            for name in self._named_by_id().get(veth_id, []):
                path = str(NETNS_DIR / name)
                if self.nsid_of(path) == nsid:
                    return _Located(path, TargetKind.NETNS, name, None, True)
        path_found = self._scan().get(nsid)
        if path_found is None:
            return None
        if veth_id.isdigit():
            return _Located(path_found, TargetKind.PID, veth_id, int(veth_id), False)
        return _Located(path_found, TargetKind.NETNS, Path(path_found).name, None, False)

    def _scan(self) -> dict[int, str]:
        if self._everywhere is None:
            self._everywhere = {}
            seen: set[int] = set()
            for path in _candidates_everywhere():
                try:
                    inode = inode_of(path)
                except OSError:
                    continue
                if inode in seen:
                    continue
                seen.add(inode)
                nsid = self.nsid_of(path)
                if nsid is not None:
                    self._everywhere.setdefault(nsid, path)
        return self._everywhere


def observe_attachments(
    docker_url: str | None = None, known: Iterable[Attachment] = (), *, deep: bool = True
) -> list[Attachment]:
    """Every container plugged in on this host, looked up in the kernel (host side: links named
    `vethwepl*`; container side: its `ethwe`, read inside its namespace).

    `docker_url`: also ask Docker which container owns each PID (then kind is DOCKER and the key
    its full ID). `known`: attachments the caller had before (e.g. from its last run); any of
    them not found again comes back with state GONE, one whose process died while its namespace
    lives on with state ORPHANED, so the caller can release their addresses.

    `deep` False: a container whose host veth is the one `known` recorded (same index and
    peer) keeps its recorded container side, its namespace not entered; the periodic check
    of a host with many containers is then one link dump, and a deep one now and then finds
    what was changed inside a container by hand.
    """
    ipr = IPRoute()
    links: list[Any] = []
    try:
        bridge_found = ipr.link_lookup(ifname=BRIDGE)
        bridge_index = int(bridge_found[0]) if bridge_found else None
        for link in ipr.get_links():
            name = str(link.get_attr("IFLA_IFNAME"))
            ours = name.startswith(VETH_PREFIX) and not name.startswith(CNI_VETH_PREFIX)
            if ours and _kind(link) == "veth":
                links.append(link)
        locator = _Locator(ipr)
        located = [
            (link, locator.locate(_veth_id(link), nsid))
            if (nsid := _nsid(link.get_attr("IFLA_LINK_NETNSID"))) is not None
            else (link, None)
            for link in links
        ]
    finally:
        ipr.close()

    by_veth = {k.veth: k for k in known}
    docker_pids = (
        containers_by_pid(docker_url)
        if docker_url is not None and any(loc is not None and loc.pid for _, loc in located)
        else {}
    )
    out: list[Attachment] = []
    for link, loc in located:
        name = str(link.get_attr("IFLA_IFNAME"))
        previous = by_veth.get(name)
        # What cannot be read inside (a namespace being torn down) is kept from `previous`.
        base = replace(
            previous or Attachment(Target(TargetKind.PID, "", "", None, ""), name),
            target=_target_for(name, loc, previous, docker_pids),
            veth=name,
            bridged=bridge_index is not None and link.get_attr("IFLA_MASTER") == bridge_index,
            state=AttachmentState.ATTACHED,
            veth_index=int(link["index"]),
        )
        orphaned = loc is None or not loc.exact or (loc.pid is not None and not pid_alive(loc.pid))
        peer_index = link.get_attr("IFLA_LINK")
        unchanged = (
            previous is not None
            and previous.veth_index == int(link["index"])
            and previous.peer_index == peer_index
        )
        if loc is not None and (deep or not unchanged):
            try:
                with opened(loc.path) as fd:
                    side = run_in_netns(fd, partial(_probe_side, peer_index))
            except NetnsGone:
                side = None
            if side is not None:
                base = replace(
                    base,
                    ifname=side.name,
                    mac=side.mac,
                    mtu=side.mtu,
                    addresses=side.addresses,
                    multicast_route=side.multicast_route,
                    tx_checksum=side.tx_checksum,
                    peer_index=peer_index,
                )
        if orphaned:
            base = replace(base, state=AttachmentState.ORPHANED)
        out.append(base)
    seen = {a.veth for a in out}
    out += [k.gone() for k in known if k.veth not in seen]
    out.sort(key=lambda a: (a.state is AttachmentState.GONE, a.veth_index, a.veth))
    return out


def _veth_id(link: Any) -> str:
    return str(link.get_attr("IFLA_IFNAME"))[len(VETH_PREFIX) :]


def _target_for(
    veth: str, loc: _Located | None, previous: Attachment | None, docker_pids: dict[int, Any]
) -> Target:
    veth_id = veth[len(VETH_PREFIX) :]
    if loc is None:
        if previous is not None:
            return previous.target
        pid = int(veth_id) if veth_id.isdigit() else None
        kind = TargetKind.PID if pid is not None else TargetKind.NETNS
        key = f"pid:{pid}" if pid is not None else f"netns:?{veth_id}"
        return Target(kind, key, veth_id, pid, "")
    try:
        inode = inode_of(loc.path)
    except OSError:
        inode = 0
    if loc.exact and loc.pid is not None and loc.pid in docker_pids:
        info = docker_pids[loc.pid]
        return Target(TargetKind.DOCKER, info.id, info.name, loc.pid, loc.path, inode)
    if previous is not None and (not loc.exact or previous.target.pid == loc.pid):
        # The caller knows better who this is (e.g. the Docker ID behind a PID).
        return replace(previous.target, netns_path=loc.path, netns_inode=inode)
    if loc.kind is TargetKind.PID:
        return Target(TargetKind.PID, f"pid:{loc.pid}", str(loc.pid), loc.pid, loc.path, inode)
    return Target(TargetKind.NETNS, f"netns:{loc.name}", loc.name, None, loc.path, inode)


def observe_bridge() -> BridgeInfo | None:
    """The bridge's MAC and its IPv4 addresses (what `weave ps` shows as weave:expose); weaveDNS's
    link address is not an exposed one and is left out."""
    ipr = IPRoute()
    try:
        found = ipr.link_lookup(ifname=BRIDGE)
        if not found:
            return None
        link = ipr.get_links(found[0])[0]
        addresses = tuple(
            ipaddress.IPv4Interface(f"{msg.get_attr('IFA_ADDRESS')}/{msg['prefixlen']}")
            for msg in ipr.get_addr(family=AF_INET, index=found[0])
            if msg.get_attr("IFA_ADDRESS") != DNS_LINK_ADDRESS
        )
        return BridgeInfo(str(link.get_attr("IFLA_ADDRESS") or ""), addresses)
    finally:
        ipr.close()
