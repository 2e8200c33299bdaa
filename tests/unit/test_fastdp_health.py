"""Fast datapath health: two `PathControl`s wired through a simulated tunnel and TCP link,
with an injected clock. The tunnel can drop everything, only full-size frames (MTU), or one
direction; the path must fall back with the right reason and come back when it heals."""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

import pytest

from weaved.datapath.fastdp.config import Timing
from weaved.datapath.fastdp.frames import SMALL_SIZE, HeartbeatKind
from weaved.datapath.fastdp.health import (
    Action,
    Healthy,
    PathChanged,
    PathControl,
    PathState,
    SendControl,
    SendHeartbeat,
    Unhealthy,
    diagnose,
)
from weaved.datapath.fastdp.messages import Hello, Macs, Unavailable, decode_control

TIMING = Timing(fast_interval=0.5, interval=1.0, timeout=5.0, recover=2)


@dataclass
class Side:
    name: str
    ctl: PathControl
    events: list[tuple[float, str]] = field(default_factory=list)


@dataclass
class Net:
    """The tunnel between a and b: what it drops, per direction."""

    drop_all: set[str] = field(default_factory=set)  # "ab", "ba"
    drop_full: set[str] = field(default_factory=set)
    tcp_log: list[tuple[str, object]] = field(default_factory=list)


class Sim:
    def __init__(self, timing: Timing = TIMING, ready: bool = True) -> None:
        self.now = 100.0
        self.net = Net()
        self.pending: deque[tuple[Side, list[Action]]] = deque()
        self.busy = False
        self.a = Side(
            "a", PathControl(7, port=6784, remote_port=6784, mtu=1450, timing=timing, now=self.now)
        )
        self.b = Side(
            "b", PathControl(7, port=6784, remote_port=None, mtu=1450, timing=timing, now=self.now)
        )
        for side in (self.a, self.b):
            side.ctl.ready = ready

    def other(self, side: Side) -> Side:
        return self.b if side is self.a else self.a

    def run(self, side: Side, actions: list[Action]) -> None:
        """Carry out `side`'s actions; what they cause at the peer is handled after them, in
        order (nothing is delivered while a side is still acting, as with real sockets)."""
        self.pending.append((side, actions))
        if self.busy:
            return
        self.busy = True
        try:
            while self.pending:
                current, todo = self.pending.popleft()
                for action in todo:
                    self._one(current, action)
        finally:
            self.busy = False

    def _one(self, side: Side, action: Action) -> None:
        peer = self.other(side)
        direction = side.name + peer.name
        if isinstance(action, SendHeartbeat):
            if direction in self.net.drop_all:
                return
            if action.kind is HeartbeatKind.FULL and direction in self.net.drop_full:
                return
            self.pending.append((peer, peer.ctl.on_heartbeat(action.kind, action.seq, self.now)))
        elif isinstance(action, SendControl):
            msg = decode_control(action.subtag, action.body)
            self.net.tcp_log.append((direction, msg))
            self.pending.append((peer, peer.ctl.on_control(msg, self.now)))
        elif isinstance(action, Healthy):
            side.events.append((self.now, "healthy"))
        elif isinstance(action, Unhealthy):
            side.events.append((self.now, action.reason))
        elif isinstance(action, PathChanged):
            side.events.append((self.now, "changed"))
            # the reconciler puts the heartbeat entry (new port) in place
            self.pending.append((side, side.ctl.set_ready(True, self.now)))

    def confirm(self) -> None:
        self.run(self.a, self.a.ctl.confirm(self.now))
        self.run(self.b, self.b.ctl.confirm(self.now))

    def advance(self, until: float) -> None:
        """Fire timers in order up to `until`."""
        while True:
            due = [
                (d, s)
                for s in (self.a, self.b)
                if (d := s.ctl.next_deadline()) is not None and d <= until
            ]
            if not due:
                break
            when, side = min(due, key=lambda x: x[0])
            self.now = max(self.now, when)
            self.run(side, side.ctl.on_timer(self.now))
        self.now = until

    def states(self) -> tuple[PathState, PathState]:
        return self.a.ctl.state, self.b.ctl.state


