"""The IPAM state file survives a writer killed at any moment (atomic replace on a real FS)."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from weaved.ipam.persist import FileStore

pytestmark = pytest.mark.timeout(120)

WRITER = """
import sys
from pathlib import Path
from weaved.ipam.address import CIDR
from weaved.ipam.owned import Owned
from weaved.ipam.persist import FileStore, PersistedState
from weaved.ipam.ring import Ring
from weaved.mesh.gossip_api import PeerName

store = FileStore(Path(sys.argv[1]))
u = CIDR.parse_subnet("10.32.0.0/12").range()
ring = Ring(u.start, u.end, PeerName(1))
ring.claim_for_peers([PeerName(1)])
n = 0
while True:
    n += 1
    owned = {f"c{i}": Owned((CIDR(u.start + i + 1, 12),)) for i in range(n % 500)}
    store.save(PersistedState(PeerName(1), ring, owned))
    print(n, flush=True)
"""


def test_killed_writer_never_leaves_a_partial_file(tmp_path: Path) -> None:
    for attempt in range(8):
        proc = subprocess.Popen(
            [sys.executable, "-c", WRITER, str(tmp_path)],
            stdout=subprocess.PIPE,
            text=True,
        )
        assert proc.stdout is not None
        for _ in range(5 + attempt * 7):  # let it write a few generations
            if not proc.stdout.readline():
                break
        time.sleep(0.001 * attempt)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
        state = FileStore(tmp_path).load()
        assert state is not None and state.peer_name == 1
        for ident, owned in state.owned.items():
            assert owned.cidrs[0].addr - state.ring.start == int(ident[1:]) + 1
        assert [p.name for p in tmp_path.iterdir()] == ["ipam.json"]  # stale temps removed
