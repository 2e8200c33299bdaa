"""Frozen snapshots of the router for the control API and `weave status` (FACTS.md §12)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum

from weaved.mesh.gossip_api import PeerName
from weaved.mesh.reasons import CloseReason

__all__ = [
    "BroadcastRoute",
    "ConnectionState",
    "LocalConnectionStatus",
    "MeshStatus",
    "PeerConnectionStatus",
    "PeerStatus",
    "RetryTime",
    "UnicastRoute",
    "go_time_string",
]


class ConnectionState(StrEnum):
    ESTABLISHED = "established"
    PENDING = "pending"
    RETRYING = "retrying"
    FAILED = "failed"
    CONNECTING = "connecting"
    WAITING = "waiting"


@dataclass(frozen=True)
class PeerConnectionStatus:
    """A connection as its peer reports it (status peers)."""

    name: PeerName
    nickname: str
    address: str
    outbound: bool
    established: bool


@dataclass(frozen=True)
class PeerStatus:
    name: PeerName
    nickname: str
    uid: int
    short_id: int
    version: int
    connections: tuple[PeerConnectionStatus, ...]


@dataclass(frozen=True)
class RetryTime:
    """When a failed target is tried again: wall clock (Unix seconds) and seconds since the
    router started (printed like Go's monotonic clock reading, `m=+75.567415593`)."""

    wall_ns: int
    monotonic_ns: int


@dataclass(frozen=True)
class LocalConnectionStatus:
    """One line of `status connections`: a connection of ours or a target not connected."""

    address: str
    outbound: bool
    state: ConnectionState
    info: str  # Weave's text: "sleeve 3e:...(host1)", or the error and retry time
    attrs: Mapping[str, object] | None = None
    peer: PeerName | None = None
    nickname: str = ""
    # for targets not connected: the typed reason of the last failure, and when to retry
    reason: CloseReason | None = None
    error: str | None = None
    retry: RetryTime | None = None
    retry_never: bool = False


@dataclass(frozen=True)
class UnicastRoute:
    dest: PeerName
    via: PeerName


@dataclass(frozen=True)
class BroadcastRoute:
    source: PeerName
    via: tuple[PeerName, ...]


@dataclass(frozen=True)
class MeshStatus:
    name: PeerName
    nickname: str
    port: int
    encryption: bool
    peer_discovery: bool
    peers: tuple[PeerStatus, ...]
    unicast_routes: tuple[UnicastRoute, ...]
    broadcast_routes: tuple[BroadcastRoute, ...]
    connections: tuple[LocalConnectionStatus, ...]
    targets: tuple[str, ...]
    trusted_subnets: tuple[str, ...]
    termination_count: int = 0
    overlay_diagnostics: Mapping[str, object] = field(default_factory=dict)
    protocol: str = "weave"
    protocol_min_version: int = 1
    protocol_max_version: int = 2


def go_time_string(t: RetryTime) -> str:
    """Go's `time.Time.String()` in UTC with the monotonic reading, as Weave prints retry
    times: `2026-11-21 23:41:00.74934096 +0000 UTC m=+75.567415593`."""
    seconds, nanos = divmod(t.wall_ns, 1_000_000_000)
    stamp = datetime.fromtimestamp(seconds, tz=UTC).strftime("%Y-%m-%d %H:%M:%S")
    frac = f".{nanos:09d}".rstrip("0") if nanos else ""
    sign = "+" if t.monotonic_ns >= 0 else "-"
    mono_s, mono_ns = divmod(abs(t.monotonic_ns), 1_000_000_000)
    return f"{stamp}{frac} +0000 UTC m={sign}{mono_s}.{mono_ns:09d}"