def test_healthy_within_a_round_trip_and_hello_teaches_the_port() -> None:
    sim = Sim()
    sim.confirm()
    assert sim.states() == (PathState.HEALTHY, PathState.HEALTHY)
    assert sim.b.ctl.remote_port == 6784  # the acceptor learnt it from the hello
    assert ("ab", Hello(6784)) in sim.net.tcp_log
    assert sim.a.events[-1] == (100.0, "healthy")
    # fast beats until the first ack, then one per interval
    sim.advance(110.0)
    assert sim.a.ctl.sent == 11 and sim.states() == (PathState.HEALTHY, PathState.HEALTHY)


def test_blocked_port_falls_back_with_reason_and_recovers() -> None:
    sim = Sim()
    sim.confirm()
    sim.advance(110.0)
    sim.net.drop_all = {"ab", "ba"}  # nft drops udp dport 6784
    sim.advance(120.0)
    assert sim.states() == (PathState.UNHEALTHY, PathState.UNHEALTHY)
    when, reason = sim.a.events[-1]
    assert reason == "fastdp unhealthy: no heartbeats through VXLAN (UDP 6784) for 5s"
    assert 114.0 < when <= 115.1  # the last good beat (109.5-110) plus the 5 s timeout
    sim.net.drop_all = set()
    sim.advance(121.0)
    assert sim.states() == (PathState.UNHEALTHY, PathState.UNHEALTHY)  # one round is not enough
    sim.advance(122.0)
    assert sim.states() == (PathState.HEALTHY, PathState.HEALTHY)
    assert sim.a.events[-1][1] == "healthy"


def test_recovery_wording_while_heartbeats_return() -> None:
    sim = Sim(timing=Timing(fast_interval=0.5, interval=1.0, timeout=5.0, recover=3))
    sim.confirm()
    sim.net.drop_all = {"ab", "ba"}
    sim.advance(110.0)
    sim.net.drop_all = set()
    sim.advance(112.0)  # two rounds passed both ways, three are needed
    assert sim.a.ctl.reason == "fastdp recovering: waiting for heartbeats both ways"
    sim.advance(113.0)
    assert sim.states() == (PathState.HEALTHY, PathState.HEALTHY)


def test_mtu_too_small_is_told_apart() -> None:
    sim = Sim()
    sim.confirm()
    sim.net.drop_full = {"ab", "ba"}
    sim.advance(110.0)
    assert sim.a.ctl.state is PathState.UNHEALTHY
    assert sim.a.ctl.reason == (
        "fastdp unhealthy: MTU too small: 1464-byte frames through VXLAN are lost, small ones pass"
    )


def test_one_way_loss_names_the_direction() -> None:
    sim = Sim()
    sim.confirm()
    sim.net.drop_all = {"ab"}
    sim.advance(110.0)
    assert sim.states() == (PathState.UNHEALTHY, PathState.UNHEALTHY)
    assert "the peer gets no heartbeats from us" in sim.a.ctl.reason
    assert "no heartbeats from the peer" in sim.b.ctl.reason


def test_never_healthy_times_out_from_probing() -> None:
    sim = Sim()
    sim.net.drop_all = {"ab", "ba"}
    sim.confirm()
    assert sim.states() == (PathState.PROBING, PathState.PROBING)
    sim.advance(104.9)
    assert sim.states() == (PathState.PROBING, PathState.PROBING)
    sim.advance(105.1)
    assert sim.states() == (PathState.UNHEALTHY, PathState.UNHEALTHY)
    assert sim.a.events == [
        (105.0, "fastdp unhealthy: no heartbeats through VXLAN (UDP 6784) for 5s")
    ]


def test_no_heartbeats_until_the_kernel_is_ready() -> None:
    sim = Sim(ready=False)
    sim.confirm()
    assert sim.a.ctl.sent == 0 and sim.states() == (PathState.PROBING, PathState.PROBING)
    sim.run(sim.a, sim.a.ctl.set_ready(True, sim.now))
    sim.run(sim.b, sim.b.ctl.set_ready(True, sim.now))
    assert sim.states() == (PathState.HEALTHY, PathState.HEALTHY)


def test_local_problem_and_peer_unavailable() -> None:
    sim = Sim()
    sim.confirm()
    sim.run(sim.a, sim.a.ctl.set_blocked("no VXLAN support", sim.now))
    assert sim.a.ctl.reason == "fastdp unavailable here: no VXLAN support"
    assert sim.b.ctl.reason == "fastdp unavailable at the peer: no VXLAN support"
    assert ("ab", Unavailable("no VXLAN support")) in sim.net.tcp_log
    sim.run(sim.a, sim.a.ctl.set_blocked(None, sim.now))  # fixed: hello again
    sim.advance(sim.now + 3.0)
    assert sim.states() == (PathState.HEALTHY, PathState.HEALTHY)


