"""Route-netlink dumps read straight off a NETLINK_ROUTE socket, decoding only the attributes
weaved looks at.

pyroute2 decodes every attribute of every message into objects (a link's stats, its whole
linkinfo, …): on a host with 1 000 containers a link dump cost ~0.9 s of CPU, which made the
daemon's plan and every resync grow with the containers. Here a message is walked once with
`struct`, the attributes wanted are kept as bytes/ints and the rest skipped. The kernel filters
what it can (strict checking: addresses of one link, routes of one table, links without their
stats), so the dump itself stays small. Writes stay with pyroute2 (they are few).
"""

from __future__ import annotations

import errno
import os
import socket
import struct
import threading
from collections.abc import Iterator
from dataclasses import dataclass

NETLINK_GET_STRICT_CHK = 12
SOL_NETLINK = 270

NLMSG_ERROR, NLMSG_DONE = 2, 3
NLM_F_REQUEST, NLM_F_DUMP = 0x1, 0x300
NLM_F_DUMP_INTR = 0x10
RTM_NEWLINK, RTM_GETLINK = 16, 18
RTM_GETADDR = 22
RTM_GETROUTE = 26
RTM_NEWNEIGH, RTM_DELNEIGH, RTM_GETNEIGH = 28, 29, 30

HEADER = struct.Struct("=IHHII")  # nlmsghdr: len, type, flags, seq, pid
ATTR = struct.Struct("=HH")  # nlattr: len, type
IFINFO = struct.Struct("=BxHiII")  # family, type, index, flags, change
IFADDR = struct.Struct("=BBBBi")  # family, prefixlen, flags, scope, index
# family, dst_len, src_len, tos, table, protocol, scope, type, flags
RTMSG = struct.Struct("=BBBBBBBBI")
_NDMSG = struct.Struct("=BxxxiHBB")  # family, ifindex, state, flags, type
U32 = struct.Struct("=I")
_I32 = struct.Struct("=i")
_U16BE = struct.Struct("!H")

IFLA_ADDRESS, IFLA_IFNAME, IFLA_MTU, IFLA_MASTER = 1, 3, 4, 10
IFLA_PROTINFO, IFLA_LINKINFO, IFLA_IFALIAS, IFLA_EXT_MASK, IFLA_AF_SPEC = 12, 18, 20, 29, 26
IFLA_INET6_CONF = 2  # in IFLA_AF_SPEC's AF_INET6: the link's devconf values, DEVCONF_* order
IFLA_INET6_ADDR_GEN_MODE = 8  # beside it: how the link makes its link-local address (u8)
IN6_ADDR_GEN_MODE_NONE = 1  # it makes none
DEVCONF_ACCEPT_RA, DEVCONF_DISABLE_IPV6 = 3, 26
# In IFLA_AF_SPEC's AF_INET: the link's IPv4 devconf values (IPV4_DEVCONF_* from 1, so value
# N is at N - 1); the same attribute and numbering set them (RTM_SETLINK, nlsock).
IFLA_INET_CONF = 1
IPV4_DEVCONF_PROMOTE_SECONDARIES = 20
IFLA_INFO_KIND, IFLA_INFO_SLAVE_KIND, IFLA_INFO_SLAVE_DATA = 1, 4, 5
IFLA_BRPORT_MODE, IFLA_BRPORT_LEARNING, IFLA_BRPORT_UNICAST_FLOOD = 4, 8, 9
IFLA_BRPORT_ISOLATED = 33
RTEXT_FILTER_SKIP_STATS = 1 << 3
IFA_ADDRESS, IFA_LOCAL, IFA_LABEL = 1, 2, 3
IFA_F_SECONDARY = 0x01
RTA_DST, RTA_OIF, RTA_PREFSRC, RTA_METRICS, RTA_TABLE = 1, 4, 7, 8, 15
RTAX_MTU = 2
NDA_DST, NDA_LLADDR, NDA_VLAN, NDA_PORT, NDA_MASTER = 1, 2, 5, 6, 9
NLA_TYPE_MASK = 0x3FFF
NTF_SELF = 0x02
_BRPORT_FLAGS = {
    IFLA_BRPORT_MODE: "hairpin",
    IFLA_BRPORT_LEARNING: "learning",
    IFLA_BRPORT_UNICAST_FLOOD: "flood",
    IFLA_BRPORT_ISOLATED: "isolated",
}


