"""`python -m weaved.dns`: weaveDNS alone, serving a hosts-format file (tests, benchmarks).

    python -m weaved.dns --listen 10.99.0.1:53 --hosts names.txt [--upstream 10.99.0.2] ...

Prints `ready ADDR:PORT` on stdout once both sockets are bound; stops on SIGTERM/SIGINT.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import sys

from weaved.dns.service import DnsConfig, DnsService
from weaved.mesh.gossip_api import PeerName

_OURSELVES = PeerName(0x02_00_00_00_00_01)


class _Alone:
    """A mesh of one peer."""

    def our_name(self) -> PeerName:
        return _OURSELVES

    def known_peers(self) -> dict[PeerName, str]:
        return {_OURSELVES: "standalone"}

    def reachable_peers(self) -> set[PeerName]:
        return {_OURSELVES}


def load_hosts(service: DnsService, path: str) -> int:
    """Register `ADDR NAME...` lines (single labels are qualified with the domain)."""
    n = 0
    with open(path, encoding="utf-8") as f:
        for i, line in enumerate(f):
            fields = line.split("#", 1)[0].split()
            if len(fields) < 2:
                continue
            for name in fields[1:]:
                fq = name if "." in name.rstrip(".") else f"{name}.{service.config.domain}"
                if service.gossiper.add(fq, f"hosts-{i}", fields[0]) is not None:
                    n += 1
    return n


async def _main(args: argparse.Namespace) -> None:
    config = DnsConfig(
        domain=args.domain,
        ttl=args.ttl,
        listen=args.listen,
        upstream=tuple(args.upstream),
        resolv_conf=args.resolv_conf,
        timeout=args.timeout,
    )
    service = DnsService(config, _Alone())
    for path in args.hosts:
        load_hosts(service, path)
    await service.server.start()
    print(f"ready {service.server.address}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    with contextlib.suppress(asyncio.CancelledError):
        await stop.wait()
    await service.server.stop()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m weaved.dns", description=__doc__)
    p.add_argument("--listen", default="127.0.0.1:53", help="ADDR[:PORT] (port 0: any)")
    p.add_argument("--hosts", action="append", default=[], help="file of `ADDR NAME...` lines")
    p.add_argument("--domain", default="weave.local.")
    p.add_argument("--ttl", type=int, default=1)
    p.add_argument("--upstream", action="append", default=[], help="ADDR[:PORT], repeatable")
    p.add_argument("--resolv-conf", default="/etc/resolv.conf")
    p.add_argument("--timeout", type=float, default=5.0, help="seconds per upstream")
    args = p.parse_args(argv)
    if not args.domain.endswith("."):
        args.domain += "."
    asyncio.run(_main(args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
