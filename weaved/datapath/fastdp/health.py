"""Per-connection control of the fast datapath: heartbeats, acks, health. Pure (sans-I/O).

`PathControl` takes events (`confirm`, a heartbeat or a control message arrived, the timer,
the kernel is ready, a local problem) with the time as an argument and returns actions for
the shell: send a heartbeat or a control message, the path became healthy / unhealthy, the
kernel objects for this peer must change.

A path is *good* when, within `timeout`, a full-size heartbeat arrived from the peer AND the
peer acknowledged a full-size heartbeat of ours: both directions carry MTU-sized frames.
    probing   → healthy    when good
    probing   → unhealthy  when not good `timeout` after the connection was confirmed
    healthy   → unhealthy  when no longer good
    unhealthy → healthy    when good again and `recover` full heartbeats passed each way
A local problem (no VXLAN device) or the peer's "unavailable" makes it unhealthy at once, and
so does `standby` (the link carries relayed traffic, which must go through sleeve); heartbeats
go on meanwhile, so the path is back as soon as the cause goes.
The reason says what is wrong, telling a blocked port from a too-small MTU (small heartbeats
still pass) and one direction from both.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from weaved.datapath.fastdp.config import Timing
from weaved.datapath.fastdp.frames import ETHERNET_HEADER, SMALL_SIZE, HeartbeatKind
from weaved.datapath.fastdp.messages import (
    Ack,
    ControlMessage,
    Hello,
    Macs,
    Unavailable,
    encode_control,
)

__all__ = [
    "Action",
    "Healthy",
    "PathChanged",
    "PathControl",
    "PathState",
    "SendControl",
    "SendHeartbeat",
    "Unhealthy",
    "diagnose",
]


class PathState(StrEnum):
    STARTING = "starting"  # prepared, not confirmed yet
    PROBING = "probing"
    HEALTHY = "healthy"
    UNHEALTHY = "unhealthy"


@dataclass(frozen=True)
class SendHeartbeat:
    kind: HeartbeatKind
    seq: int
    length: int


@dataclass(frozen=True)
class SendControl:
    subtag: int
    body: bytes


@dataclass(frozen=True)
class Healthy:
    pass


@dataclass(frozen=True)
class Unhealthy:
    reason: str


@dataclass(frozen=True)
class PathChanged:
    """What the kernel should hold for this peer changed (port, MACs)."""


Action = SendHeartbeat | SendControl | Healthy | Unhealthy | PathChanged

_KINDS = (HeartbeatKind.SMALL, HeartbeatKind.FULL)


def _fresh(at: float | None, now: float, timeout: float) -> bool:
    return at is not None and now - at <= timeout


def diagnose(
    now: float,
    timeout: float,
    *,
    port: int,
    full_size: int,
    received: dict[HeartbeatKind, float | None],
    acked: dict[HeartbeatKind, float | None],
) -> str:
    """Why a path is not good, from when heartbeats of each kind last arrived (`received`)
    and were last acknowledged by the peer (`acked`)."""
    rx_full = _fresh(received[HeartbeatKind.FULL], now, timeout)
    rx_small = _fresh(received[HeartbeatKind.SMALL], now, timeout)
    ack_full = _fresh(acked[HeartbeatKind.FULL], now, timeout)
    ack_small = _fresh(acked[HeartbeatKind.SMALL], now, timeout)
    since = f"for {timeout:g}s"
    if rx_full and ack_full:
        return ""
    if rx_full:  # they reach us, we do not reach them
        if ack_small:
            return (
                f"MTU too small towards the peer: {full_size}-byte frames through VXLAN are "
                "lost, small ones pass"
            )
        return f"the peer gets no heartbeats from us through VXLAN (UDP {port}) {since}"
    if ack_full:  # we reach them, they do not reach us
        if rx_small:
            return (
                "MTU too small from the peer: its full-size frames through VXLAN are lost, "
                "small ones pass"
            )
        return f"no heartbeats from the peer through VXLAN (UDP {port}) {since}"
    if rx_small or ack_small:
        return f"MTU too small: {full_size}-byte frames through VXLAN are lost, small ones pass"
    return f"no heartbeats through VXLAN (UDP {port}) {since}"


class PathControl:
    def __init__(
        self,
        conn_uid: int,
        *,
        port: int,
        remote_port: int | None,
        mtu: int,
        timing: Timing,
        now: float,
    ) -> None:
        self.conn_uid = conn_uid
        self.port = port  # ours, announced in hello
        self.remote_port = remote_port  # where the peer's VXLAN listens; None until hello
        self.mtu = mtu
        self.timing = timing
        self.state = PathState.STARTING
        self.reason = ""
        self.ready = False  # the kernel can carry heartbeats to the peer
        self.blocked: str | None = None  # a problem here
        self.remote_blocked: str | None = None  # the peer's problem
        self.standby: str | None = None  # fastdp works but must not be used (relayed paths)
        self.remote_macs: frozenset[str] = frozenset()
        self.macs_at = 0.0
        self.received: dict[HeartbeatKind, float | None] = dict.fromkeys(_KINDS)
        self.acked: dict[HeartbeatKind, float | None] = dict.fromkeys(_KINDS)
        self.sent = 0  # heartbeat rounds
        self._started = now
        self._acked_once = False
        self._rx_since_fail = 0
        self._ack_since_fail = 0
        self._next_send: float | None = None

    # --- views ------------------------------------------------------------------------------
    @property
    def healthy(self) -> bool:
        return self.state is PathState.HEALTHY

    @property
    def full_size(self) -> int:
        return self.mtu + ETHERNET_HEADER

    def next_deadline(self) -> float | None:
        if self.state is PathState.STARTING:
            return None
        times = [t for t in (self._next_send, self._evaluate_at()) if t is not None]
        return min(times) if times else None

    # --- events -----------------------------------------------------------------------------
    def confirm(self, now: float) -> list[Action]:
        if self.state is not PathState.STARTING:
            return []
        self.state = PathState.PROBING
        self._started = now
        actions: list[Action] = [self._availability()]
        if self.ready:
            self._next_send = now
        return actions + self._tick(now)

    def set_ready(self, ready: bool, now: float) -> list[Action]:
        if ready == self.ready:
            return []
        self.ready = ready
        self._next_send = now if ready and self.state is not PathState.STARTING else None
        return self._tick(now)

    def set_blocked(self, reason: str | None, now: float) -> list[Action]:
        if reason == self.blocked:
            return []
        self.blocked = reason
        actions: list[Action] = []
        if self.state is not PathState.STARTING:
            actions.append(self._availability())
        return actions + self._tick(now)

    def set_standby(self, reason: str | None, now: float) -> list[Action]:
        if reason == self.standby:
            return []
        self.standby = reason
        return self._tick(now)

    def set_mtu(self, mtu: int) -> None:
        self.mtu = mtu

    def on_heartbeat(self, kind: HeartbeatKind, seq: int, now: float) -> list[Action]:
        self.received[kind] = now
        if kind is HeartbeatKind.FULL:
            self._rx_since_fail += 1
        body = encode_control(Ack(kind, seq))
        return [SendControl(*body), *self._tick(now)]

    def on_control(self, msg: ControlMessage, now: float) -> list[Action]:
        actions: list[Action] = []
        if isinstance(msg, Ack):
            self.acked[msg.kind] = now
            if msg.kind is HeartbeatKind.FULL:
                self._acked_once = True
                self._ack_since_fail += 1
        elif isinstance(msg, Hello):
            self.remote_blocked = None
            if msg.port != self.remote_port:
                self.remote_port = msg.port
                actions.append(PathChanged())
                if self.ready:  # the entry points at the old port: wait for the new one
                    self.ready = False
                    self._next_send = None
        elif isinstance(msg, Unavailable):
            self.remote_blocked = msg.reason
        elif isinstance(msg, Macs) and msg.macs != self.remote_macs:
            self.remote_macs = msg.macs
            self.macs_at = now
            actions.append(PathChanged())
        return actions + self._tick(now)

    def on_timer(self, now: float) -> list[Action]:
        return self._tick(now, timer=True)

    # --- internals ----------------------------------------------------------------------------
    def _availability(self) -> SendControl:
        if self.blocked is not None:
            return SendControl(*encode_control(Unavailable(self.blocked)))
        return SendControl(*encode_control(Hello(self.port)))

    def _interval(self) -> float:
        if self.state is PathState.PROBING and not self._acked_once:
            return self.timing.fast_interval
        return self.timing.interval

    def _evaluate_at(self) -> float | None:
        timeout = self.timing.timeout
        if self.state is PathState.PROBING:
            return self._started + timeout
        if self.state is PathState.HEALTHY:
            rx, ack = self.received[HeartbeatKind.FULL], self.acked[HeartbeatKind.FULL]
            if rx is None or ack is None:
                return None
            return min(rx, ack) + timeout + 1e-6
        return None

    def _tick(self, now: float, timer: bool = False) -> list[Action]:
        actions: list[Action] = []
        if self.state is PathState.STARTING:
            return actions
        if self.ready and self._next_send is not None and now >= self._next_send:
            self.sent += 1
            actions.append(SendHeartbeat(HeartbeatKind.SMALL, self.sent, SMALL_SIZE))
            actions.append(SendHeartbeat(HeartbeatKind.FULL, self.sent, self.full_size))
            self._next_send = now + self._interval()
        return actions + self._evaluate(now, timer)

    def _problem(self, now: float) -> str:
        if self.blocked is not None:
            return f"fastdp unavailable here: {self.blocked}"
        if self.remote_blocked is not None:
            return f"fastdp unavailable at the peer: {self.remote_blocked}"
        if self.standby is not None:
            return f"fastdp standby: {self.standby}"
        why = diagnose(
            now,
            self.timing.timeout,
            port=self.remote_port or self.port,
            full_size=self.full_size,
            received=self.received,
            acked=self.acked,
        )
        return f"fastdp unhealthy: {why}" if why else ""

    def _evaluate(self, now: float, timer: bool) -> list[Action]:
        """Events can only make a path healthy; an unhealthy path's reason is re-diagnosed on
        the timer, when a whole round of heartbeats had its chance (no half-round guesses)."""
        problem = self._problem(now)
        state = self.state
        if state is PathState.PROBING:
            if not problem:
                return self._become_healthy()
            told = self._told()
            if told or now - self._started >= self.timing.timeout:
                return self._become_unhealthy(problem)
            return []
        if state is PathState.HEALTHY:
            if not problem:
                return []
            proven = self.standby is not None and not (self.blocked or self.remote_blocked)
            actions = self._become_unhealthy(problem)
            if proven:  # standing by is no failure: the path needs no new proof when it ends
                self._rx_since_fail = self._ack_since_fail = self.timing.recover
            return actions
        # unhealthy
        recovered = (
            self._rx_since_fail >= self.timing.recover
            and self._ack_since_fail >= self.timing.recover
        )
        if not problem and recovered:
            return self._become_healthy()
        problem = problem or "fastdp recovering: waiting for heartbeats both ways"
        if problem != self.reason and (timer or self._told()):
            self.reason = problem
            return [Unhealthy(problem)]
        return []

    def _told(self) -> bool:
        """Unusable for a reason we were told, not one we measured."""
        return any(r is not None for r in (self.blocked, self.remote_blocked, self.standby))

    def _become_healthy(self) -> list[Action]:
        self.state = PathState.HEALTHY
        self.reason = ""
        return [Healthy()]

    def _become_unhealthy(self, reason: str) -> list[Action]:
        self.state = PathState.UNHEALTHY
        self.reason = reason
        self._rx_since_fail = 0
        self._ack_since_fail = 0
        return [Unhealthy(reason)]
