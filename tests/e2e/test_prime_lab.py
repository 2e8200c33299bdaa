"""`weaved prime` as Weave's `weave prime`: it returns once IPAM's ring exists, waiting (and
saying on stderr what for) while the peers have not agreed yet; it gives up with a clear
error after --timeout, and without a daemon it says so at once.

Two lab hosts that do not know each other (`peers: []` on both) and need two peers to agree
(`ipalloc.init.peer_count: 2`): IPAM waits until `weaved connect` joins them.
"""

from __future__ import annotations

import subprocess
import sys
import threading
from pathlib import Path

import pytest

from tests.e2e.conftest import LabFactory
from weaved.lab.lab import Lab

pytestmark = [pytest.mark.timeout(180)]

SPEC = """\
version: 1
peer:
  name: "02:00:00:00:0{n}:01"
  nickname: host{n}
peers: []
ipalloc:
  range: 10.32.0.0/12
  init:
    mode: consensus
    peer_count: 2
"""


def prime(lab: Lab, host: str, *args: str, timeout: float = 60) -> tuple[int, str]:
    proc = lab.exec(host, ["weaved", "prime", *args], capture=True, timeout=timeout)
    return proc.returncode, proc.stderr


def test_prime_waits_for_consensus_then_returns(lab_factory: LabFactory) -> None:
    lab = lab_factory("dcprime", {1: SPEC.format(n=1), 2: SPEC.format(n=2)})
    code, err = prime(lab, "host1", "--timeout", "3")
    assert code == 1, err
    assert "IPAM is not ready after 3 s" in err and "weaved status ipam" in err, err

    done: dict[str, tuple[int, str]] = {}
    waiter = threading.Thread(target=lambda: done.update(got=prime(lab, "host1", timeout=90)))
    waiter.start()
    waiter.join(3.0)
    assert waiter.is_alive(), f"prime returned before the peers agreed: {done}"
    connect = lab.exec("host2", ["weaved", "connect", lab.host("host1").address], capture=True)
    assert connect.returncode == 0, connect
    waiter.join(60.0)
    assert not waiter.is_alive(), "prime did not return once the peers met"
    code, err = done["got"]
    assert code == 0, err
    assert "weaved prime: waiting for IPAM" in err, err
    # Ready now: a second prime returns at once, on either host.
    assert prime(lab, "host2", timeout=10)[0] == 0


def test_prime_without_a_daemon_says_so(tmp_path: Path) -> None:
    argv = [sys.executable, "-m", "weaved", "--socket", str(tmp_path / "none.sock"), "prime"]
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=30, check=False)
    assert proc.returncode != 0 and "cannot reach weaved daemon" in proc.stderr, proc
