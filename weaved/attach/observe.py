"""Find every container plugged in on this host again, from the kernel alone (after a restart,
or to notice what changed): host-side veths named `vethwepl*`, the namespace behind each one
(where its name points first, then everywhere), and `ethwe` as read inside it.
"""

from __future__ import annotations

import ipaddress
import os
import socket
from collections.abc import Collection, Iterable
from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path
from typing import Any

from pyroute2 import IPRoute
from pyroute2.netlink.exceptions import NetlinkError

from weaved.attach.inside import probe_side
from weaved.attach.kernel import link_kind, netnsid, nsid
from weaved.attach.model import (
    CNI_VETH_PREFIX,
    VETH_PREFIX,
    Attachment,
    AttachmentState,
    BridgeInfo,
    Target,
    TargetKind,
    netns_veth_ids,
)
from weaved.attach.netns import NetnsGone, inode_of, opened, run_in_netns
from weaved.attach.target import NETNS_DIR, PROC, pid_alive
from weaved.dataplane.ifnames import if_nameindex
from weaved.integrations.docker_client import containers_by_pid
from weaved.model.resources import BRIDGE
from weaved.spec.models import DNS_LINK_ADDRESS

AF_INET = socket.AF_INET


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
                for veth_id in netns_veth_ids(name):  # either may name its veth
                    self._named.setdefault(veth_id, []).append(name)
        return self._named

    def nsid_of(self, path: str) -> int | None:
        try:
            with opened(path) as fd:
                return netnsid(self.ipr, fd)
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
    docker_url: str | None = None,
    known: Iterable[Attachment] = (),
    *,
    deep: bool | Collection[str] = True,
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
    what was changed inside a container by hand. A collection: the host veths of the
    containers to look into (besides those whose veth changed).
    """
    ipr = IPRoute()
    links: list[Any] = []
    try:
        bridge_found = ipr.link_lookup(ifname=BRIDGE)
        bridge_index = int(bridge_found[0]) if bridge_found else None
        for link in ipr.get_links():
            name = str(link.get_attr("IFLA_IFNAME"))
            ours = name.startswith(VETH_PREFIX) and not name.startswith(CNI_VETH_PREFIX)
            if ours and link_kind(link) == "veth":
                links.append(link)
        locator = _Locator(ipr)
        located = [
            (link, locator.locate(_veth_id(link), netns_id))
            if (netns_id := nsid(link.get_attr("IFLA_LINK_NETNSID"))) is not None
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
        look = deep if isinstance(deep, bool) else name in deep
        if loc is not None and (look or not unchanged):
            try:
                with opened(loc.path) as fd:
                    side = run_in_netns(fd, partial(probe_side, peer_index))
            except NetnsGone:
                side = None
            if side is not None:
                base = side.onto(base)
        if orphaned:
            base = replace(base, state=AttachmentState.ORPHANED)
        out.append(base)
    seen = {a.veth for a in out}
    out += [k.gone() for k in known if k.veth not in seen]
    out.sort(key=lambda a: (a.state is AttachmentState.GONE, a.veth_index, a.veth))
    return out


def nothing_moved(known: Iterable[Attachment], busy: Collection[str] = ()) -> bool:
    """The periodic check's first look, without a netlink message decoded: True when the host
    has exactly the `vethwepl*` links `known` records (same names and indices, from
    if_nameindex(3)), every namespace path is still there and every process alive. Then a
    shallow observation would find nothing new; the bridge ports themselves are the
    reconciler's to watch and repair. Veths named in `busy` (calls under way make or remove
    them) are left out on both sides: a burst of attaches is no reason to decode a dump."""
    known = list(known)
    present = container_veths(known)
    if present is None:
        return False
    recorded = {(a.veth, a.veth_index) for a in known if a.veth not in busy}
    return {p for p in present if p[0] not in busy} == recorded


def container_veths(
    known: Iterable[Attachment], *, paths: bool = True
) -> set[tuple[str, int]] | None:
    """The host's container veths (name, index), from if_nameindex(3); None when a namespace
    path of `known` is gone or its process died (no need to list: something moved). Not
    `paths`: those are not looked at (a stat per container)."""
    for a in known if paths else ():
        target = a.target
        if target.netns_path and not os.path.exists(target.netns_path):
            return None
        if target.pid is not None and not pid_alive(target.pid):
            return None
    return {
        (name, index)
        for index, name in if_nameindex()
        if name.startswith(VETH_PREFIX) and not name.startswith(CNI_VETH_PREFIX)
    }


def changed_inside(known: Iterable[Attachment]) -> list[str]:
    """The host veths of `known` containers whose inside (`ethwe`: addresses, MTU, routes)
    is no longer what was recorded, each read in its namespace; a namespace that cannot be
    entered is left to the host-side checks."""
    out = []
    for a in known:
        if not a.target.netns_path:
            continue
        try:
            with opened(a.target.netns_path) as fd:
                side = run_in_netns(fd, partial(probe_side, a.peer_index))
        except (NetnsGone, OSError):
            continue
        if side is None or side.onto(a) != a:
            out.append(a.veth)
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
