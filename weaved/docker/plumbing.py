"""The kernel side of a Docker plugin endpoint: a veth pair made in the host's namespace, the
host side (`vethwl…`) a port of the bridge, the other (`vethwg…`) handed to Docker, which moves
it into the container, names it `ethweN` and gives it the address our IPAM answered.

How a restarted daemon knows these veths are its own: the endpoint records in
`<state>/docker-plugin.json` name each one (the prefix alone proves nothing).
"""

from __future__ import annotations

import logging

from pyroute2 import IPRoute
from pyroute2.netlink.exceptions import NetlinkError

from weaved.cni.plumbing import bridge_info, with_quiet_delete
from weaved.errors import ApplyError

log = logging.getLogger(__name__)


def create_pair(host: str, peer: str, mac: str | None) -> str:
    """Create (or reuse) the pair; returns the MAC of the side Docker moves. Blocking: run it
    on the daemon's dataplane thread."""
    with IPRoute() as ipr:
        bridge_index, mtu, _ = bridge_info(ipr)
        created = False
        try:
            if not ipr.link_lookup(ifname=host):
                peer_spec: dict[str, object] = {"ifname": peer, "mtu": mtu}
                if mac:
                    peer_spec["address"] = mac
                ipr.link("add", ifname=host, kind="veth", mtu=mtu, peer=peer_spec)
                created = True
            index = int(ipr.link_lookup(ifname=host)[0])
            ipr.link("set", index=index, master=bridge_index, mtu=mtu)
            ipr.link("set", index=index, state="up")
            found = ipr.link_lookup(ifname=peer)
            if not found:
                raise ApplyError(f"veth {peer} vanished while it was set up")
            return str(ipr.get_links(found[0])[0].get_attr("IFLA_ADDRESS"))
        except NetlinkError as exc:
            if created:
                with_quiet_delete(ipr, host)
            raise ApplyError(f"create veth {host} ↔ {peer}: {exc}") from None
        except BaseException:
            if created:
                with_quiet_delete(ipr, host)
            raise


def delete_pair(host: str) -> None:
    """Remove the pair from the host side; nothing there is not an error."""
    with IPRoute() as ipr:
        with_quiet_delete(ipr, host)


def exists(host: str) -> bool:
    with IPRoute() as ipr:
        return bool(ipr.link_lookup(ifname=host))
