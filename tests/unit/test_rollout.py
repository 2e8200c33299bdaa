"""Rollout safety net: the spec's probes, and their selection against the old spec."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from weaved.daemon.rollout import Probe, Rollout, spec_probes
from weaved.daemon.service import Daemon, DaemonConfig
from weaved.dataplane.fake import FakeDataplane
from weaved.spec.diagnostics import SpecProblems
from weaved.spec.loader import parse_spec_text
from weaved.spec.models import Spec

ROLLOUT = """\
version: 1
rollout:
  confirm: 2m
  probes:
    - ping: 10.32.0.1
    - tcp: "10.32.0.2:80"
    - dns: web.weave.local
    - command: ["true"]
"""


def test_rollout_spec_and_its_probes() -> None:
    spec = parse_spec_text(ROLLOUT)
    assert spec.rollout.confirm == 120 and spec.rollout.default_probes
    assert [p.describe() for p in spec_probes(spec)] == [
        "ping 10.32.0.1",
        "TCP connect to 10.32.0.2:80",
        "web.weave.local. resolves",
        "command 'true' exits 0",
    ]
    assert parse_spec_text("version: 1\nrollout: {confirm: 45}\n").rollout.confirm == 45


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("rollout: {confirm: 0s}", "between 1s and 1h"),
        ("rollout: {confirm: soon}", "60, 60s or 2m"),
        ("rollout: {probes: [{}]}", "exactly one of"),
        ("rollout: {probes: [{ping: 10.0.0.1, dns: a.b}]}", "exactly one of"),
    ],
)
def test_bad_rollout_settings_are_refused(text: str, message: str) -> None:
    with pytest.raises(SpecProblems) as info:
        parse_spec_text(f"version: 1\n{text}\n")
    assert message in str(info.value)


def daemon(tmp_path: Path) -> Daemon:
    (tmp_path / "weave.yaml").write_text("version: 1\n")
    config = DaemonConfig(tmp_path / "weave.yaml", tmp_path / "state", tmp_path / "s.sock")
    return Daemon(config, FakeDataplane)


def test_probes_that_fail_under_the_old_spec_are_not_held_against_the_new(
    tmp_path: Path,
) -> None:
    rollout = Rollout(daemon(tmp_path))
    ok, broken = Probe("command", "true", ("true",)), Probe("command", "false", ("false",))
    assert asyncio.run(rollout.select([ok, broken])) == [ok]


def test_no_safety_net_without_a_confirm_or_a_change(tmp_path: Path) -> None:
    rollout = Rollout(daemon(tmp_path))
    old = parse_spec_text("version: 1\n")
    new = parse_spec_text("version: 1\nrollout: {confirm: 5s}\nconn_limit: 5\n")
    assert asyncio.run(rollout.prepare(None, b"", new, None)) is None  # nothing good yet
    assert asyncio.run(rollout.prepare(new, b"", new, None)) is None  # no change
    assert asyncio.run(rollout.prepare(old, b"", old.model_copy(), None)) is None
    guard = asyncio.run(rollout.prepare(old, b"raw", new, None))
    assert guard is not None and guard.timeout == 5 and guard.good is old
    # `weaved apply --confirm` gives a net to a spec without rollout settings
    plain = parse_spec_text("version: 1\nconn_limit: 7\n")
    forced = asyncio.run(rollout.prepare(old, b"raw", plain, 3))
    assert forced is not None and forced.timeout == 3


def test_failing_probes_are_reported_after_the_timeout(tmp_path: Path) -> None:
    rollout = Rollout(daemon(tmp_path))
    ok, broken = Probe("command", "true", ("true",)), Probe("command", "false", ("false",))
    assert asyncio.run(rollout.failing((ok,), 1.0)) == []
    assert asyncio.run(rollout.failing((ok, broken), 0.6)) == [broken]
    rollout.rolled_back(
        asyncio.run(rollout.prepare(parse_spec_text("version: 1\n"), b"", _with_confirm(), None))
        or pytest.fail("no guard"),
        _with_confirm(),
        "digest",
        [broken],
    )
    assert rollout.rollbacks == 1
    line = rollout.status_line() or ""
    assert line.startswith("rolled back at ") and "command 'false' exits 0: failed" in line


def _with_confirm() -> Spec:
    return parse_spec_text("version: 1\nrollout: {confirm: 1}\n")


def test_a_rolled_back_file_stays_out_of_force_across_a_restart(tmp_path: Path) -> None:
    import hashlib

    from weaved.daemon.rollout import RECORD

    first = daemon(tmp_path)
    assert asyncio.run(first._read_spec())  # the good file, saved as the last good spec
    good = first.state.spec
    bad_text = "version: 1\nrollout: {confirm: 1}\nconn_limit: 3\n"
    first.config.spec_path.write_text(bad_text)
    guard = asyncio.run(first.rollout.prepare(good, b"", _with_confirm(), None))
    assert guard is not None
    digest = hashlib.sha256(bad_text.encode()).hexdigest()
    first.rollout.rolled_back(guard, _with_confirm(), digest, [Probe("peer", "x")])
    assert (tmp_path / "state" / RECORD).exists()

    restarted = daemon_keeping(tmp_path)
    assert not asyncio.run(restarted._read_spec())  # valid, but not taken into force
    assert restarted.state.spec is None and restarted.state.spec_error is None
    assert (restarted.rollout.status_line() or "").endswith("peer x connected: failed")
    copy, raw = restarted._saved_copy()
    assert copy == good and raw == b"version: 1\n"

    restarted.config.spec_path.write_text("version: 1\nconn_limit: 4\n")  # a new content
    assert asyncio.run(restarted._read_spec())
    assert restarted.rollout.last is None and not (tmp_path / "state" / RECORD).exists()


def daemon_keeping(tmp_path: Path) -> Daemon:
    config = DaemonConfig(tmp_path / "weave.yaml", tmp_path / "state", tmp_path / "s.sock")
    return Daemon(config, FakeDataplane)


def test_apply_confirm_checks_a_change_the_daemon_applied_without_a_net(
    tmp_path: Path,
) -> None:
    rollout = Rollout(daemon(tmp_path))
    old = parse_spec_text("version: 1\n")
    new = parse_spec_text("version: 1\nrollout: {probes: [{command: ['false']}]}\nconn_limit: 5\n")
    assert asyncio.run(rollout.prepare(old, b"old", new, None)) is None  # no confirm set
    assert rollout.unguarded(old, b"old", new, None) is None  # remembered, nothing to run
    assert rollout.unguarded(new, b"new", new, None) is None  # a resync: still nothing
    guard = rollout.unguarded(new, b"new", new, 4)  # `weaved apply --confirm 4`
    assert guard is not None and guard.good is old and guard.good_raw == b"old"
    assert guard.timeout == 4 and [p.kind for p in guard.probes] == ["command"]
    assert rollout.unguarded(new, b"new", new, 4) is None  # checked once
