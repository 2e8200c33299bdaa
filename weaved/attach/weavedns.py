"""What attaching a container means for weaveDNS: its names registered (the Docker hostname,
the netns or container name), a named namespace's resolv.conf pointing at weaveDNS, and the
on-link route to weaveDNS's link address through ethwe.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
from collections.abc import Sequence
from pathlib import Path

from weaved.attach.hostname import dns_name, rules_of
from weaved.attach.model import Target, TargetKind
from weaved.attach.store import write_atomically
from weaved.compile.dns import uses_link_address
from weaved.dns.part import DnsPart
from weaved.dns.resolvconf import render_resolv_conf
from weaved.errors import WeavedError
from weaved.integrations.docker_client import ContainerInfo, connect, inspect_container
from weaved.spec.models import DNS_LINK_ADDRESS, Spec

log = logging.getLogger(__name__)

NETNS_ETC = Path("/etc/netns")
RESOLV_MARK = "# written by weaved: weaveDNS for this namespace\n"


def dns_routes(spec: Spec) -> tuple[ipaddress.IPv4Network, ...]:
    """weaveDNS's link address is reached through ethwe (an on-link route in the container)."""
    if not uses_link_address(spec):
        return ()
    return (ipaddress.IPv4Network(f"{DNS_LINK_ADDRESS}/32"),)


async def register_names(
    dns: DnsPart,
    spec: Spec,
    docker_url: str,
    target: Target,
    addresses: Sequence[ipaddress.IPv4Interface],
) -> None:
    """Register the container's names for `addresses`; a named netns gets its resolv.conf."""
    hostname = name = None
    if target.kind is TargetKind.DOCKER:

        def inspect() -> ContainerInfo:
            client = connect(docker_url, 5)
            try:
                return inspect_container(client, target.key)
            finally:
                client.close()

        with contextlib.suppress(WeavedError):
            info = await asyncio.to_thread(inspect)
            hostname = f"{info.hostname}.{info.domainname}" if info.domainname else info.hostname
            # Weave proxy's hostname rules (docker.hostname_*) name it in weaveDNS.
            name = dns_name(rules_of(spec.docker), info.name, info.labels)
    if name is None and target.kind is not TargetKind.PID:
        name = target.name
    dns.service.register_container(target.key, [str(a.ip) for a in addresses], hostname, name)
    server = dns.nameserver()
    if target.kind is TargetKind.NETNS and server:
        write_resolv_conf(target.name, render_resolv_conf(server, spec.dns.domain))


def write_resolv_conf(netns_name: str, text: str) -> None:
    """`ip netns exec` mounts /etc/netns/NAME/resolv.conf over /etc/resolv.conf."""
    directory = NETNS_ETC / netns_name
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "resolv.conf"
    if path.exists() and not path.read_text().startswith(RESOLV_MARK):
        log.info("not replacing %s: it was not written by weaved", path)
        return
    if path.exists() and path.read_text() == RESOLV_MARK + text:
        return  # as wanted already: no write
    write_atomically(path, path.with_suffix(".weaved-tmp"), RESOLV_MARK + text)


def remove_resolv_conf(netns_name: str) -> None:
    path = NETNS_ETC / netns_name / "resolv.conf"
    with contextlib.suppress(OSError):
        if path.read_text().startswith(RESOLV_MARK):
            path.unlink()
            with contextlib.suppress(OSError):
                path.parent.rmdir()
