"""The kernel side of a Docker plugin endpoint: a veth pair made in the host's namespace, the
host side (`vethwl…`) a port of the bridge, the other (`vethwg…`) handed to Docker, which moves
it into the container, names it `ethweN` and gives it the address our IPAM answered.

How a restarted daemon knows these veths are its own: the endpoint records in
`<state>/docker-plugin.json` name each one (the prefix alone proves nothing).
"""

from __future__ import annotations

import ipaddress
import logging
from collections.abc import Sequence

from pyroute2 import IPRoute

from weaved.attach.nlsock import host_socket
from weaved.attach.veth import VethPair, delete_quietly, plug_veth
from weaved.compile.antispoof import pairs_of
from weaved.dataplane.nftsets import remove_elements
from weaved.errors import ApplyError

log = logging.getLogger(__name__)

NO_BRIDGE_HINT = "is `weaved daemon` running? see `weaved plan`"


def create_pair(
    host: str, peer: str, mac: str | None, sends_from: Sequence[ipaddress.IPv4Address] = ()
) -> str:
    """Create (or reuse) the pair, the host side sending only from `sends_from`; returns the
    MAC of the side Docker moves. Blocking: run it on a plumbing thread."""

    def peer_mac(_mtu: int) -> str:
        found = ipr.link_lookup(ifname=peer)
        if not found:
            raise ApplyError(f"veth {peer} vanished while it was set up")
        return str(ipr.get_links(found[0])[0].get_attr("IFLA_ADDRESS"))

    with IPRoute() as ipr:
        pair = VethPair(host, peer, peer_mac=mac)
        plugged = plug_veth(pair, peer_mac, no_bridge_hint=NO_BRIDGE_HINT, sends_from=sends_from)
        return plugged.inside


def delete_pair(host: str, sent_from: Sequence[ipaddress.IPv4Address] = ()) -> None:
    """Remove the pair from the host side, then its addresses from the anti-spoofing set;
    nothing there is not an error. Blocking: run it on a plumbing thread."""
    delete_quietly(host_socket(), host)
    remove_elements(pairs_of(host, sent_from))


def exists(host: str) -> bool:
    with IPRoute() as ipr:
        return bool(ipr.link_lookup(ifname=host))
