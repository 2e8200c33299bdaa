"""The fast datapath's kernel objects through netlink (pyroute2): observe, execute a plan.

Used from one worker thread only (pyroute2 runs an event loop of its own). Every object it
touches is weaved's by name: the device `vxlan-6784` and forwarding entries on it.
"""

from __future__ import annotations

import errno
import ipaddress
import logging
import socket
from collections.abc import Iterable
from typing import Any

from pyroute2 import IPRoute
from pyroute2.netlink.exceptions import NetlinkError

from weaved.datapath.fastdp.config import DEFAULT_UNDERLAY_MTU
from weaved.datapath.fastdp.fdb import Device, FdbRow, LinkRow
from weaved.dataplane.brport import port_data
from weaved.dataplane.rtnl import Rtnl
from weaved.dataplane.sysctl import write_proc_sys
from weaved.errors import ApplyError, DependencyError
from weaved.model.resources import Kind, Resource
from weaved.plan.changes import Action, Change, Plan

__all__ = ["FastdpKernel", "VxlanUnsupported", "remove_fastdp"]

log = logging.getLogger(__name__)

IFF_UP = 1
RTN_LOCAL = 2
NTF_SELF = 0x02
NTF_MASTER = 0x04
NTF_STICKY = 0x40
NUD_NOARP = 0x40
NUD_PERMANENT = 0x80
DF_NAMES = {0: "unset", 1: "set", 2: "inherit"}


class VxlanUnsupported(DependencyError):
    """The kernel cannot make VXLAN devices (module missing, not built in)."""


def fdb_state(state: int) -> str:
    if state & NUD_PERMANENT:
        return "permanent"
    if state & NUD_NOARP:
        return "static"
    return "dynamic"


