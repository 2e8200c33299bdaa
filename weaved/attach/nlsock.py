"""The few route-netlink writes a plug makes (a veth pair, a port's MTU/master/up, an address,
a link route), sent on a plain NETLINK_ROUTE socket next to `dataplane/rtnl.py`'s reads.

pyroute2's IPRoute runs an event loop of its own per socket and decodes every attribute of
every answer: a plug cost ~20 ms of CPU (a dozen calls and two sockets), which ten attaches at
once serialized on the GIL. Here a request is packed with `struct` and the kernel's ack read;
a plumbing thread keeps its socket (`host_socket`) instead of opening one per call. A refusal
is an `OSError` with the kernel's errno (rtnl's `DumpError`), as pyroute2's NetlinkError
carried it.
"""

from __future__ import annotations

import ipaddress
import os
import socket
import struct
import threading

from weaved.dataplane.rtnl import (
    ATTR,
    HEADER,
    IFADDR,
    IFINFO,
    IFLA_AF_SPEC,
    IFLA_INET6_ADDR_GEN_MODE,
    IFLA_INET_CONF,
    IN6_ADDR_GEN_MODE_NONE,
    NLM_F_DUMP,
    RTMSG,
    U32,
    Link,
    Rtnl,
    attrs,
    link_message,
    pack_attr,
)

RTM_NEWLINK, RTM_DELLINK, RTM_SETLINK = 16, 17, 19
RTM_NEWADDR, RTM_DELADDR, RTM_NEWROUTE, RTM_DELROUTE = 20, 21, 24, 25
NLM_F_REQUEST, NLM_F_ACK, NLM_F_ECHO = 0x1, 0x4, 0x8
NLM_F_REPLACE, NLM_F_EXCL, NLM_F_CREATE = 0x100, 0x200, 0x400
IFF_UP = 0x1
IFLA_ADDRESS, IFLA_IFNAME, IFLA_MTU, IFLA_MASTER = 1, 3, 4, 10
IFLA_PROTINFO, IFLA_LINKINFO, IFLA_IFALIAS, IFLA_NET_NS_FD = 12, 18, 20, 28
IFLA_INFO_KIND, IFLA_INFO_DATA, VETH_INFO_PEER = 1, 2, 1
IFLA_BRPORT_MODE = 4
NLA_F_NESTED = 0x8000
IFA_ADDRESS, IFA_LOCAL, IFA_BROADCAST = 1, 2, 4
RTA_DST, RTA_OIF, RTA_PREFSRC = 1, 4, 7
RTPROT_BOOT, RTN_UNICAST = 3, 1
RTM_GETNEIGHTBL, RTM_SETNEIGHTBL = 66, 67
NDTA_NAME, NDTA_PARMS = 1, 6
NDTPA_IFINDEX, NDTPA_BASE_REACHABLE_TIME, NDTPA_DELAY_PROBE_TIME, NDTPA_UCAST_PROBES = 1, 4, 7, 10
ARP_TABLE = "arp_cache"
# The ARP settings of a link's /proc/sys/net/ipv4/neigh/<link>/ files as neighbour-table
# parameters: (attribute, its width, how many of the kernel's units one of the file's is).
ARP_PARAMS = {
    "base_reachable_time": (NDTPA_BASE_REACHABLE_TIME, "=Q", 1000),  # s ↔ ms
    "delay_first_probe_time": (NDTPA_DELAY_PROBE_TIME, "=Q", 1000),
    "ucast_solicit": (NDTPA_UCAST_PROBES, "=I", 1),
}
_NDTMSG = struct.Struct("=Bxxx")
_NEW = NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL
IFLA_NUM_TX_QUEUES, IFLA_NUM_RX_QUEUES = 31, 32
# A veth made with a queue per CPU is cut to one after it is registered, which waits for an
# expedited RCU grace period under the rtnl lock (every attach waits on that lock): made
# with one queue each way (what it is cut to anyway), ~0.12 ms less of it per pair.
_ONE_QUEUE = pack_attr(IFLA_NUM_TX_QUEUES, U32.pack(1)) + pack_attr(IFLA_NUM_RX_QUEUES, U32.pack(1))


def _nest(kind: int, *parts: bytes) -> bytes:
    body = b"".join(parts)
    return ATTR.pack(ATTR.size + len(body), kind | NLA_F_NESTED) + body + b"\0" * (-len(body) % 4)


def _name(text: str) -> bytes:
    return text.encode() + b"\0"


def _mac(text: str) -> bytes:
    return bytes(int(part, 16) for part in text.split(":"))


