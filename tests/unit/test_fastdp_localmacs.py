"""Local MACs kept from the bridge table's announcements (weaved/datapath/fastdp/localmacs.py)."""

from __future__ import annotations

import socket
import struct

from weaved.datapath.fastdp.fdb import FdbRow, local_macs
from weaved.datapath.fastdp.localmacs import REPLAY_LOG, BridgeIndex, LocalMacs, bridge_changes
from weaved.dataplane.rtnl import fdb_events

BRIDGE_INDEX = 7
NUD_REACHABLE, NUD_PERMANENT = 0x02, 0x80


def attr(kind: int, value: bytes) -> bytes:
    raw = struct.pack("=HH", 4 + len(value), kind) + value
    return raw + b"\0" * (-len(raw) % 4)


def neigh(
    mtype: int, mac: str, ifindex: int, *, master: int = BRIDGE_INDEX, vlan: int | None = None,
    family: int = socket.AF_BRIDGE, state: int = NUD_REACHABLE, flags: int = 0,
) -> bytes:  # fmt: skip
    body = struct.pack("=BxxxiHBB", family, ifindex, state, flags, 0)
    body += attr(2, bytes.fromhex(mac.replace(":", "")))
    if master:
        body += attr(9, struct.pack("=I", master))
    if vlan is not None:
        body += attr(5, struct.pack("=H", vlan))
    return struct.pack("=IHHII", 16 + len(body), mtype, 0, 0, 0) + body


NEW, DEL = 28, 29
A, B = "02:00:00:00:00:0a", "02:00:00:00:00:0b"


def test_fdb_events_decode_bridge_entries_and_leave_arp_out() -> None:
    data = (
        neigh(NEW, A, 3, vlan=1)
        + neigh(NEW, B, 4, family=socket.AF_INET, master=0)  # an ARP neighbour
        + neigh(DEL, A, 3)
    )
    events = fdb_events(data)
    assert [(added, e.mac, e.ifindex, e.master, e.vlan) for added, e in events] == [
        (True, A, 3, BRIDGE_INDEX, 1),
        (False, A, 3, BRIDGE_INDEX, 0),
    ]


def test_bridge_changes_keep_only_our_bridges_table() -> None:
    data = (
        neigh(NEW, A, 1)  # lo: a name the ioctl finds
        + neigh(NEW, B, 1, master=BRIDGE_INDEX + 1)  # another bridge
        + neigh(NEW, B, 1, flags=0x02)  # a device's own entry (NTF_SELF)
        + neigh(DEL, A, 999_999)  # a port already gone
    )
    changes = bridge_changes(fdb_events(data), BRIDGE_INDEX)
    assert [(added, row.mac, row.port, row.state) for added, row in changes] == [
        (True, A, "lo", "dynamic"),
        (False, A, "", "dynamic"),
    ]


def row(mac: str, port: str, state: str = "dynamic", vlan: int = 0) -> FdbRow:
    return FdbRow(mac, port, True, state, vlan=vlan)


def test_announcements_change_the_set_as_a_full_read_would() -> None:
    macs = LocalMacs("weave", ("vxlan-6784", "vethwe-tap"))
    rows = [row("02:00:00:00:00:01", "weave", "permanent"), row(A, "vethwepl1")]
    macs.reset(rows, macs.mark())
    assert not macs.stale
    assert macs.macs() == local_macs(rows, "weave", ("vxlan-6784", "vethwe-tap"))
    macs.apply([(True, row(B, "vethwepl2"))])
    assert macs.macs() == {"02:00:00:00:00:01", A, B}
    macs.apply([(True, row(A, "vethwe-tap"))])  # A moved behind sleeve: a peer's now
    assert macs.macs() == {"02:00:00:00:00:01", B}
    macs.apply([(True, row(B, "vethwepl2", vlan=5)), (False, row(B, "vethwepl2"))])
    assert B in macs.macs()  # its other VLAN's entry is still there
    macs.apply([(False, row(B, "", vlan=5))])
    assert macs.macs() == {"02:00:00:00:00:01"}


def test_a_full_read_keeps_what_was_announced_while_it_ran() -> None:
    macs = LocalMacs("weave", ())
    since = macs.mark()
    stale_read = [row(A, "vethwepl1")]  # read before B came and A went
    macs.apply([(True, row(B, "vethwepl2")), (False, row(A, ""))])
    macs.reset(stale_read, since)
    assert macs.macs() == {B} and not macs.stale


def test_a_read_older_than_the_replay_log_asks_for_another() -> None:
    macs = LocalMacs("weave", ())
    since = macs.mark()
    macs.apply(
        (True, row(f"02:00:00:00:{i // 256:02x}:{i % 256:02x}", "p")) for i in range(REPLAY_LOG + 1)
    )
    macs.reset([], since)
    assert macs.stale


def test_a_read_keeps_only_what_later_reads_may_replay() -> None:
    macs = LocalMacs("weave", ())
    early = macs.mark()
    macs.apply([(True, row(A, "vethwepl1"))])
    late = macs.mark()
    macs.apply([(True, row(B, "vethwepl2"))])
    macs.reset([], late)  # the log before `late` is dropped
    assert macs.macs() == {B} and not macs.stale
    macs.reset([], early)  # a read begun before that can no longer be patched up
    assert macs.stale


def test_the_set_is_the_same_object_until_a_local_mac_comes_or_goes() -> None:
    macs = LocalMacs("weave", ("vethwe-tap",))
    macs.reset([row(A, "vethwepl1")], macs.mark())
    first = macs.macs()
    macs.apply([(True, row(B, "vethwepl2", "permanent"))])  # a port's own entry: not local
    macs.apply([(True, row(A, "vethwepl1"))])  # A's only entry announced again
    assert macs.macs() is first
    macs.apply([(True, row(A, "vethwepl1", vlan=5))])  # A once more, in another VLAN
    assert macs.macs() is first
    macs.apply([(True, row(B, "vethwepl2"))])
    assert macs.macs() == {A, B} and macs.macs() is macs.macs()
    macs.apply([(False, row(A, "")), (False, row(A, "", vlan=5))])
    assert macs.macs() == {B}
    macs.reset([row(B, "vethwepl2")], macs.mark())
    assert macs.macs() == {B}


def test_the_bridge_index_is_looked_up_again_only_for_another_master() -> None:
    lo = BridgeIndex("lo")
    assert lo.among({5}) == 1  # nothing known yet: looked up
    lo.bridge = "no-such-link"  # a lookup now would find nothing
    assert lo.among({1}) == 1 and lo.among(set()) == 1  # its own announcements: no lookup
    assert lo.among({1, 9}) == 0  # another master: looked up again (gone)
    assert lo.among({1}) == 0
