"""`weaved daemon` in a private namespace: converge at start, watch edits, keep the last good
spec, serve the control API to root only, stop cleanly."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import Netns, netns, stop_process, wait_for

SPEC = 'version: 1\npeer: {name: "3e:80:e7:5a:63:a7"}\ndatapath: {mtu: 1400}\nexpose: [{cidr: 10.2.1.1/24}]\n'


def mtu(ns: Netns) -> int:
    proc = ns.ip("-j", "link", "show", "weave", check=False)
    if proc.returncode != 0:
        return 0
    return int(json.loads(proc.stdout)[0]["mtu"])


@contextlib.contextmanager
def daemon_ready(tmp_path: Path, resync: str) -> Iterator[tuple[Netns, Path, Any]]:
    """A daemon on SPEC in a fresh namespace, once its first converge finished; it must stop
    cleanly afterwards."""
    spec = tmp_path / "weave.yaml"
    spec.write_text(SPEC)
    with netns() as ns:
        proc = ns.popen_weaved(spec, "daemon", "--resync", resync, log=tmp_path / "daemon.log")
        try:
            # Ready = the first converge finished (the socket appears a little earlier).
            wait_for(lambda: (tmp_path / "weaved.sock").exists(), timeout=20)
            wait_for(
                lambda: "converged at" in ns.weaved(spec, "status", check=False).stdout, timeout=20
            )
            yield ns, spec, proc
        finally:
            code = stop_process(proc)
            assert code == 0, (tmp_path / "daemon.log").read_text()


@pytest.fixture
def running(tmp_path: Path) -> object:
    with daemon_ready(tmp_path, "2") as (ns, spec, proc):
        assert mtu(ns) == 1400
        yield ns, spec, proc


def test_converges_at_start_and_status_shows_it(running: tuple[Netns, Path, object]) -> None:
    ns, spec, _ = running
    out = ns.weaved(spec, "status").stdout
    assert "Service: reconciler" in out and "(valid)" in out and "converged at" in out
    assert ns.weaved(spec, "plan", "--detailed-exitcode").returncode == 0
    assert "no changes, 0 kernel writes" in ns.weaved(spec, "apply").stdout


def test_edit_is_converged_within_a_second(running: tuple[Netns, Path, object]) -> None:
    ns, spec, _ = running
    spec.write_text(SPEC.replace("mtu: 1400", "mtu: 1300"))
    assert wait_for(lambda: mtu(ns) == 1300, timeout=5) < 1.0


def test_invalid_edit_keeps_last_good_spec(running: tuple[Netns, Path, object]) -> None:
    ns, spec, _ = running
    spec.write_text(SPEC.replace("mtu: 1400", "mtu: 12"))
    wait_for(lambda: "INVALID" in ns.weaved(spec, "status").stdout, timeout=5)
    status = ns.weaved(spec, "status").stdout
    assert "datapath.mtu" in status
    assert mtu(ns) == 1400
    spec.write_text(SPEC.replace("mtu: 1400", "mtu: 1350"))
    wait_for(lambda: mtu(ns) == 1350, timeout=5)
    assert "(valid)" in ns.weaved(spec, "status").stdout


def test_drift_is_repaired_by_periodic_resync(running: tuple[Netns, Path, object]) -> None:
    ns, _spec, _ = running
    ns.ip("addr", "del", "10.2.1.1/24", "dev", "weave")
    wait_for(lambda: "10.2.1.1/24" in ns.ip("-o", "addr", "show", "dev", "weave").stdout, timeout=6)


def test_control_socket_is_root_only(running: tuple[Netns, Path, object], tmp_path: Path) -> None:
    path = tmp_path / "weaved.sock"
    assert (os.stat(path).st_mode & 0o777) == 0o600
    code = (
        "import os, socket, sys\n"
        "os.setgid(65534); os.setuid(65534)\n"
        "s = socket.socket(socket.AF_UNIX)\n"
        "try:\n"
        f"    s.connect({str(path)!r})\n"
        "except PermissionError:\n"
        "    print('denied'); sys.exit(0)\n"
        "s.sendall(b'GET /ping HTTP/1.1\\r\\n\\r\\n'); print(s.recv(100)); sys.exit(1)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert proc.returncode == 0 and "denied" in proc.stdout


def test_status_without_daemon_is_a_clear_error(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "weaved", "--socket", str(tmp_path / "none.sock"), "status"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 1 and "cannot reach weaved daemon" in proc.stderr


def test_unknown_endpoint_gets_404(running: tuple[Netns, Path, object], tmp_path: Path) -> None:
    s = socket.socket(socket.AF_UNIX)
    s.connect(str(tmp_path / "weaved.sock"))
    s.sendall(b"GET /nope HTTP/1.1\r\n\r\n")
    assert s.recv(100).startswith(b"HTTP/1.1 404")
    s.close()


def test_only_the_spec_triggers_reloads_and_the_log_stays_quiet(
    running: tuple[Netns, Path, object], tmp_path: Path
) -> None:
    ns, spec, _ = running
    log = tmp_path / "daemon.log"  # next to the spec, as in the lab
    (tmp_path / "notes.txt").write_text("not the spec\n")
    before = log.stat().st_size
    time.sleep(2.5)  # idle, with a resync every 2 s
    idle = log.read_text()[before:]
    assert "spec file changed" not in idle and "changes detected" not in idle
    assert len(idle.splitlines()) < 5, idle

    # An editor's write-to-temporary-then-rename is an edit like any other.
    scratch = tmp_path / ".weave.yaml.tmp"
    scratch.write_text(SPEC.replace("mtu: 1400", "mtu: 1320"))
    os.replace(scratch, spec)
    wait_for(lambda: mtu(ns) == 1320, timeout=5)
    assert "spec file changed" in log.read_text()[before:]


def test_idle_control_connections_log_nothing(
    running: tuple[Netns, Path, object], tmp_path: Path
) -> None:
    """Issue 18.8: each idle control connection ended in a logged traceback after 10 s."""
    log = tmp_path / "daemon.log"
    before = log.read_text()
    socks = []
    for _ in range(20):
        s = socket.socket(socket.AF_UNIX)
        s.connect(str(tmp_path / "weaved.sock"))
        s.sendall(b"GET /status HTTP/1.1\r\n")  # never finished
        socks.append(s)
    time.sleep(11)
    for s in socks:
        s.close()
    new = log.read_text()[len(before) :]
    assert "Traceback" not in new and "client_connected_cb" not in new, new[-2000:]


def test_the_daemons_plan_shows_hand_made_drift(tmp_path: Path) -> None:
    """The daemon answers `plan` from its last nftables listing while the ruleset's generation
    stays the same, and compiles once per spec: a hand-made change, in nftables or netlink,
    must still show in the next plan (no resync in between to repair it)."""
    with daemon_ready(tmp_path, "600") as (ns, spec, _proc):
        for _ in range(2):  # the second plan is answered from the cached listing
            plan = ns.weaved(spec, "plan", "--detailed-exitcode", check=False)
            assert plan.returncode == 0, plan.stdout
        listing = ns.nft("-a", "list", "chain", "ip", "weaved", "input").stdout
        line = next(x for x in listing.splitlines() if '"wd:mesh-tcp:' in x)
        ns.nft("delete", "rule", "ip", "weaved", "input", "handle", line.split()[-1])
        plan = ns.weaved(spec, "plan", "--detailed-exitcode", check=False)
        assert plan.returncode == 2 and "+ nft/ip/weaved/input/mesh-tcp" in plan.stdout
        ns.ip("link", "set", "weave", "mtu", "1300")
        plan = ns.weaved(spec, "plan", "--detailed-exitcode", check=False)
        assert "~ link/weave" in plan.stdout and "mesh-tcp" in plan.stdout, plan.stdout
        ns.weaved(spec, "apply")
        plan = ns.weaved(spec, "plan", "--detailed-exitcode", check=False)
        assert plan.returncode == 0, plan.stdout


def test_anti_spoofing_elements_are_planned_and_repaired(tmp_path: Path) -> None:
    """The anti-spoofing set's elements are owned state: one removed or added by hand shows in
    the plan and the next converge (SIGHUP here: the resync's path, without its timing) puts
    the set back as the attachments say."""
    from weaved.attach.target import netns_target

    def elements() -> set[tuple[str, str]]:
        out = ns.run(["nft", "-j", "list", "set", "bridge", "weaved", "ports"]).stdout
        found = [o["set"] for o in json.loads(out)["nftables"] if "set" in o]
        return {(e["concat"][0], e["concat"][1]) for e in found[0].get("elem", [])}

    with daemon_ready(tmp_path, "600") as (ns, spec, proc), Netns("wdasc") as c:
        ns.weaved(spec, "attach", "10.2.1.5/24", c.name)
        veth = netns_target(c.name).veth
        assert elements() == {(veth, "10.2.1.5")}
        wait_for(
            lambda: ns.weaved(spec, "plan", "--detailed-exitcode", check=False).returncode == 0
        )
        ns.nft("delete", "element", "bridge", "weaved", "ports", f'{{ "{veth}" . 10.2.1.5 }}')
        ns.nft("add", "element", "bridge", "weaved", "ports", '{ "vethwepl999" . 10.2.1.77 }')
        plan = ns.weaved(spec, "plan", "--detailed-exitcode", check=False).stdout
        assert f"+ nftset/bridge/weaved/ports/{veth}/10.2.1.5" in plan, plan
        assert "- nftset/bridge/weaved/ports/vethwepl999/10.2.1.77" in plan, plan
        proc.send_signal(signal.SIGHUP)
        wait_for(lambda: elements() == {(veth, "10.2.1.5")}, timeout=8)
