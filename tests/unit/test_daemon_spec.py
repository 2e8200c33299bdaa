"""The daemon's hold on its spec: refused edits and loader crashes are reported (never
"(valid)"), a fixed password file is picked up without an edit, the last good spec is kept on
disk and started from, and SIGTERM stops the daemon whatever converge is doing."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from weaved.daemon.lastgood import last_good_path, load_start_spec
from weaved.daemon.service import Daemon, DaemonConfig
from weaved.dataplane.fake import FakeDataplane
from weaved.errors import DaemonError, SpecError

REPO = Path(__file__).resolve().parents[2]
GOOD = "version: 1\ndatapath: {mtu: 1400}\n"


def read(daemon: Daemon) -> bool:
    return asyncio.run(daemon._read_spec())


def make_daemon(tmp_path: Path, text: str = GOOD) -> Daemon:
    spec = tmp_path / "weave.yaml"
    spec.write_text(text)
    config = DaemonConfig(spec, tmp_path / "state", tmp_path / "weaved.sock")
    return Daemon(config, FakeDataplane)


def test_a_crash_inside_the_loader_is_reported_not_valid(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    daemon = make_daemon(tmp_path)
    assert read(daemon) and daemon.state.spec is not None

    def explode(*_args: object, **_kw: object) -> None:
        raise RuntimeError("loader bug")

    monkeypatch.setattr("weaved.daemon.service.parse_spec_bytes", explode)
    daemon.config.spec_path.write_text(GOOD.replace("1400", "1300"))
    assert not read(daemon)
    section = daemon.reconciler_section()
    assert "(valid)" not in section and "INVALID" in section
    assert "internal error while loading" in section and "loader bug" in section
    assert daemon.state.spec is not None and daemon.state.spec.mtu == 1400


def test_a_fixed_password_file_clears_the_error_without_an_edit(tmp_path: Path) -> None:
    password = tmp_path / "pw"
    password.write_text("s3cret\n")
    password.chmod(0o644)
    daemon = make_daemon(tmp_path, f"version: 1\npassword_file: {password}\n")
    assert not read(daemon)
    assert "readable by everyone" in (daemon.state.spec_error or "")
    password.chmod(0o600)
    assert read(daemon)  # what the next resync does
    assert daemon.state.spec_error is None and "(valid)" in daemon.reconciler_section()


def test_the_last_good_spec_is_kept_and_started_from(tmp_path: Path) -> None:
    daemon = make_daemon(tmp_path)
    assert read(daemon)
    copy = last_good_path(tmp_path / "state")
    assert copy.read_text() == GOOD
    spec_path = daemon.config.spec_path
    spec_path.write_text("version: 1\ndatapath: {mtu: 12}\n")
    assert not read(daemon)
    assert copy.read_text() == GOOD  # a refused spec never replaces the copy
    spec, problem = load_start_spec(spec_path, tmp_path / "state")
    assert spec.mtu == 1400 and problem is not None and "datapath.mtu" in problem
    copy.unlink()
    with pytest.raises(SpecError):
        load_start_spec(spec_path, tmp_path / "state")


SCRIPT = """
import asyncio, sys
from pathlib import Path
from weaved.part import Component
from weaved.daemon.lastgood import load_start_spec
from weaved.daemon.service import Daemon, DaemonConfig
from weaved.dataplane.fake import FakeDataplane
from weaved.errors import ApplyError

mode, spec, state, sock = sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3]), Path(sys.argv[4])

class Part(Component):
    async def start(self, daemon):
        if mode == "start-hangs":
            await asyncio.Event().wait()
    def converge(self, spec):
        if mode == "converge-raises":
            raise RuntimeError("always fails")
        if mode == "converge-fails":
            raise ApplyError("the kernel says no")
        return 0

start_spec, _ = load_start_spec(spec, state)
config = DaemonConfig(spec, state, sock, resync_seconds=0.05)
daemon = Daemon(config, FakeDataplane, [Part()], start_spec=start_spec)
print("running", flush=True)
sys.exit(asyncio.run(daemon.run()))
"""


def _start(tmp_path: Path, mode: str) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    argv = [sys.executable, "-c", SCRIPT, mode, str(tmp_path / "weave.yaml")]
    argv += [str(tmp_path / "state"), str(tmp_path / "weaved.sock")]
    return subprocess.Popen(
        argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )


@pytest.mark.parametrize("mode", ["converge-raises", "converge-fails", "start-hangs"])
def test_sigterm_stops_the_daemon_whatever_converge_is_doing(tmp_path: Path, mode: str) -> None:
    (tmp_path / "weave.yaml").write_text(GOOD)
    proc = _start(tmp_path, mode)
    try:
        assert proc.stdout is not None and proc.stdout.readline() == "running\n"
        time.sleep(1.0)  # converging (and failing) over and over, or stuck starting
        assert proc.poll() is None
        proc.send_signal(signal.SIGTERM)
        start = time.monotonic()
        code = proc.wait(timeout=5)
        assert code == 0, proc.stdout.read()
        assert time.monotonic() - start < 3.0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_a_bad_spec_at_restart_runs_the_last_good_one(tmp_path: Path) -> None:
    from weaved.control import Client

    (tmp_path / "weave.yaml").write_text(GOOD)
    daemon = make_daemon(tmp_path)
    assert read(daemon)  # as a daemon running earlier did: the copy is saved
    (tmp_path / "weave.yaml").write_text("version: 1\ndatapath: {mtu: 12}\n")
    proc = _start(tmp_path, "ok")
    try:
        client = Client(str(tmp_path / "weaved.sock"), timeout=2)
        deadline = time.monotonic() + 15
        status: dict[str, Any] = {}
        while time.monotonic() < deadline:
            try:  # the socket file exists a moment before it listens (bind, then listen)
                status = client.call("GET", "/status")
            except DaemonError:
                status = {}
            if status.get("converges"):
                break
            time.sleep(0.05)
        assert status, "the daemon never answered on its socket"
        assert status["spec_from_last_good"] and "datapath.mtu" in status["spec_error"]
        assert status["last"]["error"] is None  # converged, on the last good spec
        text = client.call("GET", "/status/text")
        assert "INVALID since start; running the last good spec saved in" in text
        with pytest.raises(DaemonError, match=r"datapath\.mtu"):
            client.call("POST", "/plan", {})
        # Fixed: the file is in force again.
        (tmp_path / "weave.yaml").write_text(GOOD.replace("1400", "1350"))
        while time.monotonic() < deadline:
            status = client.call("GET", "/status")
            if status["spec_error"] is None:
                break
            time.sleep(0.05)
        assert status["spec_error"] is None and not status["spec_from_last_good"]
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0


def test_dropping_the_password_file_from_the_spec_does_not_stop_the_daemon(
    tmp_path: Path,
) -> None:
    """Cancelling watchfiles' awatch sets the stop event it was given: the password file's
    watcher must never be given the daemon's own."""
    password = tmp_path / "pw"
    password.write_text("s3cret\n")
    password.chmod(0o600)
    daemon = make_daemon(tmp_path, f"version: 1\npassword_file: {password}\n")

    async def scenario() -> bool:
        assert await daemon._read_spec()
        await asyncio.sleep(0.3)  # the watcher runs
        daemon.config.spec_path.write_text(GOOD)
        assert await daemon._read_spec()
        await asyncio.sleep(1.5)
        stopped = daemon.stopping.is_set()
        daemon.stopping.set()
        watch = daemon._password_watch[1]
        if watch is not None:
            await asyncio.gather(watch, return_exceptions=True)
        return stopped

    assert asyncio.run(scenario()) is False