class FastdpKernel:
    def __init__(self, ipr: Any | None = None) -> None:
        self.ipr: Any = ipr if ipr is not None else IPRoute()
        # if_indextoname(3) answers for this process's namespace only: a socket handed in may
        # be another namespace's (tests use pyroute2's NetNS), whose names come from netlink.
        self._names_by_ioctl = ipr is None
        self._rtnl: Rtnl | None = None
        self.writes = 0

    def close(self) -> None:
        self.ipr.close()
        if self._rtnl is not None:
            self._rtnl.close()

    # --- observe -------------------------------------------------------------------------
    def index(self, ifname: str) -> int | None:
        found = self.ipr.link_lookup(ifname=ifname)
        return int(found[0]) if found else None

    def _name(self, index: int | None) -> str:
        # An ioctl, not a netlink message to decode: the bridge table names one port per
        # container, and decoding each port's whole link message was the daemon's top cost.
        if not index:
            return ""
        if not self._names_by_ioctl:
            links = self.ipr.get_links(index)
            return str(links[0].get_attr("IFLA_IFNAME")) if links else ""
        try:
            return socket.if_indextoname(index)
        except OSError:
            return ""

    def observe_link(self, device: Device) -> LinkRow | None:
        idx = self.index(device.name)
        if idx is None:
            return None
        link = self.ipr.get_links(idx)[0]
        info = link.get_attr("IFLA_LINKINFO")
        kind = str(info.get_attr("IFLA_INFO_KIND")) if info is not None else "unknown"
        data = info.get_attr("IFLA_INFO_DATA") if info is not None else None
        vni = dstport = None
        learning = True
        df = "unset"
        if kind == "vxlan" and data is not None:
            vni = data.get_attr("IFLA_VXLAN_ID")
            dstport = data.get_attr("IFLA_VXLAN_PORT")
            learning = bool(data.get_attr("IFLA_VXLAN_LEARNING"))
            df = DF_NAMES.get(data.get_attr("IFLA_VXLAN_DF") or 0, "unset")
        master = self._name(link.get_attr("IFLA_MASTER"))
        port_learning = isolated = None
        # The port's flags come with the link itself (IFLA_INFO_SLAVE_DATA): a dump of every
        # bridge port cost a converge as much as the containers attached.
        port = port_data(link) if master else None
        if port is not None:
            port_learning = bool(port.get_attr("IFLA_BRPORT_LEARNING"))
            isolated = bool(port.get_attr("IFLA_BRPORT_ISOLATED"))
        return LinkRow(
            kind=kind,
            vni=vni,
            dstport=dstport,
            learning=learning,
            df=df,
            master=master,
            up=bool(link["flags"] & IFF_UP),
            mtu=int(link.get_attr("IFLA_MTU")),
            port_learning=port_learning,
            isolated=isolated,
        )

    def _rows(self, **match: int) -> list[FdbRow]:
        if self._names_by_ioctl:  # this namespace: read without pyroute2's decoding
            return self._raw_rows(**match)
        names: dict[int, str] = {}
        out: list[FdbRow] = []
        for msg in self.ipr.fdb("dump", **match):
            ifindex = int(msg["ifindex"])
            if ifindex not in names:
                names[ifindex] = self._name(ifindex)
            mac = msg.get_attr("NDA_LLADDR")
            if mac is None:
                continue
            out.append(
                FdbRow(
                    mac=str(mac).lower(),
                    port=names[ifindex],
                    master=msg.get_attr("NDA_MASTER") is not None
                    or bool(msg["flags"] & NTF_MASTER),
                    state=fdb_state(int(msg["state"])),
                    dst=msg.get_attr("NDA_DST"),
                    dst_port=msg.get_attr("NDA_PORT"),
                    vlan=int(msg.get_attr("NDA_VLAN") or 0),
                    sticky=bool(msg["flags"] & NTF_STICKY),
                )
            )
        return out

    def _raw_rows(self, master: int = 0, ifindex: int = 0) -> list[FdbRow]:
        """The same rows from rtnl's decoder: on a host with 1 000 containers the bridge's
        table is ~5 000 entries, and pyroute2 decoding them at every bridge-table event was
        over a third of the daemon's idle CPU."""
        if self._rtnl is None:
            self._rtnl = Rtnl()
        names: dict[int, str] = {}
        out: list[FdbRow] = []
        for entry in self._rtnl.fdb(master=master, ifindex=ifindex):
            if (master and entry.master != master) or (ifindex and entry.ifindex != ifindex):
                continue  # as pyroute2's match: the bridge's own entries, or the device's
            if not entry.mac:
                continue
            if entry.ifindex not in names:
                names[entry.ifindex] = self._name(entry.ifindex)
            out.append(
                FdbRow(
                    mac=entry.mac,
                    port=names[entry.ifindex],
                    master=bool(entry.master) or bool(entry.flags & NTF_MASTER),
                    state=fdb_state(entry.state),
                    dst=entry.dst,
                    dst_port=entry.port,
                    vlan=entry.vlan,
                    sticky=bool(entry.flags & NTF_STICKY),
                )
            )
        return out

    def device_rows(self, device: Device) -> list[FdbRow]:
        """Both tables' entries on the VXLAN port."""
        idx = self.index(device.name)
        return [] if idx is None else self._rows(ifindex=idx)

    def bridge_rows(self, bridge: str) -> list[FdbRow]:
        """The bridge's table (every port), for the MACs local to this host."""
        idx = self.index(bridge)
        return [] if idx is None else self._rows(master=idx)

    def underlay_mtu(self, ips: Iterable[str]) -> int:
        """The smallest MTU on the way to these peers; without any, that of the device of
        the default route; else 1500."""
        mtus: list[int] = []
        for ip in ips:
            mtu = self._route_mtu(ip)
            if mtu:
                mtus.append(mtu)
        if not mtus:
            mtu = self._default_route_mtu()
            if mtu:
                mtus.append(mtu)
        return min(mtus) if mtus else DEFAULT_UNDERLAY_MTU

    def _default_route_mtu(self) -> int | None:
        if not self._names_by_ioctl:  # another namespace's socket (tests): pyroute2's reading
            try:
                main = self.ipr.get_routes(family=socket.AF_INET, table=254)
            except NetlinkError:
                main = []
            return self._mtu_of([r for r in main if r["dst_len"] == 0])
        # rtnl's decoder: with 1 000 exposed subnets the main table took pyroute2 0.15-0.3 s to
        # parse, at every converge of a host with no peer yet.
        if self._rtnl is None:
            self._rtnl = Rtnl()
        try:
            routes = self._rtnl.routes(254)
        except OSError:
            return None
        for route in routes:
            if route.dst_len != 0 or route.type == RTN_LOCAL:
                continue
            if route.mtu:
                return route.mtu
            link = self._rtnl.link(index=route.oif) if route.oif else None
            if link is not None and link.mtu:
                return link.mtu
        return None

    def _route_mtu(self, ip: str) -> int | None:
        try:
            ipaddress.IPv4Address(ip)
            routes = list(self.ipr.route("get", dst=ip))
        except (ValueError, NetlinkError):
            return None
        return self._mtu_of(routes)

    def _mtu_of(self, routes: list[Any]) -> int | None:
        for route in routes:
            if route["type"] == RTN_LOCAL:
                continue  # an address of this host: no underlay to measure
            metrics = route.get_attr("RTA_METRICS")
            if metrics is not None and metrics.get_attr("RTAX_MTU"):
                return int(metrics.get_attr("RTAX_MTU"))
            oif = route.get_attr("RTA_OIF")
            if oif:
                links = self.ipr.get_links(oif)
                if links:
                    return int(links[0].get_attr("IFLA_MTU"))
        return None

    # --- execute -------------------------------------------------------------------------
    def _call(self, what: str, fn: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            result = fn(*args, **kwargs)
        except NetlinkError as exc:
            name = errno.errorcode.get(exc.code, str(exc.code))
            if exc.code in (errno.EOPNOTSUPP, errno.EAFNOSUPPORT, errno.EPROTONOSUPPORT):
                raise VxlanUnsupported(
                    f"{what}: {name} — this kernel has no VXLAN support\n"
                    "  hint: load the vxlan module (modprobe vxlan) or use datapath.mode: sleeve"
                ) from exc
            raise ApplyError(f"{what}: {name} ({exc})") from exc
        self.writes += 1
        return result

    def execute(self, plan: Plan, device: Device) -> int:
        """Apply `plan` (made against `device`); returns the number of kernel writes."""
        before = self.writes
        for change in plan.changes:
            if change.kind is Kind.LINK:
                self._link_change(change, device)
            else:
                self._fdb_change(change, device)
        return self.writes - before

    def _link_change(self, change: Change, device: Device) -> None:
        if change.action is Action.DELETE:
            self._delete_link(device)
        elif change.action is Action.REPLACE:
            self._delete_link(device)
            self._create_link(device)
        elif change.action is Action.CREATE:
            self._create_link(device)
        else:
            idx = self._require(device.name)
            if "mtu" in change.fields:
                self._call(
                    f"set {device.name} mtu", self.ipr.link, "set", index=idx, mtu=device.mtu
                )
            if "state" in change.fields:
                self._call(f"set {device.name} up", self.ipr.link, "set", index=idx, state="up")

    def _require(self, name: str) -> int:
        idx = self.index(name)
        if idx is None:
            raise ApplyError(f"{name} disappeared while being configured")
        return idx

    def _create_link(self, device: Device) -> None:
        bridge = self.index(device.bridge)
        if bridge is None:
            raise ApplyError(
                f"create {device.name}: the bridge {device.bridge} does not exist\n"
                "  hint: the reconciler creates it first; is the spec applied?"
            )
        self._call(
            f"create {device.name}",
            self.ipr.link,
            "add",
            ifname=device.name,
            kind="vxlan",
            vxlan_id=device.vni,
            vxlan_port=device.port,
            vxlan_learning=0,
            vxlan_df=1,
        )
        idx = self._require(device.name)
        _disable_ipv6(device.name)
        self._call(f"set {device.name} mtu", self.ipr.link, "set", index=idx, mtu=device.mtu)
        self._call(
            f"enslave {device.name} to {device.bridge}",
            self.ipr.link,
            "set",
            index=idx,
            master=bridge,
        )
        self._call(
            f"set {device.name} bridge port flags",
            self.ipr.brport,
            "set",
            index=idx,
            learning=0,
            isolated=1,
        )
        self._call(f"set {device.name} up", self.ipr.link, "set", index=idx, state="up")

    def _delete_link(self, device: Device) -> None:
        idx = self.index(device.name)
        if idx is not None:
            self._call(f"delete {device.name}", self.ipr.link, "del", index=idx)

    def _fdb_change(self, change: Change, device: Device) -> None:
        idx = self.index(device.name)
        if idx is None:
            if change.action is Action.DELETE:
                return  # went with its device
            raise ApplyError(f"{change.key}: {device.name} does not exist")
        if change.action in (Action.DELETE, Action.REPLACE):
            assert change.before is not None
            self._fdb_delete(idx, change.before)
        if change.action in (Action.CREATE, Action.REPLACE, Action.UPDATE):
            assert change.after is not None
            self._fdb_add(idx, change.after)

    @staticmethod
    def _mac(resource: Resource) -> str:
        return resource.key.split("/")[2]

    def _fdb_add(self, idx: int, res: Resource) -> None:
        mac = self._mac(res)
        if res.get("table") == "bridge":
            self._call(
                f"add {res.key}",
                self.ipr.fdb,
                "replace",
                ifindex=idx,
                lladdr=mac,
                flags=NTF_MASTER | NTF_STICKY,  # fdb.py: never moved by frames elsewhere
                state=NUD_NOARP,
            )
            return
        op = "append" if mac == "00:00:00:00:00:00" else "replace"
        self._call(
            f"add {res.key}",
            self.ipr.fdb,
            op,
            ifindex=idx,
            lladdr=mac,
            dst=res.get("dst"),
            port=int(res.get("port")),
            flags=NTF_SELF,
            state=NUD_PERMANENT | NUD_NOARP,
        )

    def _fdb_delete(self, idx: int, res: Resource) -> None:
        mac = self._mac(res)
        try:
            if res.get("table") == "bridge":
                self.ipr.fdb("del", ifindex=idx, lladdr=mac, flags=NTF_MASTER)
            else:
                self.ipr.fdb("del", ifindex=idx, lladdr=mac, dst=res.get("dst"), flags=NTF_SELF)
        except NetlinkError as exc:
            if exc.code != errno.ENOENT:
                raise ApplyError(f"delete {res.key}: {exc}") from exc
            return
        self.writes += 1


def _disable_ipv6(ifname: str) -> None:
    """A bridge port needs no addresses; without IPv6 it sends no router solicitations."""
    try:
        write_proc_sys(f"net/ipv6/conf/{ifname}/disable_ipv6", "1")
    except OSError as exc:
        log.debug("cannot disable IPv6 on %s: %s", ifname, exc)


def remove_fastdp(device: Device | None = None, ipr: Any | None = None) -> bool:
    """Delete the VXLAN device (and every entry on it); for `weaved reset`, which removes the
    bridge but not its ports. True if there was one."""
    kernel = FastdpKernel(ipr)
    try:
        dev = device or Device()
        if kernel.index(dev.name) is None:
            return False
        kernel._delete_link(dev)
        return True
    finally:
        kernel.close()
