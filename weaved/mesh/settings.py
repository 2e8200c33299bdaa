"""The router's settings (`MeshConfig`): which can change while it runs, which need a restart.

Live: `nickname` (gossiped with a new topology version), `conn_limit` (for new connections),
`discovery`, `trusted_subnets` and the password (connections whose trust or key would differ
are closed and re-made under the new setting). Restart: the peer name (the identity mesh,
IPAM and DNS know this host by, and the bridge's MAC), the listen address and port (sleeve and
fastdp bind port and port+1), the overlays. Timing fields are for tests and never change.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from weaved.mesh.gossip import GOSSIP_INTERVAL
from weaved.mesh.gossip_api import PeerName

__all__ = ["DEFAULT_PORT", "LIVE_FIELDS", "RESTART_FIELDS", "MeshConfig", "split_settings"]

DEFAULT_PORT = 6783

LIVE_FIELDS = ("nickname", "password", "trusted_subnets", "conn_limit", "discovery")
RESTART_FIELDS = ("name", "host", "port", "overlays")


@dataclass(frozen=True)
class MeshConfig:
    name: PeerName
    nickname: str
    host: str = ""  # listen address ("" = all IPv4 addresses); also the local end of dials
    port: int = DEFAULT_PORT
    password: bytes | None = field(default=None, repr=False)
    trusted_subnets: tuple[str, ...] = ()
    conn_limit: int = 200  # 0 = unlimited
    discovery: bool = True
    overlays: tuple[str, ...] = ("sleeve",)  # preference order; "none" = control plane only
    # timing, tunable for tests and benchmarks; the defaults are Weave's
    gossip_interval: float = GOSSIP_INTERVAL
    heartbeat_interval: float = 30.0
    read_timeout: float = 60.0
    handshake_timeout: float = 10.0
    topology_delay: float = 1.0  # coalescing of our own topology updates
    dial_timeout: float = 30.0
    min_version: int = 1
    # identity overrides (tests); a fresh random UID per start otherwise
    uid: int | None = None
    short_id: int | None = None
    seed: int | None = None


def split_settings(running: MeshConfig, wanted: MeshConfig) -> tuple[MeshConfig, tuple[str, ...]]:
    """(the config to run now: `wanted`'s live fields on `running`, the fields needing a
    restart because they differ)."""
    restart = tuple(f for f in RESTART_FIELDS if getattr(running, f) != getattr(wanted, f))
    return replace(running, **{f: getattr(wanted, f) for f in LIVE_FIELDS}), restart
