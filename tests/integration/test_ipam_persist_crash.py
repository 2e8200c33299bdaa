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


ALLOCATOR = """
import asyncio, sys
from pathlib import Path
from weaved.datapath.overlays import OVERLAYS
from weaved.ipam.part import IpamPart
from weaved.mesh.gossip_api import PeerName
from weaved.mesh.part import MeshPart
from weaved.spec.loader import parse_spec_text

SPEC = '''version: 1
peer: {name: "3e:80:e7:5a:63:b1"}
ipalloc: {range: 10.32.0.0/12, init: {mode: seed, seeds: ["3e:80:e7:5a:63:b1"]}}
'''

class Host:
    leaving = False
    def mark_dirty(self, reason="trigger"):
        pass

async def main():
    spec = parse_spec_text(SPEC)
    ipam = IpamPart(spec, MeshPart(spec, PeerName(0x3E80E75A63B1), overlay_factories=OVERLAYS),
                    Path(sys.argv[1]))
    await ipam.start(Host())
    n = 0
    while True:
        n += 1
        if n % 2:
            cidr = await ipam.allocate(f"c{n}", ipam.default_subnet())
        else:  # decided at once, answered once on disk (what an attach does while it plugs)
            cidr = await ipam.allocate(f"c{n}", ipam.default_subnet(), durable=False)
            await ipam.synced()
        print(f"c{n} {cidr}", flush=True)  # acknowledged to the caller

asyncio.run(main())
"""


def test_an_acknowledged_allocation_survives_a_crash(tmp_path: Path) -> None:
    """The daemon writes IPAM's state off its event loop (weaved/ipam/durable.py); what it
    answered must still be on disk when it is killed right after answering, whether the
    allocation waited for the disk itself or its caller awaited `synced()`."""
    for attempt in range(6):
        state_dir = tmp_path / str(attempt)
        proc = subprocess.Popen(
            [sys.executable, "-c", ALLOCATOR, str(state_dir)],
            stdout=subprocess.PIPE,
            text=True,
        )
        assert proc.stdout is not None
        acked: dict[str, str] = {}
        for _ in range(20 + attempt * 15):
            line = proc.stdout.readline()
            if not line:
                break
            ident, cidr = line.split()
            acked[ident] = cidr
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
        assert acked, "the allocator answered nothing"
        state = FileStore(state_dir).load()
        assert state is not None
        on_disk = {ident: str(o.cidrs[0]) for ident, o in state.owned.items()}
        missing = {i: c for i, c in acked.items() if on_disk.get(i) != c}
        assert not missing, f"answered but not on disk after the crash: {missing}"
