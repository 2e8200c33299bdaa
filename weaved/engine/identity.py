"""Which peer name this host uses: the spec's, else the bridge's MAC (a restarted weaved or a
Weave Net bridge keeps its name), else Weave's derivation from the machine's IDs."""

from __future__ import annotations

from weaved.mesh.gossip_api import format_peer_name
from weaved.mesh.peername import SystemIDs, derive_peer_name, read_system_ids
from weaved.spec.models import Spec


def resolve_peer_name(spec: Spec, bridge_mac: str | None, ids: SystemIDs | None = None) -> str:
    if spec.peer.name:
        return spec.peer.name
    if bridge_mac:
        return bridge_mac.lower()
    return format_peer_name(derive_peer_name(ids or read_system_ids()))
