"""A running daemon fed every spec of the hostile corpus as an edit: it refuses each with a
location in `status`, keeps the last good spec in force (the bridge keeps its settings), keeps
answering, and takes the next good edit. Then a restart with a bad file on disk still brings
the network up, from the last good spec."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import Netns, netns, stop_process, wait_for
from tests.spec_corpus import GOOD, hostile_specs
from weaved.control import Client
from weaved.daemon.service import EXIT_LEFT

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root (network namespaces)")


def mtu(ns: Netns) -> int:
    proc = ns.ip("-j", "link", "show", "weave", check=False)
    return int(json.loads(proc.stdout)[0]["mtu"]) if proc.returncode == 0 else 0


def good(mtu_value: int) -> bytes:
    return GOOD + f"datapath: {{mtu: {mtu_value}}}\n".encode()


def replace(path: Path, raw: bytes) -> None:
    """As editors do: write beside, rename over."""
    scratch = path.with_name(".weave.yaml.new")
    scratch.write_bytes(raw)
    os.replace(scratch, path)


def status(client: Client) -> dict[str, Any]:
    start = time.monotonic()
    answer: dict[str, Any] = client.call("GET", "/status", timeout=5)
    assert time.monotonic() - start < 2.0, "status was slow to answer"
    return answer


def test_every_hostile_edit_is_refused_and_the_last_good_spec_stays(tmp_path: Path) -> None:
    spec = tmp_path / "weave.yaml"
    spec.write_bytes(good(1400))
    log = tmp_path / "daemon.log"
    with netns("wdspec") as ns:
        proc = ns.popen_weaved(spec, "daemon", "--resync", "5", log=log)
        try:
            client = Client(str(tmp_path / "weaved.sock"))
            wait_for(lambda: (tmp_path / "weaved.sock").exists(), timeout=20)
            wait_for(lambda: status(client)["converges"] > 0 and mtu(ns) == 1400, timeout=20)
            corpus = hostile_specs()
            fifo = tmp_path / "fifo"
            os.mkfifo(fifo)
            specials = {"fifo": fifo, "dev-zero": Path("/dev/zero")}
            for index, name in enumerate([*sorted(corpus), *specials]):
                if name in specials:
                    link = spec.with_name(".weave.yaml.link")
                    link.symlink_to(specials[name])
                    os.replace(link, spec)
                else:
                    replace(spec, corpus[name][0])

                def refused() -> bool:
                    error = status(client)["spec_error"] or ""
                    return str(spec) in error and (
                        ": error:" in error or "not a regular file" in error or "at most" in error
                    )

                wait_for(refused, timeout=10)
                assert proc.poll() is None, f"daemon died on {name}: {log.read_text()[-3000:]}"
                assert mtu(ns) == 1400, name
                # Back to a good spec (each one different, so the daemon sees an edit).
                replace(spec, good(1400) + f"# after {name} {index}\n".encode())
                wait_for(lambda: status(client)["spec_error"] is None, timeout=10)
            replace(spec, good(1300))
            wait_for(lambda: mtu(ns) == 1300, timeout=10)
        finally:
            assert stop_process(proc) == 0, log.read_text()[-3000:]


def test_restart_with_a_bad_spec_on_disk_starts_from_the_last_good_one(tmp_path: Path) -> None:
    spec = tmp_path / "weave.yaml"
    spec.write_bytes(good(1400))
    log = tmp_path / "daemon.log"
    with netns("wdspec") as ns:
        proc = ns.popen_weaved(spec, "daemon", "--resync", "2", log=log)
        client = Client(str(tmp_path / "weaved.sock"))
        try:
            wait_for(lambda: (tmp_path / "weaved.sock").exists(), timeout=20)
            # Stopped as soon as the bridge appears, often inside the first converge: a stop
            # must let that converge finish, not pull devices from under it (the rollback
            # used to delete the bridge).
            wait_for(lambda: mtu(ns) == 1400, timeout=20)
        finally:
            assert stop_process(proc) == 0, log.read_text()[-3000:]
        ns.ip("link", "del", "weave")  # as after a reboot: nothing of the network is left
        replace(spec, b"version: 1\ndatapath: {mtu: 12}\n")
        proc = ns.popen_weaved(spec, "daemon", "--resync", "2", log=log)
        try:
            wait_for(lambda: (tmp_path / "weaved.sock").exists(), timeout=20)
            wait_for(lambda: mtu(ns) == 1400, timeout=20)  # the network is back
            text = ns.weaved(spec, "status").stdout
            assert "INVALID since start; running the last good spec" in text
            assert "datapath.mtu" in text
            plan = ns.weaved(spec, "plan", check=False)
            assert plan.returncode == 1 and f"{spec}:2:17: error: datapath.mtu" in plan.stderr
            assert "SPEC FILE REFUSED" in log.read_text()
            replace(spec, good(1350))
            wait_for(lambda: mtu(ns) == 1350, timeout=10)
            assert "(valid)" in ns.weaved(spec, "status").stdout
            assert status(client)["spec_error"] is None
            copy = tmp_path / "state" / "last-good-spec.yaml"
            assert copy.read_bytes() == good(1350)
            ns.weaved(spec, "reset")  # leaves the network: nothing to fall back on any more
            assert proc.wait(timeout=15) == EXIT_LEFT  # so systemd does not bring it back
            assert not copy.exists()
        finally:
            assert stop_process(proc) in (0, EXIT_LEFT), log.read_text()[-3000:]


def test_fixing_the_password_file_clears_the_error_at_once(tmp_path: Path) -> None:
    """Issue 18.5: the daemon watches the password file the spec names, not only the spec."""
    spec = tmp_path / "weave.yaml"
    spec.write_bytes(good(1400))
    password = tmp_path / "password"
    password.write_text("s3cret\n")
    password.chmod(0o644)
    log = tmp_path / "daemon.log"
    with netns("wdspec") as ns:
        # No periodic resync within the test: only watching can notice the fix.
        proc = ns.popen_weaved(spec, "daemon", "--resync", "600", log=log)
        client = Client(str(tmp_path / "weaved.sock"))
        try:
            wait_for(lambda: (tmp_path / "weaved.sock").exists(), timeout=20)
            wait_for(lambda: status(client)["converges"] > 0, timeout=20)
            replace(spec, good(1400) + f"password_file: {password}\n".encode())
            wait_for(lambda: "readable by everyone" in (status(client)["spec_error"] or ""), 10)
            password.chmod(0o600)
            assert wait_for(lambda: status(client)["spec_error"] is None, timeout=10) < 3.0
            assert "password file" in log.read_text()
        finally:
            assert stop_process(proc) == 0, log.read_text()[-3000:]