class Netlink(Rtnl):
    """rtnl's reads plus the writes of a plug; blocking, one thread at a time."""

    def __enter__(self) -> Netlink:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def _ack(self, kind: int, body: bytes, flags: int = NLM_F_REQUEST | NLM_F_ACK) -> None:
        for _ in self._request(kind, flags, body):
            pass

    def add_veth(
        self, name: str, peer: str, mtu: int, netns_fd: int | None = None, peer_mac: str = ""
    ) -> Link | None:
        """A veth pair `name` ↔ `peer`, the peer in the namespace open at `netns_fd`; the new
        host end as the kernel echoes it (NLM_F_ECHO: no read after), None from a kernel
        that does not echo a new link (before 6.3)."""
        peer_attrs = pack_attr(IFLA_IFNAME, _name(peer)) + pack_attr(IFLA_MTU, U32.pack(mtu))
        peer_attrs += _ONE_QUEUE
        if netns_fd is not None:
            peer_attrs += pack_attr(IFLA_NET_NS_FD, U32.pack(netns_fd))
        if peer_mac:
            peer_attrs += pack_attr(IFLA_ADDRESS, _mac(peer_mac))
        info = _nest(
            IFLA_LINKINFO,
            pack_attr(IFLA_INFO_KIND, b"veth"),
            _nest(
                IFLA_INFO_DATA,
                _nest(VETH_INFO_PEER, IFINFO.pack(socket.AF_UNSPEC, 0, 0, 0, 0) + peer_attrs),
            ),
        )
        body = IFINFO.pack(socket.AF_UNSPEC, 0, 0, 0, 0)
        body += pack_attr(IFLA_IFNAME, _name(name)) + pack_attr(IFLA_MTU, U32.pack(mtu))
        body += _ONE_QUEUE + info
        for data, start, end in self._request(RTM_NEWLINK, _NEW | NLM_F_ECHO, body):
            if HEADER.unpack_from(data, start - HEADER.size)[1] == RTM_NEWLINK:
                found = link_message(data, start, end)
                if found.name == name:
                    return found
        return None

    def set_link(
        self,
        index: int,
        *,
        mtu: int = 0,
        master: int = 0,
        up: bool = False,
        alias: str = "",
        name: str = "",
    ) -> None:
        """Change link `index`: its MTU, master, alias, name (each when given), up when `up`
        (renamed first: the kernel renames before it changes the flags)."""
        flags = IFF_UP if up else 0
        body = IFINFO.pack(socket.AF_UNSPEC, 0, index, flags, flags)
        if name:
            body += pack_attr(IFLA_IFNAME, _name(name))
        if mtu:
            body += pack_attr(IFLA_MTU, U32.pack(mtu))
        if master:
            body += pack_attr(IFLA_MASTER, U32.pack(master))
        if alias:
            body += pack_attr(IFLA_IFALIAS, alias.encode())
        self._ack(RTM_SETLINK, body)

    def set_hairpin(self, index: int, on: bool) -> None:
        """The bridge port `index`'s hairpin mode."""
        body = IFINFO.pack(socket.AF_BRIDGE, 0, index, 0, 0)
        body += _nest(IFLA_PROTINFO, pack_attr(IFLA_BRPORT_MODE, bytes([int(on)])))
        self._ack(RTM_SETLINK, body)

    def set_ipv4_conf(self, index: int, values: dict[int, int]) -> None:
        """Link `index`'s IPv4 devconf settings (IPV4_DEVCONF_* → value: what its
        /proc/sys/net/ipv4/conf/<link>/ files hold), in one request."""
        conf = b"".join(pack_attr(key, U32.pack(value)) for key, value in values.items())
        self._set_af_spec(index, socket.AF_INET, _nest(IFLA_INET_CONF, conf))

    def set_no_link_local(self, index: int) -> None:
        """Link `index` makes no IPv6 link-local address (addr_gen_mode none): no address, no
        routes of its own but the multicast one. Unlike its disable_ipv6, whose /proc/sys
        write spins (rtnl_trylock, restart) while other requests hold the rtnl lock — with
        10 attaches at once that was ~40 ms of one CPU per attach — this request waits."""
        mode = pack_attr(IFLA_INET6_ADDR_GEN_MODE, bytes([IN6_ADDR_GEN_MODE_NONE]))
        self._set_af_spec(index, socket.AF_INET6, mode)

    def _set_af_spec(self, index: int, family: int, settings: bytes) -> None:
        """Link `index`'s per-family settings (IFLA_AF_SPEC → `family` → `settings`)."""
        body = IFINFO.pack(socket.AF_UNSPEC, 0, index, 0, 0)
        body += _nest(IFLA_AF_SPEC, _nest(family, settings))
        self._ack(RTM_SETLINK, body)

    def delete_link(self, index: int) -> None:
        self._ack(RTM_DELLINK, IFINFO.pack(socket.AF_UNSPEC, 0, index, 0, 0))

    def add_address(self, index: int, iface: ipaddress.IPv4Interface) -> None:
        """`iface` on link `index`, with its subnet's broadcast address below /31."""
        ip = iface.ip.packed
        body = IFADDR.pack(socket.AF_INET, iface.network.prefixlen, 0, 0, index)
        body += pack_attr(IFA_LOCAL, ip) + pack_attr(IFA_ADDRESS, ip)
        if iface.network.prefixlen < 31:
            body += pack_attr(IFA_BROADCAST, iface.network.broadcast_address.packed)
        self._ack(RTM_NEWADDR, body, _NEW)

    def delete_address(self, index: int, iface: ipaddress.IPv4Interface) -> None:
        body = IFADDR.pack(socket.AF_INET, iface.network.prefixlen, 0, 0, index)
        body += pack_attr(IFA_LOCAL, iface.ip.packed)
        self._ack(RTM_DELADDR, body)

    def add_route(
        self,
        dst: ipaddress.IPv4Network,
        oif: int,
        scope: int,
        table: int,
        *,
        proto: int = RTPROT_BOOT,
        prefsrc: str = "",
        replace: bool = False,
    ) -> None:
        """A route to `dst` out of link `oif`: EEXIST when there is one, unless `replace`."""
        flags = NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE
        flags |= NLM_F_REPLACE if replace else NLM_F_EXCL
        body = RTMSG.pack(socket.AF_INET, dst.prefixlen, 0, 0, table, proto, scope, RTN_UNICAST, 0)
        body += pack_attr(RTA_DST, dst.network_address.packed) + pack_attr(RTA_OIF, U32.pack(oif))
        if prefsrc:
            body += pack_attr(RTA_PREFSRC, ipaddress.IPv4Address(prefsrc).packed)
        self._ack(RTM_NEWROUTE, body, flags)

    def delete_route(self, dst: ipaddress.IPv4Network, oif: int, proto: int, table: int) -> None:
        """The route to `dst` out of `oif` made by `proto` (ESRCH when there is none)."""
        body = RTMSG.pack(socket.AF_INET, dst.prefixlen, 0, 0, table, proto, 0, 0, 0)
        body += pack_attr(RTA_DST, dst.network_address.packed) + pack_attr(RTA_OIF, U32.pack(oif))
        self._ack(RTM_DELROUTE, body)

    # ARP settings by netlink (what `ip ntable` does): /proc/sys/net/ipv4/neigh/ethwe/… is a
    # path the kernel looks up among every namespace's `ethwe` (its dentries are shared), an
    # attach's cost growing with the containers on the host.
    def arp_params(self, index: int) -> dict[str, int]:
        """Link `index`'s ARP settings (ARP_PARAMS' names, in the /proc/sys files' units)."""
        body = _NDTMSG.pack(socket.AF_INET)
        for data, start, end in self._request(RTM_GETNEIGHTBL, NLM_F_REQUEST | NLM_F_DUMP, body):
            name, parms = "", None
            for kind, a, b in attrs(data, start + _NDTMSG.size, end):
                if kind == NDTA_NAME:
                    name = data[a:b].split(b"\0", 1)[0].decode(errors="replace")
                elif kind == NDTA_PARMS:
                    parms = {k: data[c:d] for k, c, d in attrs(data, a, b)}
            if name != ARP_TABLE or parms is None or NDTPA_IFINDEX not in parms:
                continue
            if U32.unpack(parms[NDTPA_IFINDEX][:4])[0] != index:
                continue
            return {
                key: struct.unpack(fmt, parms[attr][: struct.calcsize(fmt)])[0] // unit
                for key, (attr, fmt, unit) in ARP_PARAMS.items()
                if attr in parms
            }
        return {}

    def set_arp_params(self, index: int, values: dict[str, int]) -> None:
        """Set link `index`'s ARP settings (ARP_PARAMS' names and units), in one request."""
        parms = pack_attr(NDTPA_IFINDEX, U32.pack(index))
        for key, value in values.items():
            attr, fmt, unit = ARP_PARAMS[key]
            parms += pack_attr(attr, struct.pack(fmt, value * unit))
        body = _NDTMSG.pack(socket.AF_INET) + pack_attr(NDTA_NAME, _name(ARP_TABLE))
        self._ack(RTM_SETNEIGHTBL, body + _nest(NDTA_PARMS, parms))


class _Local(threading.local):
    sock: Netlink | None = None
    netns: int = 0


_local = _Local()


def host_socket() -> Netlink:
    """This thread's socket in the thread's current namespace, kept for the thread's next
    calls (a plumbing thread plugs many containers); a new one if the thread moved."""
    here = os.stat("/proc/thread-self/ns/net").st_ino
    if _local.sock is None or _local.netns != here:
        if _local.sock is not None:
            _local.sock.close()
        _local.sock, _local.netns = Netlink(), here
    return _local.sock
