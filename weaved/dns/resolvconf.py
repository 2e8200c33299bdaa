"""What containers are told about weaveDNS: a resolv.conf, or Docker flags (`weave dns-args`)."""

from __future__ import annotations

from collections.abc import Sequence


def render_resolv_conf(
    nameserver: str,
    domain: str = "weave.local.",
    extra_search: Sequence[str] = (),
    ndots: int | None = None,
    options: Sequence[str] = (),
) -> str:
    """A container's /etc/resolv.conf pointing at weaveDNS, searching the weave domain first.

    Single-label names work even without the search line (the server qualifies them); the
    search line makes `ping c1` and friends behave the same with every resolver library.
    """
    search = [domain, *(s for s in extra_search if s != domain)]
    lines = [f"nameserver {nameserver}", "search " + " ".join(search)]
    opts = list(options)
    if ndots is not None:
        opts.insert(0, f"ndots:{ndots}")
    if opts:
        lines.append("options " + " ".join(opts))
    return "\n".join(lines) + "\n"


def dns_args(
    address: str,
    domain: str = "weave.local.",
    name: str | None = None,
    hostname_given: bool = False,
    search_given: bool = False,
) -> str:
    """`weave dns-args`: Docker run flags that make a container use weaveDNS.

    With a container `name` and no hostname of its own, the container is also given
    `--hostname=NAME.DOMAIN` (without the final dot), as the weave script does.
    """
    args = [f"--dns={address}"]
    if name and not hostname_given:
        args.append(f"--hostname={name}.{domain.rstrip('.')}")
    if not search_given:
        args.append(f"--dns-search={domain}")
    return " ".join(args)
