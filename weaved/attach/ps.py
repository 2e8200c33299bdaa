"""`weaved ps` in Weave's layout (pure).

Weave prints one line per container interface on the bridge, `<id> <MAC> <CIDR> ...` with single
spaces and nothing after the last field, the bridge itself first as `weave:expose <bridge MAC>
<CIDRs>` (see ../shared/weave-wire/outputs/*/host*/ps.txt). The id is Docker's 12-character short
ID; weaved's other kinds of container show their netns name or PID, cut to 12 the same way.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Sequence

from weaved.attach.model import Attachment, AttachmentState

EXPOSE_LABEL = "weave:expose"


def ps_line(label: str, mac: str, addresses: Iterable[ipaddress.IPv4Interface]) -> str:
    return " ".join([label, mac, *(iface.with_prefixlen for iface in addresses)])


def render_ps(
    bridge_mac: str | None,
    bridge_addresses: Sequence[ipaddress.IPv4Interface],
    attachments: Iterable[Attachment],
    *,
    expose: bool = True,
) -> str:
    """The whole listing, newline-terminated ("" when there is nothing to list). Containers
    whose process is gone (ORPHANED, GONE) are not listed: Weave lists running ones only."""
    lines = []
    if expose and bridge_mac:
        lines.append(ps_line(EXPOSE_LABEL, bridge_mac, bridge_addresses))
    for a in attachments:
        if a.state is AttachmentState.ATTACHED and a.mac:
            lines.append(ps_line(a.target.label, a.mac, a.addresses))
    return "".join(line + "\n" for line in lines)


def show_addrs(addresses: Iterable[ipaddress.IPv4Interface]) -> str:
    """What `weave attach` and `weave detach` print: the IPs, without prefix, space-separated."""
    return " ".join(str(iface.ip) for iface in addresses)
