"""What the kernel should hold for the fast datapath, computed from the mesh. Pure.

One VXLAN device (`vxlan-6784`, no learning, DF set) is a port of the bridge, with bridge-port
learning off and the port *isolated*, so the bridge never forwards between it and sleeve's
TAP (also isolated): a frame enters the fast datapath or sleeve, never both. For every peer
with a fastdp forwarder:

* heartbeats: the peer's name (its bridge MAC) → the peer's underlay IP, always, so heartbeats
  keep probing a path that failed;
* only while fastdp carries the peer's traffic ("served"): the all-zero MAC → the peer (the
  VXLAN device floods broadcasts and unknown unicasts to every served peer), and for every MAC
  the peer announced as local to it, an entry in the VXLAN device's table (MAC → the peer's
  IP) plus a static, *sticky* entry in the bridge's table (MAC → the VXLAN port). When a peer
  is no longer served these go; the bridge then floods frames for its MACs and learns them
  again behind sleeve's TAP.

The bridge does not learn on the VXLAN port, so every forwarding decision towards the tunnel
comes from here and shows in `weaved plan`. Sticky, because the bridge moves a static entry
that is not to any port where a frame from its MAC shows up: one of the peer's frames still
arriving through sleeve as the link changes over to fastdp (or a container sending with
that MAC) moved it to that port, and every frame for the MAC went there, into sleeve that
does not carry that peer any more, until the next converge put it back (seconds to a
minute: nothing triggers one). Keys:

    link/vxlan-6784
    fdb/vxlan-6784/<mac>/<peer ip>    the VXLAN device's own table
    fdb/weave/<mac>                   the bridge's table (static, port vxlan-6784)
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from weaved.datapath.fastdp.config import DEVICE, VNI
from weaved.datapath.fastdp.frames import FLOOD_MAC, is_unicast_mac, mac_text
from weaved.mesh.gossip_api import PeerName
from weaved.model.resources import BRIDGE, Kind, Resource, State, attrs

__all__ = [
    "FDB_KIND",
    "Device",
    "FdbRow",
    "LinkRow",
    "PeerPath",
    "bridge_fdb_key",
    "desired_state",
    "link_resource",
    "local_macs",
    "observed_state",
    "vxlan_fdb_key",
]

FDB_KIND = Kind.FDB
"""The model has no FDB kind yet; forwarding entries sort like routes (after their link)."""


@dataclass(frozen=True)
class Device:
    name: str = DEVICE
    vni: int = VNI
    port: int = 6784
    mtu: int = 1450
    bridge: str = BRIDGE


@dataclass(frozen=True)
class PeerPath:
    """One peer with a fastdp forwarder, as the reconciler needs it."""

    peer: PeerName
    nickname: str
    ip: str
    port: int  # the peer's VXLAN port
    served: bool  # fastdp carries this peer's traffic now
    macs: frozenset[str] = frozenset()  # MACs the peer announced as local
    macs_at: float = 0.0  # when the announcement arrived (the latest wins a conflict)


@dataclass(frozen=True)
class LinkRow:
    """The VXLAN device as netlink shows it."""

    kind: str
    vni: int | None
    dstport: int | None
    learning: bool
    df: str
    master: str
    up: bool
    mtu: int
    port_learning: bool | None  # None: not a bridge port
    isolated: bool | None


@dataclass(frozen=True)
class FdbRow:
    """One forwarding entry: `master` = the bridge's table, else the device's own."""

    mac: str
    port: str  # the device the entry is on
    master: bool
    state: str  # permanent | static | dynamic
    dst: str | None = None
    dst_port: int | None = None
    vlan: int = 0
    sticky: bool = False  # the bridge never moves it to another port (NTF_STICKY)


def link_key(device: Device) -> str:
    return f"link/{device.name}"


def vxlan_fdb_key(device: Device, mac: str, ip: str) -> str:
    return f"fdb/{device.name}/{mac}/{ip}"


def bridge_fdb_key(device: Device, mac: str) -> str:
    return f"fdb/{device.bridge}/{mac}"


def link_resource(device: Device) -> Resource:
    return Resource(
        link_key(device),
        Kind.LINK,
        attrs(
            type="vxlan",
            vni=device.vni,
            dstport=device.port,
            learning="off",
            df="set",
            master=device.bridge,
            state="up",
            mtu=device.mtu,
            port_learning="off",
            isolated="on",
        ),
        note="fast datapath",
    )


def _vxlan_entry(device: Device, mac: str, path: PeerPath, why: str) -> Resource:
    return Resource(
        vxlan_fdb_key(device, mac, path.ip),
        FDB_KIND,
        attrs(table="vxlan", dst=path.ip, port=path.port),
        note=f"{why} {path.nickname or mac_text(path.peer)}",
    )


def _bridge_entry(device: Device, mac: str, path: PeerPath) -> Resource:
    return Resource(
        bridge_fdb_key(device, mac),
        FDB_KIND,
        attrs(table="bridge", port=device.name, state="static", sticky="on"),
        note=f"at {path.nickname or mac_text(path.peer)} over fastdp",
    )


def desired_state(
    device: Device | None, paths: Iterable[PeerPath], local: frozenset[str] = frozenset()
) -> State:
    """`device` None: the fast datapath is off and nothing of it should exist. `local`: MACs
    on our own bridge, never pointed into the tunnel whatever a peer claims."""
    if device is None:
        return State()
    out: dict[str, Resource] = {}
    link = link_resource(device)
    out[link.key] = link
    paths = sorted(paths, key=lambda p: (p.macs_at, p.peer))
    names = {mac_text(p.peer): p for p in paths}
    for path in paths:
        hb = _vxlan_entry(device, mac_text(path.peer), path, "heartbeats to")
        out[hb.key] = hb
    owner: dict[str, PeerPath] = {}
    for path in paths:  # oldest announcement first: a MAC that moved belongs to the latest
        if not path.served:
            continue
        for mac in path.macs:
            if mac in local or mac in names or not is_unicast_mac(mac):
                continue
            owner[mac] = path
    for name, path in names.items():
        if path.served and name not in local:
            owner[name] = path  # a peer's bridge (its exposed addresses) is always its own
    for path in paths:
        if path.served:
            flood = _vxlan_entry(device, FLOOD_MAC, path, "broadcasts to")
            out[flood.key] = flood
    for mac, path in owner.items():
        for resource in (
            _vxlan_entry(device, mac, path, "MAC at"),
            _bridge_entry(device, mac, path),
        ):
            out.setdefault(resource.key, resource)
    return State(out)


def observed_state(device: Device, link: LinkRow | None, rows: Iterable[FdbRow]) -> State:
    """The same shape from what netlink reports (only entries on our device are ours)."""
    if link is None:
        return State()

    def on_off(value: bool | None) -> str | None:
        return None if value is None else ("on" if value else "off")

    out: dict[str, Resource] = {}
    link_res = Resource(
        link_key(device),
        Kind.LINK,
        attrs(
            type=link.kind,
            vni=link.vni,
            dstport=link.dstport,
            learning=on_off(link.learning),
            df=link.df,
            master=link.master or "none",
            state="up" if link.up else "down",
            mtu=link.mtu,
            port_learning=on_off(link.port_learning),
            isolated=on_off(link.isolated),
        ),
        note="fast datapath",
    )
    out[link_res.key] = link_res
    for row in rows:
        if row.port != device.name:
            continue
        if not row.master and row.dst is not None:
            key = vxlan_fdb_key(device, row.mac, row.dst)
            out[key] = Resource(
                key,
                FDB_KIND,
                attrs(table="vxlan", dst=row.dst, port=row.dst_port or device.port),
            )
        elif row.master and row.state == "static":
            key = bridge_fdb_key(device, row.mac)
            out[key] = Resource(
                key,
                FDB_KIND,
                attrs(
                    table="bridge",
                    port=device.name,
                    state="static",
                    sticky="on" if row.sticky else "off",
                ),
            )
    return State(out)


def local_macs(rows: Iterable[FdbRow], bridge: str, remote_ports: Iterable[str]) -> frozenset[str]:
    """MACs that live on this host: the bridge's own address and what the bridge learnt on its
    local ports (containers), not what it learnt behind the tunnel or sleeve's TAP."""
    remote = frozenset(remote_ports)
    return frozenset(row.mac.lower() for row in rows if is_local_row(row, bridge, remote))


def is_local_row(row: FdbRow, bridge: str, remote: frozenset[str]) -> bool:
    """An entry of the bridge's table for a MAC on this host (see local_macs)."""
    if not row.master or not is_unicast_mac(row.mac):
        return False
    return row.port == bridge or (row.state == "dynamic" and row.port not in remote)