@dataclass(frozen=True, slots=True)
class Link:
    index: int
    name: str
    flags: int
    mtu: int = 0
    master: int = 0
    mac: str = ""
    alias: str = ""
    kind: str = ""  # IFLA_INFO_KIND ("bridge", "veth", …); "" when the kernel names none
    # Bridge-port flags (hairpin, learning, flood, isolated) when the link is a bridge port
    port: tuple[tuple[str, bool], ...] | None = None
    # IPv6 of the link's own: its disable_ipv6 is 0 and it makes a link-local address (its
    # addr_gen_mode is not none); and its accept_ra. From the devconf values and the mode the
    # link's own message carries (no /proc read); None when the kernel has no IPv6 for it.
    ipv6: bool | None = None
    accept_ra: int | None = None
    # Its IPv4 promote_secondaries (from the same message); None: the kernel sent none.
    promote_secondaries: bool | None = None

    def port_flag(self, name: str) -> bool | None:
        return None if self.port is None else dict(self.port).get(name)


@dataclass(frozen=True, slots=True)
class Addr:
    index: int
    prefixlen: int
    address: str
    label: str
    # A secondary of the subnet's first address (IFA_F_SECONDARY): removing that primary
    # removes it too, unless the link's promote_secondaries is on.
    secondary: bool = False


@dataclass(frozen=True, slots=True)
class Route:
    dst: str  # "0.0.0.0" for a default route
    dst_len: int
    table: int
    proto: int
    scope: int
    type: int
    oif: int = 0
    prefsrc: str = ""
    mtu: int = 0  # the route's own MTU metric (`ip route … mtu N`); 0 when it has none


@dataclass(frozen=True, slots=True)
class Fdb:
    ifindex: int
    state: int
    flags: int
    mac: str
    master: int = 0
    dst: str | None = None
    port: int | None = None
    vlan: int = 0


def attrs(data: bytes, offset: int, end: int) -> Iterator[tuple[int, int, int]]:
    """(type, start, stop) of each attribute in data[offset:end]."""
    while offset + 4 <= end:
        length, kind = ATTR.unpack_from(data, offset)
        if length < 4:
            return
        yield kind & NLA_TYPE_MASK, offset + 4, offset + length
        offset += (length + 3) & ~3


def _text(data: bytes, start: int, stop: int) -> str:
    return data[start:stop].split(b"\0", 1)[0].decode(errors="replace")


def _mac(data: bytes, start: int, stop: int) -> str:
    return data[start:stop].hex(":")


def _ipv4(data: bytes, start: int, stop: int) -> str:
    return socket.inet_ntop(socket.AF_INET, data[start:stop]) if stop - start == 4 else ""


def _u32(data: bytes, start: int) -> int:
    return int(U32.unpack_from(data, start)[0])


def pack_attr(kind: int, value: bytes) -> bytes:
    """One netlink attribute: its header, the value, padding to 4 bytes."""
    return ATTR.pack(4 + len(value), kind) + value + b"\0" * (-len(value) % 4)


class DumpError(OSError):
    pass


# The kernel builds dump answers of at most 32 KiB (it sizes them by the largest read seen,
# capped there), and a single message (a link without its statistics) is a few KiB.
READ_SIZE = 1 << 16


class _ReadBuffers(threading.local):
    def __init__(self) -> None:
        self.buffer = bytearray(READ_SIZE)


_buffers = _ReadBuffers()


def receive(sock: socket.socket) -> bytes:
    """One netlink datagram, read into this thread's buffer and copied out at its size: a
    fresh `recv(1 MiB)` per read cost a 1 MiB allocation (mmap, shrunk by mremap, munmap:
    each a cross-CPU TLB flush in a threaded process), dozens per container attached.
    Raises BlockingIOError on a non-blocking socket with nothing queued; a datagram larger
    than the buffer is an error, not a silently truncated answer."""
    buffer = _buffers.buffer
    size = sock.recv_into(buffer, 0, socket.MSG_TRUNC)
    if size > len(buffer):
        raise DumpError(errno.EMSGSIZE, f"a netlink message of {size} bytes (read {len(buffer)})")
    return bytes(memoryview(buffer)[:size])


