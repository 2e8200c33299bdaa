"""`WEAVE_CIDR` (and the label `works.weave.cidr`) on a container, as Weave's proxy read it:
which addresses `docker.auto_attach` gives it, or none at all (`WEAVE_CIDR=none`).

Forms: `10.2.1.1/24`, `ip:10.2.1.1/24`, `net:10.2.0.0/16`, `net:default`, several separated
by spaces; absent means IPAM's default subnet.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

from weaved.attach.requests import AddressArg, parse_address
from weaved.errors import UsageError, WeavedError
from weaved.integrations.docker_client import connect

log = logging.getLogger(__name__)

ENV = "WEAVE_CIDR"
LABEL = "works.weave.cidr"


def wanted_addresses(
    env: Sequence[str] | None, labels: Mapping[str, str] | None
) -> tuple[AddressArg, ...] | None:
    """None: do not attach. () : the default subnet. UsageError for a malformed value."""
    value = None
    for item in env or ():
        key, _, rest = item.partition("=")
        if key == ENV:
            value = rest
    if value is None and labels:
        value = labels.get(LABEL)
    if value is None:
        return ()
    words = value.split()
    if words == ["none"]:
        return None
    out = []
    for word in words:
        parsed = parse_address(word)
        if parsed is None:
            raise UsageError(f"{ENV}={value!r}: {word!r} is not an address in Weave's forms")
        out.append(parsed)
    return tuple(out)


def container_addresses(
    url: str, container_id: str, plugin_driver: str | None = None
) -> tuple[AddressArg, ...] | None:
    """(Thread.) What the container asks for; the default subnet when it cannot be read; None
    for a container on a network of our Docker plugin (`--net=weave`: it has ethwe0 already)."""
    try:
        client = connect(url, 5)
    except WeavedError:
        return ()
    try:
        attrs: dict[str, Any] = client.api.inspect_container(container_id)
        networks = (attrs.get("NetworkSettings") or {}).get("Networks") or {}
        for net in networks.values() if plugin_driver else ():
            info = client.api.inspect_network(str(net.get("NetworkID", "")))
            if info.get("Driver") == plugin_driver:
                return None
    except Exception as exc:  # Docker went away or the container did: the default
        log.debug("inspect for %s failed: %s", ENV, exc)
        return ()
    finally:
        client.close()
    config = attrs.get("Config") or {}
    return wanted_addresses(config.get("Env"), config.get("Labels"))
