"""An idle, converged daemon writes nothing to the kernel (issue 16): every setting it owns is
changed only when it differs. A write of a bridge port's flags (even to the value it has), of a
bridge setting, a link, an address or a route makes the kernel announce it (under the rtnl lock
every attach needs), so listening to those announcements while the daemon resyncs every second
shows any such write.
"""

from __future__ import annotations

import secrets
import subprocess
import time
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

import pytest

from tests.helpers import Netns, stop_process, wait_for
from weaved.control import Client

pytestmark = pytest.mark.timeout(120)

SPEC = 'version: 1\npeer: {name: "3e:80:e7:5a:63:a9"}\nexpose: [{cidr: 10.2.1.1/24}]\n'
# The kernel itself announces a new bridge port once more ~15 s after it joined, its state
# unchanged (seen with a plain bridge made by `ip link`, no weaved): listen after that.
KERNEL_LATE_ANNOUNCEMENT = 17.0


@pytest.fixture
def daemon(tmp_path: Path) -> Iterator[tuple[Netns, Client, Path]]:
    spec = tmp_path / "weave.yaml"
    spec.write_text(SPEC)
    with Netns("pfid") as ns:
        log = tmp_path / "daemon.log"
        proc = ns.popen_weaved(spec, "daemon", "--resync", "1", log=log)
        try:
            client = Client(str(tmp_path / "weaved.sock"), timeout=60)
            wait_for(client.alive, timeout=30, interval=0.1)
            yield ns, client, log
        finally:
            assert stop_process(proc) == 0, log.read_text()


def announcements(ns: Netns, seconds: float) -> list[str]:
    """The link, address and route announcements in `ns` over `seconds` (one line each)."""
    argv = ["stdbuf", "-oL", "ip", "-n", ns.name, "-o", "monitor", "link", "address", "route"]
    mon = subprocess.Popen(argv, stdout=subprocess.PIPE, text=True)
    try:
        time.sleep(seconds)
    finally:
        mon.terminate()
        out = mon.communicate(timeout=10)[0]
    return [line for line in out.splitlines() if line.strip()]


def test_an_idle_converged_daemon_makes_the_kernel_announce_nothing(
    daemon: tuple[Netns, Client, Path],
) -> None:
    ns, client, log = daemon
    with ExitStack() as stack:
        containers = [stack.enter_context(Netns("pfc")) for _ in range(2)]
        for c in containers:
            body = {
                "target": f"netns:{c.name}",
                "addresses": [],
                "request_id": secrets.token_hex(4),
            }
            client.call("POST", "/attach", body, timeout=60)
        ports = [
            line for line in ns.ip("-o", "link", "show").stdout.splitlines() if "vethwepl" in line
        ]
        assert len(ports) == 2, ports
        time.sleep(KERNEL_LATE_ANNOUNCEMENT)
        before = log.stat().st_size
        heard = announcements(ns, 4.0)  # four resyncs, each also checking inside a container
        assert heard == [], "\n".join(heard)
        assert "changes" not in log.read_text()[before:]