class Rtnl:
    """One NETLINK_ROUTE socket for reading; blocking, used from one thread at a time."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, socket.NETLINK_ROUTE)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
        try:
            self.sock.setsockopt(SOL_NETLINK, NETLINK_GET_STRICT_CHK, 1)
            self.strict = True
        except OSError:  # an old kernel: it ignores the filters, we filter again below anyway
            self.strict = False
        self.sock.bind((0, 0))
        self.seq = 0

    def close(self) -> None:
        self.sock.close()

    def _request(self, kind: int, flags: int, body: bytes) -> Iterator[tuple[bytes, int, int]]:
        """(buffer, payload start, payload end) of each answer; a dump the kernel marks as
        interrupted (the table changed under it) is asked for again, up to three times."""
        for _attempt in range(3):
            self.seq += 1
            seq = self.seq
            self.sock.send(HEADER.pack(HEADER.size + len(body), kind, flags, seq, 0) + body)
            answers: list[tuple[bytes, int, int]] = []
            interrupted = False
            done = False
            while not done:
                data = receive(self.sock)
                offset = 0
                while offset + HEADER.size <= len(data):
                    length, mtype, mflags, mseq, _pid = HEADER.unpack_from(data, offset)
                    if length < HEADER.size:
                        break
                    end = offset + length
                    if mseq == seq:
                        interrupted |= bool(mflags & NLM_F_DUMP_INTR)
                        if mtype == NLMSG_DONE:
                            done = True
                        elif mtype == NLMSG_ERROR:
                            code = struct.unpack_from("=i", data, offset + HEADER.size)[0]
                            if code:
                                raise DumpError(-code, os.strerror(-code))
                            done = True
                        else:
                            answers.append((data, offset + HEADER.size, end))
                    offset = (end + 3) & ~3
                if not flags & NLM_F_DUMP and answers:
                    done = True
            if not interrupted:
                yield from answers
                return
        raise DumpError(errno.EINTR, "the kernel kept interrupting the dump")

    # --- links ---------------------------------------------------------------------------
    def links(self) -> list[Link]:
        """Every link of this namespace, without its statistics."""
        body = IFINFO.pack(socket.AF_UNSPEC, 0, 0, 0, 0)
        body += pack_attr(IFLA_EXT_MASK, U32.pack(RTEXT_FILTER_SKIP_STATS))
        return [
            _link(data, start, end)
            for data, start, end in self._request(RTM_GETLINK, NLM_F_REQUEST | NLM_F_DUMP, body)
        ]

    def link(self, index: int = 0, name: str = "") -> Link | None:
        """One link by index or name; None when there is none."""
        body = IFINFO.pack(socket.AF_UNSPEC, 0, index, 0, 0)
        body += pack_attr(IFLA_EXT_MASK, U32.pack(RTEXT_FILTER_SKIP_STATS))
        if name:
            body += pack_attr(IFLA_IFNAME, name.encode() + b"\0")
        try:
            for data, start, end in self._request(RTM_GETLINK, NLM_F_REQUEST, body):
                return _link(data, start, end)
        except DumpError as exc:
            if exc.errno in (errno.ENODEV, errno.EINVAL):
                return None
            raise
        return None

    # --- addresses and routes ------------------------------------------------------------
    def addresses(self, index: int) -> list[Addr]:
        """The IPv4 addresses of link `index`."""
        body = IFADDR.pack(socket.AF_INET, 0, 0, 0, index if self.strict else 0)
        out = []
        for data, start, end in self._request(RTM_GETADDR, NLM_F_REQUEST | NLM_F_DUMP, body):
            _family, prefixlen, flags, _scope, ifindex = IFADDR.unpack_from(data, start)
            if ifindex != index:
                continue
            address = local = label = ""
            for kind, a, b in attrs(data, start + IFADDR.size, end):
                if kind == IFA_ADDRESS:
                    address = _ipv4(data, a, b)
                elif kind == IFA_LOCAL:
                    local = _ipv4(data, a, b)
                elif kind == IFA_LABEL:
                    label = _text(data, a, b)
            secondary = bool(flags & IFA_F_SECONDARY)
            out.append(Addr(ifindex, prefixlen, local or address, label, secondary))
        return out

    def routes(self, table: int) -> list[Route]:
        """The IPv4 routes of `table` (< 256)."""
        body = RTMSG.pack(socket.AF_INET, 0, 0, 0, table if self.strict else 0, 0, 0, 0, 0)
        out = []
        for data, start, end in self._request(RTM_GETROUTE, NLM_F_REQUEST | NLM_F_DUMP, body):
            _f, dst_len, _s, _t, rtable, proto, scope, rtype, _fl = RTMSG.unpack_from(data, start)
            dst, oif, prefsrc, mtu = "0.0.0.0", 0, "", 0
            for kind, a, b in attrs(data, start + RTMSG.size, end):
                if kind == RTA_DST:
                    dst = _ipv4(data, a, b)
                elif kind == RTA_OIF:
                    oif = _u32(data, a)
                elif kind == RTA_PREFSRC:
                    prefsrc = _ipv4(data, a, b)
                elif kind == RTA_TABLE:
                    rtable = _u32(data, a)
                elif kind == RTA_METRICS:
                    mtu = next((_u32(data, c) for k, c, _ in attrs(data, a, b) if k == RTAX_MTU), 0)
            if rtable == table:
                out.append(Route(dst, dst_len, rtable, proto, scope, rtype, oif, prefsrc, mtu))
        return out

    # --- bridge forwarding database -------------------------------------------------------
    def fdb(self, master: int = 0, ifindex: int = 0) -> list[Fdb]:
        """Bridge FDB entries: of the ports of bridge `master` and the bridge itself, or of
        the port `ifindex` (what `bridge fdb show br B` / `dev D` print). With `master`, the
        devices' own entries (NTF_SELF: a port's multicast list, three of every five entries
        with many containers) are skipped undecoded: they never carry NDA_MASTER."""
        body = _NDMSG.pack(socket.AF_BRIDGE, ifindex, 0, 0, 0)
        if master:
            body += pack_attr(NDA_MASTER, U32.pack(master))
        out = []
        for data, start, end in self._request(RTM_GETNEIGH, NLM_F_REQUEST | NLM_F_DUMP, body):
            if master and _NDMSG.unpack_from(data, start)[3] & NTF_SELF:
                continue
            out.append(_fdb(data, start, end))
        return out


def messages(data: bytes) -> Iterator[tuple[int, int, int]]:
    """Each netlink message in what a socket read: (its type, where its body starts, its
    end); a truncated or malformed one ends the walk."""
    offset = 0
    while offset + HEADER.size <= len(data):
        length, mtype, _flags, _seq, _pid = HEADER.unpack_from(data, offset)
        if length < HEADER.size:
            return
        yield mtype, offset + HEADER.size, min(offset + length, len(data))
        offset = (offset + length + 3) & ~3


def link_name(data: bytes, start: int, end: int) -> str:
    """The name in a link message's body (ifinfomsg and its attributes); "" without one."""
    for attr, a, b in attrs(data, start + IFINFO.size, end):
        if attr == IFLA_IFNAME:
            return _text(data, a, b)
    return ""


