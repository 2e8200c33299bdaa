"""Retry delays, the accept limiter and the connection maker's plans, with an injected clock."""

from __future__ import annotations

import random

import pytest

from weaved.backoff import INITIAL_INTERVAL, MAX_INTERVAL, RetrySchedule, TokenBucket
from weaved.mesh.gossip_api import PeerName
from weaved.mesh.targets import (
    ConnectionMaker,
    LiveConnection,
    TargetState,
    join_host_port,
    split_target,
)

US = PeerName(1)


def test_retry_delays_grow_by_half_and_cap() -> None:
    rng = random.Random(7)
    s = RetrySchedule()
    s.try_now(100.0)
    assert s.try_after == 100.0 and s.interval == INITIAL_INTERVAL
    now = 100.0
    interval = INITIAL_INTERVAL
    for _ in range(30):
        s.try_later(now, rng)
        assert s.try_after is not None
        delay = s.try_after - now
        assert interval / 2 <= delay < 3 * interval / 2
        interval = min(interval * 1.5, MAX_INTERVAL)
        assert s.interval == interval
    assert s.interval == MAX_INTERVAL
    s.try_never()
    assert s.try_after is None


def test_long_lived_connection_resets_backoff() -> None:
    rng = random.Random(1)
    s = RetrySchedule()
    s.try_now(0.0)
    s.try_later(0.0, rng)
    s.try_later(0.0, rng)
    due = s.try_after
    assert due is not None
    s.after_connection_ended(due + 61.0, rng)
    assert s.try_after == due + 61.0 and s.interval == INITIAL_INTERVAL
    s.after_connection_ended(due + 62.0, rng)  # ended soon after: back off
    assert s.try_after is not None and s.try_after > due + 62.0


def test_token_bucket_allows_bursts_then_paces() -> None:
    b = TokenBucket(100, 0.1, now=0.0)
    assert all(b.take(0.0) == 0.0 for _ in range(100))
    assert b.take(0.0) == pytest.approx(0.1)
    assert b.take(0.0) == pytest.approx(0.2)
    assert b.take(100.0) == 0.0  # refilled


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("192.0.2.1", ("192.0.2.1", None)),
        ("192.0.2.1:7000", ("192.0.2.1", 7000)),
        ("host2", ("host2", None)),
        ("host2:6783", ("host2", 6783)),
        ("[fd00::1]:6783", ("fd00::1", 6783)),
    ],
)
def test_split_target(spec: str, expected: tuple[str, int | None]) -> None:
    assert split_target(spec) == expected


def test_split_target_rejects_bad_port() -> None:
    with pytest.raises(ValueError):
        split_target("host:port")
    assert join_host_port("fd00::1", 1) == "[fd00::1]:1"


def _maker(discovery: bool = True) -> ConnectionMaker:
    return ConnectionMaker(6783, discovery, random.Random(3))


def test_direct_targets_attempted_and_backed_off() -> None:
    cm = _maker()
    cm.set_direct(["192.0.2.1", "192.0.2.9:7000"], now=0.0)
    cm.resolved("192.0.2.1", "192.0.2.1", None, 0.0)
    cm.resolved("192.0.2.9:7000", "192.0.2.9", 7000, 0.0)
    plan = cm.plan(0.0, [], {}, US)
    assert {(a.address, a.direct) for a in plan.attempts} == {
        ("192.0.2.1:6783", True),
        ("192.0.2.9:7000", True),
    }
    assert cm.plan(0.0, [], {}, US).attempts == ()  # already attempting
    cm.attempt_failed("192.0.2.1:6783", "dial tcp: connection refused", now=0.0)
    target = cm.targets["192.0.2.1:6783"]
    assert target.state == TargetState.WAITING and target.last_error
    plan = cm.plan(0.5, [], {}, US)
    assert plan.attempts == () and plan.wake_at == target.schedule.try_after
    assert cm.plan(10.0, [], {}, US).attempts[0].address == "192.0.2.1:6783"


def test_connected_and_inbound_satisfy_targets() -> None:
    cm = _maker()
    cm.set_direct(["192.0.2.1", "192.0.2.5:6783"], now=0.0)
    cm.resolved("192.0.2.1", "192.0.2.1", None, 0.0)
    cm.resolved("192.0.2.5:6783", "192.0.2.5", 6783, 0.0)
    live = [
        LiveConnection(PeerName(2), "192.0.2.1:40000", outbound=False),  # port-less target: ok
        LiveConnection(PeerName(5), "192.0.2.5:6783", outbound=True),
    ]
    assert cm.plan(0.0, live, {}, US).attempts == ()


def test_inbound_does_not_satisfy_target_with_port() -> None:
    cm = _maker()
    cm.set_direct(["192.0.2.1:6783"], now=0.0)
    cm.resolved("192.0.2.1:6783", "192.0.2.1", 6783, 0.0)
    live = [LiveConnection(PeerName(2), "192.0.2.1:40000", outbound=False)]
    assert [a.address for a in cm.plan(0.0, live, {}, US).attempts] == ["192.0.2.1:6783"]


def test_discovery_targets() -> None:
    a, b, c, d = PeerName(2), PeerName(3), PeerName(4), PeerName(5)
    topology = {
        US: {a: ("192.0.2.2:6783", True)},
        a: {
            US: ("192.0.2.1:55555", False),
            b: ("192.0.2.3:6783", True),
            c: ("192.0.2.4:41000", False),
        },
        b: {d: ("192.0.2.9:6783", True)},
    }
    live = [LiveConnection(a, "192.0.2.2:6783", outbound=True)]
    plan = _maker().plan(0.0, live, topology, US)
    assert sorted((x.address, x.direct) for x in plan.attempts) == [
        ("192.0.2.3:6783", False),
        ("192.0.2.4:6783", False),  # inbound: the weave port on that IP
        ("192.0.2.9:6783", False),
    ]
    assert _maker(discovery=False).plan(0.0, live, topology, US).attempts == ()


def test_stale_targets_dropped_and_never_retry() -> None:
    cm = _maker()
    cm.set_direct(["192.0.2.1"], now=0.0)
    cm.resolved("192.0.2.1", "192.0.2.1", None, 0.0)
    cm.plan(0.0, [], {}, US)
    cm.connection_created("192.0.2.1:6783", outbound=True)
    assert cm.targets["192.0.2.1:6783"].state == TargetState.CONNECTED
    cm.connection_ended("192.0.2.1:6783", True, "Cannot connect to ourself", 1.0, retry=False)
    assert cm.targets["192.0.2.1:6783"].schedule.try_after is None
    assert cm.plan(1000.0, [], {}, US).attempts == ()
    cm.forget_direct(["192.0.2.1"])
    cm.plan(1000.0, [], {}, US)
    assert cm.targets == {}


def test_set_direct_curtails_backoff() -> None:
    cm = _maker()
    cm.set_direct(["192.0.2.1"], now=0.0)
    cm.resolved("192.0.2.1", "192.0.2.1", None, 0.0)
    cm.plan(0.0, [], {}, US)
    for t in range(5):
        cm.attempt_failed("192.0.2.1:6783", "refused", float(t))
    cm.set_direct(["192.0.2.1"], now=50.0)
    assert [a.address for a in cm.plan(50.0, [], {}, US).attempts] == ["192.0.2.1:6783"]
    assert cm.unresolved_specs() == []
