"""Forwarding entries that outlive a connection or a daemon. Pure.

The kernel's VXLAN path needs no daemon: when a peer's daemon restarts (or ours does), the
entries towards it still forward. Tearing them down because a TCP connection or its
heartbeats went away cut traffic for the whole restart plus the time a new connection takes
to prove the path again. So entries towards a peer's underlay IP are *retained*:

* when its connection goes while fastdp carried it (the last desired entries for that IP);
* when our daemon starts (every entry found on the device is adopted: a restart writes
  nothing and plans nothing);

and kept, next to what the mesh asks for, until the path to that IP is decided again — a new
connection's fastdp forwarder turned healthy (its own entries take over) or unhealthy (the
path does not work: they go) — or until `RETAIN_FOR` seconds passed without a connection
(the peer is gone for good). A retained entry never overrides a current one: a MAC that
the mesh now places at another peer loses its retained entries.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from weaved.datapath.fastdp.frames import FLOOD_MAC
from weaved.model.resources import Resource, State

__all__ = ["RETAIN_FOR", "Retained", "Retention", "adopt", "merge", "retain_lost", "settle"]

RETAIN_FOR = 60.0
"""How long entries towards a peer stay without any connection to it (a daemon restart
takes seconds; a peer gone for good loses them after this)."""


@dataclass(frozen=True)
class Retained:
    """Entries towards one peer IP, kept until `until` or until the path is decided."""

    ip: str
    resources: Mapping[str, Resource]
    until: float


def _fdb_parts(key: str) -> list[str]:
    return key.split("/")  # fdb/<device>/<mac>[/<ip>]


def _groups(state: State) -> dict[str, dict[str, Resource]]:
    """The FDB entries of a state grouped by the peer IP they lead to: the VXLAN table's
    entries by their destination, the bridge's entries with the MAC's VXLAN entry."""
    vxlan_ip: dict[str, str] = {}
    groups: dict[str, dict[str, Resource]] = {}
    for key, res in state.resources.items():
        parts = _fdb_parts(key)
        if parts[0] == "fdb" and len(parts) == 4:
            ip = parts[3]
            groups.setdefault(ip, {})[key] = res
            if parts[2] != FLOOD_MAC:
                vxlan_ip[parts[2]] = ip
    for key, res in state.resources.items():
        parts = _fdb_parts(key)
        if parts[0] == "fdb" and len(parts) == 3 and parts[2] in vxlan_ip:
            groups[vxlan_ip[parts[2]]][key] = res
    return groups


def adopt(observed: State, now: float) -> list[Retained]:
    """Everything on the device when the daemon starts."""
    return [Retained(ip, res, now + RETAIN_FOR) for ip, res in sorted(_groups(observed).items())]


def retain_lost(
    last_desired: State, lost_ips: Iterable[str], kept: list[Retained], now: float
) -> list[Retained]:
    """Add the entries last desired towards IPs whose served connection went."""
    groups = _groups(last_desired)
    have = {r.ip for r in kept}
    out = list(kept)
    for ip in sorted(set(lost_ips)):
        if ip in groups and ip not in have:
            out.append(Retained(ip, groups[ip], now + RETAIN_FOR))
    return out


def settle(kept: list[Retained], decided: Iterable[str], now: float) -> list[Retained]:
    """Drop what expired or whose IP has a decided path (healthy or unhealthy) again."""
    done = set(decided)
    return [r for r in kept if r.ip not in done and now < r.until]


def merge(desired: State, kept: Iterable[Retained]) -> State:
    """`desired` plus retained entries that contradict nothing in it. Only with a device:
    without one (fastdp off) nothing is retained."""
    if not desired.resources:
        return desired
    out = dict(desired.resources)
    taken: dict[str, str] = {}  # MAC → the IP current entries send it to
    for key in desired.resources:
        parts = _fdb_parts(key)
        if parts[0] == "fdb" and len(parts) == 4:
            taken[parts[2]] = parts[3]
    for group in kept:
        for key, res in group.resources.items():
            parts = _fdb_parts(key)
            mac = parts[2] if len(parts) >= 3 else ""
            if mac != FLOOD_MAC and taken.get(mac, group.ip) != group.ip:
                continue  # the MAC is somewhere else now
            out.setdefault(key, res)
    return State(out)


class Retention:
    """The part's bookkeeping of retained entries across converges (time is an argument)."""

    def __init__(self) -> None:
        self.kept: list[Retained] = []
        self.adopted = False
        self._last_desired = State()
        self._served: frozenset[str] = frozenset()

    def adopt(self, observed: State, now: float) -> int:
        """Once, at start: keep what the device holds. Returns the number of peer IPs."""
        self.adopted = True
        self.kept = adopt(observed, now)
        return len(self.kept)

    def lose(self, served: set[str], decided: set[str], now: float) -> frozenset[str]:
        """IPs served at the last converge whose path is gone or undecided now keep their
        entries; returns them."""
        lost = self._served - served - decided
        if lost:
            self.kept = retain_lost(self._last_desired, lost, self.kept, now)
        return lost

    def desired(self, computed: State, decided: set[str], now: float) -> State:
        """`computed` plus what is still retained (nothing when the device is off)."""
        if not computed.resources:
            self.kept = []
            return computed
        self.kept = settle(self.kept, decided, now)
        return merge(computed, self.kept)

    def converged(self, computed: State, served: set[str]) -> None:
        self._last_desired = computed
        self._served = frozenset(served)

    def expired(self, now: float) -> bool:
        return any(r.until <= now for r in self.kept)
