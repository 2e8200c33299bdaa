"""The gateway of a container's default route when the bridge has no address in its subnet.

Weave's CNI plugin then gives the bridge one (`weave:expose`). weaved is declarative: the
spec gains the `expose` entry `net:<subnet>` (what `weaved expose` adds, comments kept), the
daemon converges (IPAM allocates the address, the bridge gets it, exposed subnets are
masqueraded), and the ADD goes on once the address is on the bridge.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
from collections.abc import Awaitable, Callable
from pathlib import Path

from weaved.cni.core import CniError, Code
from weaved.errors import WeavedError
from weaved.spec import edit

log = logging.getLogger(__name__)

EXPOSE_WAIT = 30.0
POLL_SECONDS = 0.2


def gateway_in(
    addresses: list[ipaddress.IPv4Interface], network: ipaddress.IPv4Network
) -> ipaddress.IPv4Address | None:
    return next((a.ip for a in addresses if a.ip in network), None)


async def expose_for(
    spec_path: Path | None,
    network: ipaddress.IPv4Network,
    bridge_addresses: Callable[[], Awaitable[list[ipaddress.IPv4Interface]]],
    converge: Callable[[str], None],
) -> ipaddress.IPv4Address | None:
    """The bridge's address in `network`, exposing it first. None (no default route, said in
    the log) when the spec cannot be edited; CniError(TRY_AGAIN_LATER) when the address did
    not come in time (the runtime retries; the edit stays)."""
    entry = f"net:{network}"
    if spec_path is None:
        log.warning("cni: no default route: the bridge has no address in %s", network)
        return None
    try:
        await asyncio.to_thread(edit.expose, spec_path, [entry])
    except (WeavedError, OSError, ValueError) as exc:
        log.warning(
            "cni: no default route: cannot add expose %s to %s (%s); add it to the spec",
            entry,
            spec_path,
            (str(exc).splitlines() or [type(exc).__name__])[0],
        )
        return None
    log.info("cni: spec edited: expose %s (the default route's gateway)", entry)
    converge(f"cni expose {entry}")
    loop = asyncio.get_running_loop()
    deadline = loop.time() + EXPOSE_WAIT
    while loop.time() < deadline:
        if (gw := gateway_in(await bridge_addresses(), network)) is not None:
            return gw
        await asyncio.sleep(POLL_SECONDS)
    raise CniError(
        Code.TRY_AGAIN_LATER,
        f"the bridge got no address in {network} within {EXPOSE_WAIT:g} s after `expose:"
        f" {entry}` was added to {spec_path} (see `weaved status`)",
    )
