"""bench/reconcile/floods.py: what one broadcast costs the kernel on a bridge of N containers.

Every container that comes up announces itself: its IPv6 stack (on by default in a new
namespace) sends multicast listener reports, a duplicate address check and router
solicitations, and Weave's attach (weaved's too) sends a gratuitous ARP. The bridge floods each
of these into every other container, whose kernel then looks at its copy. This bench measures
that cost, for the attach figures of containers.py to be read against: N namespaces, each with a
veth whose host end is a port of one plain bridge (no daemon), then from one of them K frames
of each kind at a steady pace, with the machine's CPU time (/proc/stat) for each run.

Prints, for N and for a tenth of N containers: the CPU per frame (ms) and per container copy
(µs) of a gratuitous ARP and of an IPv6 multicast frame (to the MLD reports' address), each
next to the same pace with nothing sent (the baseline).

Run as root: python bench/reconcile/floods.py [--containers 800] [--frames 200]. Everything lives
in namespaces named `wdfl-*` (`--prefix`), deleted at the end, also on failure or Ctrl-C.
"""

from __future__ import annotations

import argparse
import errno
import ipaddress
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from bench.reconcile.containers import ip_batch
from weaved.attach.arp import announcement
from weaved.attach.netns import opened, run_in_netns
from weaved.attach.nlsock import Netlink

PACE = 0.02  # seconds between frames: slow enough for each to be over before the next
MLD_REPORTS = "33:33:00:00:00:16"
SETTLE = 20.0  # s for new containers' own announcements to end (3 solicitations 4 s apart)


def busy() -> int:
    """The machine's busy CPU time so far (USER_HZ ticks)."""
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
    return sum(fields) - fields[3] - fields[4]


def ipv6_multicast(mac: bytes) -> bytes:
    """An ICMPv6 frame to the MLD reports' group address (dropped by every receiver)."""
    header = (
        bytes.fromhex("6000000000083a01") + bytes(16) + bytes.fromhex("ff02" + "00" * 13 + "16")
    )
    return bytes.fromhex(MLD_REPORTS.replace(":", "")) + mac + b"\x86\xdd" + header + bytes(8)


def send_each(ifname: str, frame: bytes | None, count: int) -> tuple[float, int]:
    """Send `frame` `count` times at PACE (None: just wait as long); CPU ms per frame, and
    how many sends the kernel refused (ENOBUFS: the last copy found its receiving CPU's
    backlog full, netdev_max_backlog; others of that frame may be lost too)."""
    sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)
    refused = 0
    try:
        busy0 = busy()
        for _ in range(count):
            if frame is not None:
                try:
                    sock.sendto(frame, (ifname, 0))
                except OSError as exc:
                    if exc.errno != errno.ENOBUFS:
                        raise
                    refused += 1
            time.sleep(PACE)
        busy1 = busy()
    finally:
        sock.close()
    return (busy1 - busy0) * 1000 / os.sysconf("SC_CLK_TCK") / count, refused


def measure(names: list[str], frames: int) -> dict[str, Any]:
    """From the first of `names`, the CPU of each kind of frame and of none."""
    with opened(f"/run/netns/{names[0]}") as fd:

        def inside() -> dict[str, Any]:
            with Netlink() as nls:
                ethwe = nls.link(name="ethwe")
            assert ethwe is not None
            mac_text = ethwe.mac
            mac = bytes.fromhex(mac_text.replace(":", ""))
            kinds = {
                "nothing_sent": None,
                "gratuitous_arp": announcement(mac_text, ipaddress.IPv4Address("10.99.0.1")),
                "ipv6_multicast": ipv6_multicast(mac),
            }
            out: dict[str, Any] = {}
            for kind, frame in kinds.items():
                ms, refused = send_each("ethwe", frame, frames)
                copies = len(names) - 1
                out[kind] = {"cpu_ms_per_frame": round(ms, 2), "sends_refused": refused}
                if frame is not None:
                    extra = ms - out["nothing_sent"]["cpu_ms_per_frame"]
                    out[kind]["cpu_us_per_copy"] = round(extra * 1000 / copies, 2)
            return out

        return run_in_netns(fd, inside)


def plug(host: str, names: list[str], first: int) -> None:
    """Each namespace gets `ethwe`, whose peer is a port of the host's bridge, all up."""

    def up_inside() -> None:
        with Netlink() as inner:
            ethwe = inner.link(name="ethwe")
            assert ethwe is not None
            inner.set_link(ethwe.index, up=True)

    def in_host() -> None:
        with Netlink() as nls:
            bridge = nls.link(name="br0")
            assert bridge is not None
            for i, name in enumerate(names, first):
                with opened(f"/run/netns/{name}") as fd:
                    port = nls.add_veth(f"fl{i}", "ethwe", bridge.mtu, fd)
                    assert port is not None, "a kernel that does not echo new links (before 6.3)"
                    nls.set_link(port.index, master=bridge.index, up=True)
                    run_in_netns(fd, up_inside)

    with opened(f"/run/netns/{host}") as host_fd:
        run_in_netns(host_fd, in_host)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--containers", type=int, default=800)
    parser.add_argument("--frames", type=int, default=200)
    parser.add_argument("--prefix", default="wdfl")
    args = parser.parse_args()
    if not 20 <= args.containers <= 1000:
        parser.error("--containers: 20 to 1 000 (a bridge takes 1 024 ports)")
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    tag = f"{args.prefix}-{secrets.token_hex(2)}"
    host = f"{tag}-host"
    names = [f"{tag}-{i}" for i in range(args.containers)]
    small = names[: max(2, args.containers // 10)]
    result: dict[str, Any] = {"containers": args.containers, "frames": args.frames}
    began = time.perf_counter()
    try:
        ip_batch([f"netns add {host}"])
        subprocess.run(["ip", "-n", host, "link", "add", "br0", "up", "type", "bridge"], check=True)
        ip_batch(f"netns add {name}" for name in names)
        plug(host, small, 0)
        time.sleep(SETTLE)
        result[f"with_{len(small)}"] = measure(small, args.frames)
        plug(host, names[len(small) :], len(small))
        time.sleep(SETTLE)
        result[f"with_{args.containers}"] = measure(names, args.frames)
    finally:
        ip_batch((f"netns delete {name}" for name in [*names, host]), check=False)
    result["bench_wall_s"] = round(time.perf_counter() - began, 1)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
