"""Which mesh settings can change while the router runs, and which need a restart. Pure.

Live: `nickname` (gossiped with a new topology version), `conn_limit` (for new connections),
`discovery`, `trusted_subnets` and the password (connections whose trust or key would differ
are closed and re-made under the new setting). Restart: the peer name (the identity mesh,
IPAM and DNS know this host by, and the bridge's MAC), the listen address and port (sleeve and
fastdp bind port and port+1), the overlays. Timing fields are for tests and never change.
"""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from weaved.mesh.router import MeshConfig

__all__ = ["LIVE_FIELDS", "RESTART_FIELDS", "split_settings"]

LIVE_FIELDS = ("nickname", "password", "trusted_subnets", "conn_limit", "discovery")
RESTART_FIELDS = ("name", "host", "port", "overlays")


def split_settings(running: MeshConfig, wanted: MeshConfig) -> tuple[MeshConfig, tuple[str, ...]]:
    """(the config to run now: `wanted`'s live fields on `running`, the fields needing a
    restart because they differ)."""
    restart = tuple(f for f in RESTART_FIELDS if getattr(running, f) != getattr(wanted, f))
    return replace(running, **{f: getattr(wanted, f) for f in LIVE_FIELDS}), restart
