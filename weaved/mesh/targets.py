"""Which addresses to dial, and when (Weave's connection maker, FACTS.md §2.5, §3.3). Pure.

Targets come from the spec ("direct" peers: IP, host name or host:port, resolved by the
caller) and, with discovery, from gossip: every peer connected to a known peer but not to
us. `plan()` is called after any change and returns the attempts due now plus when to call
it again.
"""

from __future__ import annotations

import functools
import ipaddress
import random
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum

from weaved.backoff import RetrySchedule
from weaved.mesh.gossip_api import PeerName

__all__ = [
    "Attempt",
    "ConnectionMaker",
    "LiveConnection",
    "Plan",
    "Target",
    "TargetState",
    "join_host_port",
    "split_target",
]


class TargetState(StrEnum):
    WAITING = "waiting"
    ATTEMPTING = "attempting"
    CONNECTED = "connected"


@dataclass
class Target:
    address: str  # "ip:port"
    state: TargetState = TargetState.WAITING
    last_error: str | None = None
    schedule: RetrySchedule = field(default_factory=RetrySchedule)


@dataclass(frozen=True)
class LiveConnection:
    """One of our connections, as the connection maker sees it."""

    peer: PeerName
    address: str  # remote "ip:port" (the remote's ephemeral port for inbound ones)
    outbound: bool


@dataclass(frozen=True)
class Attempt:
    address: str
    direct: bool  # a spec target: may introduce a peer we do not know yet


@dataclass(frozen=True)
class Plan:
    attempts: tuple[Attempt, ...]
    wake_at: float | None  # call plan() again at this time (None: only on events)


def split_target(spec: str) -> tuple[str, int | None]:
    """`host`, `host:port`, `[v6]:port` -> (host, port or None)."""
    text = spec.strip()
    if text.startswith("["):
        host, _, rest = text[1:].partition("]")
        if rest.startswith(":") and rest[1:].isdigit():
            return host, int(rest[1:])
        return host, None
    if text.count(":") == 1:
        host, port = text.split(":")
        if port.isdigit():
            return host, int(port)
        raise ValueError(f"invalid port in peer address {spec!r}")
    return text, None


def join_host_port(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _ip_of(address: str) -> str:
    host, _ = split_target(address)
    return host


class ConnectionMaker:
    def __init__(self, port: int, discovery: bool, rng: random.Random) -> None:
        self.port = port
        self.discovery = discovery
        self._rng = rng
        # spec string -> resolved (ip, port or None); None while unresolved
        self.direct: dict[str, tuple[str, int | None] | None] = {}
        self.targets: dict[str, Target] = {}

    # --- spec targets -------------------------------------------------------------------

    def set_direct(self, specs: Iterable[str], now: float, replace: bool = True) -> None:
        specs = list(specs)
        if replace:
            self.direct = {s: self.direct.get(s) for s in specs}
        else:
            for s in specs:
                self.direct.setdefault(s, None)
        for s in specs:
            resolved = self.direct.get(s)
            if resolved is not None:
                self._curtail(resolved, now)

    def forget_direct(self, specs: Iterable[str]) -> None:
        for s in specs:
            self.direct.pop(s, None)

    def resolved(self, spec: str, ip: str, port: int | None, now: float) -> None:
        if spec in self.direct:
            self.direct[spec] = (ip, port)
            self._curtail((ip, port), now)

    def unresolved_specs(self) -> list[str]:
        return [s for s, r in self.direct.items() if r is None]

    def _complete(self, ip: str, port: int | None) -> str:
        return join_host_port(ip, port if port else self.port)

    def _curtail(self, resolved: tuple[str, int | None], now: float) -> None:
        target = self.targets.get(self._complete(*resolved))
        if target is not None:
            target.schedule.try_now(now)

    # --- connection events ----------------------------------------------------------------

    def attempt_failed(self, address: str, error: str, now: float) -> None:
        target = self.targets.get(address)
        if target is None:
            return
        target.state = TargetState.WAITING
        target.last_error = error
        target.schedule.try_later(now, self._rng)

    def connection_created(self, address: str, outbound: bool) -> None:
        target = self.targets.get(address)
        if outbound and target is not None:
            target.state = TargetState.CONNECTED

    def connection_ended(
        self, address: str, outbound: bool, error: str, now: float, retry: bool = True
    ) -> None:
        target = self.targets.get(address)
        if not outbound or target is None:
            return
        target.state = TargetState.WAITING
        target.last_error = error
        if not retry:
            target.schedule.try_never()
        else:
            target.schedule.after_connection_ended(now, self._rng)

    # --- planning -----------------------------------------------------------------------

    def plan(
        self,
        now: float,
        connections: Iterable[LiveConnection],
        topology: Mapping[PeerName, Mapping[PeerName, tuple[str, bool]]],
        us: PeerName,
    ) -> Plan:
        """`topology`: peer -> {remote -> (address, outbound)} as gossiped by that peer."""
        conns = list(connections)
        connected_peers = {c.peer for c in conns}
        connected_addrs = {c.address for c in conns}
        inbound_ips = {_ip_of(c.address) for c in conns if not c.outbound}
        valid: set[str] = set()
        direct_addrs: set[str] = set()

        def add(address: str) -> None:
            if address in connected_addrs:
                return
            valid.add(address)
            if address not in self.targets:
                target = Target(address)
                target.schedule.try_now(now)
                self.targets[address] = target

        inbound_normalised: set[str] | None = None
        for resolved in self.direct.values():
            if resolved is None:
                continue
            ip, port = resolved
            address = self._complete(ip, port)
            direct_addrs.add(address)
            # A target without a port is satisfied by any inbound connection from its IP.
            if port is None:
                if inbound_normalised is None:
                    inbound_normalised = {_normalise_ip(i) for i in inbound_ips}
                if _normalise_ip(ip) in inbound_normalised:
                    continue
            add(address)

        if self.discovery:
            for peer, remotes in topology.items():
                if peer == us:
                    continue
                for remote, (address, outbound) in remotes.items():
                    if remote == us or remote in connected_peers:
                        continue
                    if outbound:
                        add(address)
                    else:
                        # The far end of an inbound connection is an ephemeral port; try
                        # the weave port on that IP instead.
                        try:
                            add(join_host_port(_ip_of(address), self.port))
                        except ValueError:
                            continue

        attempts: list[Attempt] = []
        wake_at: float | None = None
        for address, target in list(self.targets.items()):
            if target.state != TargetState.WAITING:
                continue
            if address not in valid:
                del self.targets[address]
                continue
            due = target.schedule.try_after
            if due is None:
                continue
            if due <= now:
                target.state = TargetState.ATTEMPTING
                attempts.append(Attempt(address, address in direct_addrs))
            elif wake_at is None or due < wake_at:
                wake_at = due
        return Plan(tuple(attempts), wake_at)


@functools.lru_cache(maxsize=1024)  # a plan asks again for every inbound peer
def _normalise_ip(ip: str) -> str:
    try:
        return str(ipaddress.ip_address(ip))
    except ValueError:
        return ip