def fdb_events(data: bytes) -> list[tuple[bool, Fdb]]:
    """The bridge forwarding entries announced in what a socket bound to RTMGRP_NEIGH read:
    (True: added or changed, False: deleted; the entry). Other neighbours (ARP) are left out."""
    out = []
    for mtype, start, end in messages(data):
        neigh = mtype in (RTM_NEWNEIGH, RTM_DELNEIGH) and end - start >= _NDMSG.size
        if neigh and data[start] == socket.AF_BRIDGE:
            out.append((mtype == RTM_NEWNEIGH, _fdb(data, start, end)))
    return out


def _fdb(data: bytes, start: int, end: int) -> Fdb:
    _family, index, state, flags, _type = _NDMSG.unpack_from(data, start)
    mac, dst, port, owner, vlan = "", None, None, 0, 0
    for kind, a, b in attrs(data, start + _NDMSG.size, end):
        if kind == NDA_LLADDR:
            mac = _mac(data, a, b)
        elif kind == NDA_DST:
            dst = _ipv4(data, a, b) or None
        elif kind == NDA_PORT:
            port = int(_U16BE.unpack_from(data, a)[0])
        elif kind == NDA_MASTER:
            owner = _u32(data, a)
        elif kind == NDA_VLAN:
            vlan = int(struct.unpack_from("=H", data, a)[0])
    return Fdb(index, state, flags, mac, owner, dst, port, vlan)