def test_blocked_before_confirm_is_said_at_confirm() -> None:
    sim = Sim()
    sim.a.ctl.set_blocked("no raw sockets", sim.now)
    sim.confirm()
    assert sim.net.tcp_log[0] == ("ab", Unavailable("no raw sockets"))
    assert sim.states() == (PathState.UNHEALTHY, PathState.UNHEALTHY)


def test_macs_and_port_changes_are_reported() -> None:
    sim = Sim()
    sim.confirm()
    macs = Macs(frozenset({"02:42:0a:00:00:01"}))
    actions = sim.b.ctl.on_control(macs, sim.now)
    assert PathChanged() in actions and sim.b.ctl.remote_macs == macs.macs
    assert PathChanged() not in sim.b.ctl.on_control(macs, sim.now)  # same set: nothing to do
    actions = sim.b.ctl.on_control(Hello(6790), sim.now)
    assert PathChanged() in actions and sim.b.ctl.remote_port == 6790
    assert not sim.b.ctl.ready  # the kernel entry points at the old port until reconverged


def test_heartbeat_sizes_follow_the_mtu() -> None:
    ctl = PathControl(1, port=6784, remote_port=6784, mtu=1450, timing=TIMING, now=0.0)
    ctl.ready = True
    sends = [a for a in ctl.confirm(0.0) if isinstance(a, SendHeartbeat)]
    assert [(s.kind, s.length) for s in sends] == [
        (HeartbeatKind.SMALL, SMALL_SIZE),
        (HeartbeatKind.FULL, 1464),
    ]
    ctl.set_mtu(1376)
    sends = [a for a in ctl.on_timer(0.5) if isinstance(a, SendHeartbeat)]
    assert sends[1].length == 1390


def test_starting_does_nothing() -> None:
    ctl = PathControl(1, port=6784, remote_port=6784, mtu=1450, timing=TIMING, now=0.0)
    assert ctl.next_deadline() is None
    assert ctl.on_timer(100.0) == []
    assert ctl.set_ready(True, 0.0) == []


@pytest.mark.parametrize(
    ("rx", "ack", "expect"),
    [
        ({"small": 9, "full": 9}, {"small": 9, "full": 9}, ""),
        ({"small": None, "full": None}, {"small": None, "full": None}, "no heartbeats through"),
        ({"small": 9, "full": None}, {"small": 9, "full": None}, "MTU too small: 1464"),
        ({"small": 9, "full": 9}, {"small": 9, "full": None}, "MTU too small towards"),
        ({"small": 9, "full": 9}, {"small": None, "full": None}, "the peer gets no heartbeats"),
        ({"small": 9, "full": None}, {"small": 9, "full": 9}, "MTU too small from"),
        ({"small": None, "full": None}, {"small": 9, "full": 9}, "no heartbeats from the peer"),
        ({"small": 1, "full": 1}, {"small": 1, "full": 1}, "no heartbeats through"),  # stale
    ],
)
def test_diagnose(rx: dict[str, float | None], ack: dict[str, float | None], expect: str) -> None:
    def kinds(d: dict[str, float | None]) -> dict[HeartbeatKind, float | None]:
        return {HeartbeatKind.SMALL: d["small"], HeartbeatKind.FULL: d["full"]}

    text = diagnose(10.0, 5.0, port=6784, full_size=1464, received=kinds(rx), acked=kinds(ack))
    assert text.startswith(expect) if expect else text == ""


def test_standby_on_relaying_links_and_back() -> None:
    sim = Sim()
    sim.confirm()
    sim.advance(103.0)
    sim.run(sim.a, sim.a.ctl.set_standby("relays", sim.now))
    assert sim.states() == (PathState.UNHEALTHY, PathState.HEALTHY)  # each end decides
    assert sim.a.ctl.reason == "fastdp standby: relays"
    sim.advance(106.0)  # heartbeats go on meanwhile
    assert sim.a.ctl.reason == "fastdp standby: relays"
    sim.run(sim.a, sim.a.ctl.set_standby(None, sim.now))
    assert sim.states() == (PathState.HEALTHY, PathState.HEALTHY)  # no new proof needed
