"""The daemon's malloc setting (weaved/daemon/memory.py): repeated netlink dumps through
pyroute2 of a bridge with many ports leave the heap where it was (it grew ~75 KiB per dump of
a 200-port bridge before, memory freed but never given back)."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers import Netns

pytestmark = pytest.mark.timeout(180)

PORTS = 200
DUMPS = 150

PROBE = """
import gc, sys
from pyroute2 import IPRoute
from weaved.daemon.memory import fix_mmap_threshold
if sys.argv[1] == "fixed":
    assert fix_mmap_threshold()
def heap_kb():
    total, inside = 0, False
    for line in open("/proc/self/smaps"):
        head = line.split()
        if not head[0].endswith(":"):
            inside = line.rstrip().endswith("[heap]")
        elif inside and head[0] == "Rss:":
            total += int(head[1])
    return total
ipr = IPRoute()
def dump():  # decoded, as the daemon reads the bridge's table
    return [(m["ifindex"], m.get_attr("NDA_LLADDR")) for m in ipr.fdb("dump")]
for _ in range(20):
    dump()
gc.collect()
before = heap_kb()
for _ in range(int(sys.argv[2])):
    dump()
gc.collect()
print(heap_kb() - before)
"""


@pytest.fixture
def bridge(tmp_path: Path) -> Iterator[Netns]:
    with Netns("wdmem") as ns:
        lines = ["link add weave type bridge", "link set weave up"]
        for i in range(PORTS):
            lines += [f"link add p{i} type veth peer q{i}", f"link set p{i} master weave"]
            lines += [f"link set p{i} up", f"link set q{i} up"]
        batch = tmp_path / "ports.batch"
        batch.write_text("\n".join(lines) + "\n")
        ns.ip("-batch", str(batch))
        yield ns


def growth_kb(ns: Netns, mode: str) -> int:
    out = ns.run([sys.executable, "-c", PROBE, mode, str(DUMPS)], timeout=120).stdout
    return int(out.split()[-1])


def test_netlink_dumps_do_not_grow_the_heap_with_the_fixed_mmap_threshold(bridge: Netns) -> None:
    fixed, default = growth_kb(bridge, "fixed"), growth_kb(bridge, "default")
    print(f"heap growth over {DUMPS} dumps: {fixed} KiB fixed, {default} KiB default")
    assert fixed < 512, (fixed, default)  # default: ~1.4 MB here, ~75 KiB per dump in the daemon
