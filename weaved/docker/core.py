"""Docker's remote network and IPAM driver protocols (libnetwork, legacy v1 plugins) as plain
data, the way Weave's `weavemesh` plugin answers them: pool IDs, veth names, network options,
the Join answer. No I/O here: `part.py` serves these over the plugin socket.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import Any

from weaved.integrations.docker_client import plugin_name as plugin_name  # (attach uses it too)
from weaved.spec.models import DNS_LINK_ADDRESS

MULTICAST_OPTION = "works.weave.multicast"
GENERIC_DATA = "com.docker.network.generic"  # libnetwork's netlabel.GenericData
GATEWAY_LABEL = "com.docker.network.gateway"  # netlabel.Gateway
DST_PREFIX = "ethwe"  # Docker names the interface inside ethwe0, ethwe1, …
CONNECTED = 1  # libnetwork types.CONNECTED: a route without a next hop
LOCAL_SPACE, GLOBAL_SPACE = "weavelocal", "weaveglobal"
IFNAMSIZ = 16
HOST_PREFIX, PEER_PREFIX = "vethwl", "vethwg"  # Weave's names, so its leftovers are found


class PluginError(Exception):
    """Answered to Docker as `{"Err": …}` with status 500 (Docker shows the text)."""


def veth_pair(endpoint_id: str) -> tuple[str, str]:
    """(host side, side Docker moves into the container); IDs are unique in 9 characters."""
    if len(endpoint_id) < IFNAMSIZ - 7 or not endpoint_id.isalnum():
        raise PluginError(f"bad endpoint ID {endpoint_id!r}")
    short = endpoint_id[: IFNAMSIZ - 7]
    return HOST_PREFIX + short, PEER_PREFIX + short


@dataclass(frozen=True)
class Pool:
    """Weave's "cunningly-constructed" pool ID: `weave-<subnet>-<range>`."""

    subnet: ipaddress.IPv4Network
    iprange: ipaddress.IPv4Network

    @property
    def pool_id(self) -> str:
        return f"weave-{self.subnet}-{self.iprange}"


def request_pool(body: dict[str, Any], default_subnet: str) -> tuple[Pool, dict[str, Any]]:
    """RequestPool: the pool and the answer (with Weave's fake gateway: the network address,
    so Docker asks no address for a gateway it will never use)."""
    if body.get("V6"):
        raise PluginError("weavemesh IPAM does not support IPv6")
    try:
        subnet = ipaddress.IPv4Network(str(body.get("Pool") or default_subnet))
        sub = body.get("SubPool")
        iprange = ipaddress.IPv4Network(str(sub)) if sub else subnet
    except ValueError as exc:
        raise PluginError(f"invalid pool: {exc}") from None
    if not iprange.subnet_of(subnet):
        raise PluginError(f"ip range {iprange} is not inside the subnet {subnet}")
    pool = Pool(subnet, iprange)
    answer = {"PoolID": pool.pool_id, "Pool": str(subnet), "Data": {GATEWAY_LABEL: str(subnet)}}
    return pool, answer


def parse_pool_id(pool_id: str) -> Pool:
    parts = pool_id.split("-")
    if len(parts) != 3 or parts[0] != "weave":
        raise PluginError(f"Unrecognized pool ID: {pool_id}")
    try:
        return Pool(ipaddress.IPv4Network(parts[1]), ipaddress.IPv4Network(parts[2]))
    except ValueError:
        raise PluginError(f"Unrecognized pool ID: {pool_id}") from None


def requested_address(body: dict[str, Any]) -> tuple[Pool, ipaddress.IPv4Address | None]:
    """RequestAddress: the pool and the address asked for (`docker run --ip`), if any."""
    pool = parse_pool_id(str(body.get("PoolID", "")))
    text = str(body.get("Address") or "")
    if not text:
        return pool, None
    try:
        address = ipaddress.IPv4Address(text.split("/")[0])
    except ValueError:
        raise PluginError(f"invalid address {text!r}") from None
    if address not in pool.subnet:
        raise PluginError(f"address {address} is not in the pool's subnet {pool.subnet}")
    return pool, address


def multicast_of(options: dict[str, Any] | None) -> bool:
    """CreateNetwork's `--opt works.weave.multicast[=BOOL]` (a bare option means on)."""
    generic = (options or {}).get(GENERIC_DATA)
    if not isinstance(generic, dict) or MULTICAST_OPTION not in generic:
        return False
    value = str(generic[MULTICAST_OPTION]).strip().lower()
    if value in ("", "1", "t", "true", "yes", "on"):
        return True
    if value in ("0", "f", "false", "no", "off"):
        return False
    raise PluginError(f"unrecognized value {value!r} for option {MULTICAST_OPTION}")


def join_answer(endpoint_id: str, multicast: bool, dns_route: bool) -> dict[str, Any]:
    """Join: which veth Docker moves in and its name prefix; on-link routes for multicast
    (Weave's option) and for weaveDNS's link address (Docker's embedded DNS forwards to it
    from inside the container)."""
    _, peer = veth_pair(endpoint_id)
    answer: dict[str, Any] = {"InterfaceName": {"SrcName": peer, "DstPrefix": DST_PREFIX}}
    routes = []
    if multicast:
        routes.append({"Destination": "224.0.0.0/4", "RouteType": CONNECTED})
    if dns_route:
        routes.append({"Destination": f"{DNS_LINK_ADDRESS}/32", "RouteType": CONNECTED})
    if routes:
        answer["StaticRoutes"] = routes
    return answer


def activate_answer() -> dict[str, Any]:
    return {"Implements": ["NetworkDriver", "IpamDriver"]}
