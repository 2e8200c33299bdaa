"""One mesh peer with the sleeve data path and nothing else (no daemon, no spec): for the
integration tests and the benchmark, which run one per network namespace.

    python -m tests.tools.sleeve_peer '{"name": "02:00:00:00:00:01", ...}'

Config keys: name, nickname, host (listen/underlay address), port, password, targets,
discovery, offload, workers (1 or 2 forwarding threads), status_file (JSON written every
0.25 s: connections, data path report), log_level. The bridge `weave` must exist (the TAP
waits for it otherwise). SIGTERM or SIGINT stops it cleanly.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal
import sys
from pathlib import Path
from typing import Any

from weaved.datapath.overlays import OVERLAYS
from weaved.datapath.sleeve import views
from weaved.datapath.sleeve.datapath import SleeveDatapath
from weaved.mesh.peername import parse_peer_name
from weaved.mesh.router import MeshConfig, Router

STATUS_INTERVAL = 0.25


def _status(router: Router, datapath: SleeveDatapath) -> dict[str, Any]:
    st = router.status()
    return {
        "pid": os.getpid(),
        "connections": [
            {
                "state": c.state.value,
                "info": c.info,
                "address": c.address,
                "attrs": {k: v for k, v in (c.attrs or {}).items()},
            }
            for c in st.connections
        ],
        "peers": len(st.peers),
        "unicast": {f"{r.dest:012x}": f"{r.via:012x}" for r in st.unicast_routes},
        "datapath": views.report(datapath),
        "router_extra": views.router_extra(datapath),
    }


def _write_status(path: Path, data: dict[str, Any]) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data))
    tmp.replace(path)


async def run(config: dict[str, Any]) -> None:
    password = config.get("password")
    router = Router(
        MeshConfig(
            name=parse_peer_name(str(config["name"])),
            nickname=str(config.get("nickname", "")),
            host=str(config.get("host", "")),
            port=int(config.get("port", 6783)),
            password=password.encode() if password else None,
            discovery=bool(config.get("discovery", True)),
            topology_delay=0.1,
        ),
        overlay_factories=OVERLAYS,
    )
    datapath = SleeveDatapath(
        router, offload=bool(config.get("offload", True)), workers=int(config.get("workers", 1))
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await router.start()
    await datapath.start()
    router.set_targets([str(t) for t in config.get("targets", [])])
    status_file = Path(config["status_file"]) if config.get("status_file") else None
    try:
        while not stop.is_set():
            if status_file is not None:
                _write_status(status_file, _status(router, datapath))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), STATUS_INTERVAL)
    finally:
        await datapath.stop()
        await router.stop()


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        sys.stderr.write(__doc__ or "")
        return 64
    config = json.loads(argv[0])
    logging.basicConfig(
        level=getattr(logging, str(config.get("log_level", "WARNING")).upper()),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    asyncio.run(run(config))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
