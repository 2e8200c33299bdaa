"""`weaved attach --rewrite-hosts [--add-host NAME:ADDR ...]`: a container's /etc/hosts names
its weave addresses, as Weave's `rewrite-etc-hosts` (proxy/hosts.go) wrote it.

The file Docker bind-mounts into the container is written, then unlinked and written again:
the container keeps the first inode (our contents) while Docker, which rewrites the file on
its own occasions, only ever sees the second one — Weave's trick, done from the host instead
of from a transient container.
"""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Sequence
from pathlib import Path

from weaved.integrations.docker_client import ContainerError, connect, inspect_container

LOCALHOST_LINES = (
    "127.0.0.1       localhost",
    "::1             ip6-localhost ip6-loopback",
    "fe00::0         ip6-localnet",
    "ff00::0         ip6-mcastprefix",
    "ff02::1         ip6-allnodes",
    "ff02::2         ip6-allrouters",
)


def hosts_contents(
    fqdn: str, addresses: Sequence[ipaddress.IPv4Address], extra_hosts: Sequence[str]
) -> str:
    """Weave's `writeEtcHostsContents`: `fqdn` is HOSTNAME.DOMAIN (DOMAIN may be empty)."""
    name, _, domain = fqdn.partition(".")
    hostnames = f"{name}.{domain.rstrip('.')} {name}" if domain else name
    lines = ["# created by Weave - BEGIN", "# container hostname"]
    lines += [f"{a!s:<15} {hostnames}" for a in addresses]
    lines += ["", "# static names added with --add-host"]
    for item in extra_hosts:
        host, sep, address = item.partition(":")
        if sep:
            lines.append(f"{address:<15} {host}")
    lines += ["", "# default localhost entries", *LOCALHOST_LINES, "# created by Weave - END"]
    return "\n".join(lines) + "\n"


def rewrite_etc_hosts(hosts_path: Path, contents: str) -> None:
    """Write, unlink, write: the container keeps these contents whatever Docker does later."""
    hosts_path.write_text(contents)
    os.unlink(hosts_path)
    hosts_path.write_text(contents)
    hosts_path.chmod(0o644)


def rewrite_container_hosts(
    docker_url: str,
    container: str,
    addresses: Sequence[ipaddress.IPv4Address],
    extra_hosts: Sequence[str],
) -> None:
    """Rewrite a running container's /etc/hosts (its HostsPath), named HOSTNAME.DOMAIN."""
    client = connect(docker_url, 5)
    try:
        info = inspect_container(client, container)
    finally:
        client.close()
    if not info.hosts_path:
        raise ContainerError(f"Docker gives no /etc/hosts file for {info.name}")
    fqdn = f"{info.hostname}.{info.domainname}"
    rewrite_etc_hosts(Path(info.hosts_path), hosts_contents(fqdn, addresses, extra_hosts))