def _link(data: bytes, start: int, end: int) -> Link:
    _family, _type, index, flags, _change = IFINFO.unpack_from(data, start)
    name = mac = alias = kind = slave_kind = ""
    mtu = master = 0
    slave: tuple[int, int] | None = None
    port: tuple[tuple[str, bool], ...] | None = None
    ipv6: bool | None = None
    accept_ra: int | None = None
    promote: bool | None = None
    for attr, a, b in attrs(data, start + IFINFO.size, end):
        if attr == IFLA_IFNAME:
            name = _text(data, a, b)
        elif attr == IFLA_MTU:
            mtu = _u32(data, a)
        elif attr == IFLA_MASTER:
            master = _u32(data, a)
        elif attr == IFLA_ADDRESS:
            mac = _mac(data, a, b)
        elif attr == IFLA_IFALIAS:
            alias = _text(data, a, b)
        elif attr == IFLA_LINKINFO:
            for sub, c, d in attrs(data, a, b):
                if sub == IFLA_INFO_KIND:
                    kind = _text(data, c, d)
                elif sub == IFLA_INFO_SLAVE_KIND:
                    slave_kind = _text(data, c, d)
                elif sub == IFLA_INFO_SLAVE_DATA:
                    slave = (c, d)
        elif attr == IFLA_PROTINFO:  # an AF_BRIDGE message
            port = _brport(data, a, b)
        elif attr == IFLA_AF_SPEC:
            conf4, conf6, gen_mode = _inet_conf(data, a, b)
            if conf4 is not None:
                promote = bool(_I32.unpack_from(data, conf4)[0])
            if conf6 is not None:
                disabled = _I32.unpack_from(data, conf6 + 4 * DEVCONF_DISABLE_IPV6)[0]
                ipv6 = not disabled and gen_mode != IN6_ADDR_GEN_MODE_NONE
                accept_ra = int(_I32.unpack_from(data, conf6 + 4 * DEVCONF_ACCEPT_RA)[0])
    if slave is not None and slave_kind == "bridge":  # a bond's slave data means other things
        port = _brport(data, *slave)
    return Link(index, name, flags, mtu, master, mac, alias, kind, port, ipv6, accept_ra, promote)


def link_message(data: bytes, start: int, end: int) -> Link:
    """A link message's body (a dump's, or the new link a request echoes) as a Link."""
    return _link(data, start, end)


def _inet_conf(data: bytes, start: int, stop: int) -> tuple[int | None, int | None, int | None]:
    """In a link's IFLA_AF_SPEC: where its IPv4 promote_secondaries is, where its IPv6
    devconf values start, and its IPv6 addr_gen_mode; None for what it lacks."""
    promote = conf6 = gen_mode = None
    for family, a, b in attrs(data, start, stop):
        if family == socket.AF_INET:
            at = 4 * (IPV4_DEVCONF_PROMOTE_SECONDARIES - 1)
            for kind, c, d in attrs(data, a, b):
                if kind == IFLA_INET_CONF and d - c >= at + 4:
                    promote = c + at
        elif family == socket.AF_INET6:
            for kind, c, d in attrs(data, a, b):
                if kind == IFLA_INET6_CONF and d - c >= 4 * (DEVCONF_DISABLE_IPV6 + 1):
                    conf6 = c
                elif kind == IFLA_INET6_ADDR_GEN_MODE and d > c:
                    gen_mode = data[c]
    return promote, conf6, gen_mode


def _brport(data: bytes, start: int, stop: int) -> tuple[tuple[str, bool], ...]:
    return tuple(
        (_BRPORT_FLAGS[kind], bool(data[a]))
        for kind, a, _b in attrs(data, start, stop)
        if kind in _BRPORT_FLAGS
    )
