"""`weaved daemon` as systemd runs it (NOTIFY_SOCKET, WATCHDOG_USEC, JOURNAL_STREAM given the
way systemd gives them): sd_notify messages, journald-native and quiet logs when idle, exit
statuses that make the unit's Restart=always / RestartPreventExitStatus=3 do the right thing."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers import Netns, netns, wait_for

SPEC = 'version: 1\npeer: {name: "3e:80:e7:5a:63:b8"}\nexpose: [{cidr: 10.2.1.1/24}]\n'


class Service:
    """One daemon process in `ns`, its notify socket and its stderr (the 'journal')."""

    def __init__(self, ns: Netns, work: Path) -> None:
        self.ns, self.work = ns, work
        self.spec = work / "weave.yaml"
        self.spec.write_text(SPEC)
        self.journal = work / "journal"
        self.journal.touch()
        self.notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.notify.bind(str(work / "notify"))
        self.notify.settimeout(0.2)
        self.messages: list[str] = []
        self._lock = threading.Lock()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        status = os.stat(self.journal)
        env = dict(
            os.environ,
            NOTIFY_SOCKET=str(self.work / "notify"),
            WATCHDOG_USEC="400000",
            JOURNAL_STREAM=f"{status.st_dev}:{status.st_ino}",
        )
        argv = [
            *["ip", "netns", "exec", self.ns.name, sys.executable, "-m", "weaved"],
            *["-f", str(self.spec), "--state-dir", str(self.work / "state")],
            *["--socket", str(self.work / "weaved.sock"), "daemon", "--resync", "1"],
        ]
        with open(self.journal, "ab") as stderr:
            self.proc = subprocess.Popen(
                argv, stdout=stderr, stderr=stderr, env=env, start_new_session=True
            )

    def _read(self) -> None:
        """Drain the socket as systemd does (a full queue would drop the daemon's messages)."""
        while self.notify.fileno() != -1:
            try:
                message = self.notify.recv(4096).decode()
            except (TimeoutError, OSError):
                continue
            with self._lock:
                self.messages.append(message)

    def receive(self) -> list[str]:
        with self._lock:
            return list(self.messages)

    def clear(self) -> None:
        with self._lock:
            self.messages.clear()

    def wait_message(self, text: str, timeout: float = 30) -> None:
        wait_for(lambda: any(text in m for m in self.receive()), timeout=timeout, interval=0.05)

    def signal(self, sig: int) -> int:
        assert self.proc is not None
        self.proc.send_signal(sig)
        return self.proc.wait(20)

    def close(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
        self.notify.close()


@pytest.fixture
def service(tmp_path: Path) -> Iterator[Service]:
    with netns("wdsvc") as ns:
        svc = Service(ns, tmp_path)
        try:
            yield svc
        finally:
            svc.close()


def test_notify_watchdog_reload_and_quiet_journald_logs(service: Service) -> None:
    service.start()
    service.wait_message("READY=1")
    assert any(m.startswith("STATUS=") for m in service.receive())
    ready_lines = len(service.journal.read_text().splitlines())
    # WATCHDOG=1 every half of WATCHDOG_USEC (0.4 s) from the event loop.
    service.clear()
    time.sleep(1.2)
    assert sum(m == "WATCHDOG=1" for m in service.receive()) >= 3

    # systemctl reload: RELOADING=1, then READY=1 once the converge it asked for is done.
    service.clear()
    assert service.proc is not None
    service.proc.send_signal(signal.SIGHUP)
    service.wait_message("READY=1", timeout=10)
    reload = [m for m in service.receive() if m != "WATCHDOG=1"]
    assert reload[0].startswith("RELOADING=1\nMONOTONIC_USEC=") and "READY=1" in reload

    # --json for scripts: every status section, ps.
    cli = [sys.executable, "-m", "weaved", "-f", str(service.spec), "--socket"]
    cli += [str(service.work / "weaved.sock")]
    report = json.loads(service.ns.run([*cli, "status", "--json"]).stdout)
    assert {"Router", "IPAM", "Reconciler"} <= set(report)
    for section in ("peers", "connections", "targets", "dns", "ipam"):
        json.loads(service.ns.run([*cli, "status", "--json", section]).stdout)
    ps = json.loads(service.ns.run([*cli, "ps", "--json"]).stdout)
    assert ps[0]["container"] == "weave:expose" and "10.2.1.1/24" in ps[0]["addresses"]

    # Idle and healthy (a no-op converge every second): next to nothing in the journal.
    mark = len(service.journal.read_text().splitlines())
    time.sleep(20)
    lines = service.journal.read_text().splitlines()
    assert len(lines[mark:]) <= 2, "\n".join(lines[mark:])

    assert service.signal(signal.SIGTERM) == 0
    assert "STOPPING=1" in service.receive()
    lines = service.journal.read_text().splitlines()
    # journald-native: every line is one entry with its syslog priority, no timestamp.
    assert lines and all(line[:3] in ("<3>", "<4>", "<6>", "<7>") for line in lines), lines
    assert not any(line.startswith(("<3>", "<4>")) for line in lines), lines
    assert len(lines) - ready_lines < 10


def test_exit_statuses_for_systemd_restart_policy(service: Service) -> None:
    # SIGKILL (a crash, the OOM killer): killed by a signal, Restart=always brings it back and
    # the new process converges again from the same state directory.
    service.start()
    service.wait_message("READY=1")
    assert service.signal(signal.SIGKILL) == -signal.SIGKILL
    service.clear()
    service.start()
    service.wait_message("READY=1")
    # `kill <pid>` (SIGTERM) is a clean 0: restarted by Restart=always, as Weave's router was.
    assert service.signal(signal.SIGTERM) == 0
    # `weaved reset` makes it leave the network: exit 3, which the unit does not restart.
    service.clear()
    service.start()
    service.wait_message("READY=1")
    reset = service.ns.run(
        [
            *[sys.executable, "-m", "weaved", "-f", str(service.spec)],
            *["--state-dir", str(service.work / "state"), "--socket"],
            *[str(service.work / "weaved.sock"), "reset"],
        ]
    )
    assert "Stopped the weaved daemon" in reset.stdout
    assert service.proc is not None and service.proc.wait(20) == 3
