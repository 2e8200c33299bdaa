"""The router's local connections and spec targets as `weaved status` shows them (pure).

Connections are labelled as Weave labels them (overlay name, `NAME(nickname)`, encrypted or
not when a password is set); targets that are not connected say why and when they are retried.
"""

from __future__ import annotations

from collections.abc import Mapping

from weaved.mesh.connection import Connection
from weaved.mesh.gossip_api import PeerName
from weaved.mesh.peername import format_peer_name
from weaved.mesh.reasons import CloseReason
from weaved.mesh.status import ConnectionState, LocalConnectionStatus, RetryTime, go_time_string
from weaved.mesh.targets import Target, TargetState
from weaved.mesh.topology import Peer, Topology

__all__ = ["connection_status", "peer_label", "target_statuses"]


def peer_label(peer: Peer | None, fallback: PeerName | None = None) -> str:
    """`NAME(nickname)`, or the bare name of `fallback` when the peer is unknown."""
    if peer is None:
        return format_peer_name(fallback or PeerName(0))
    return f"{format_peer_name(peer.name)}({peer.nickname})"


def connection_status(
    conn: Connection, topology: Topology, password_set: bool
) -> LocalConnectionStatus:
    attrs = dict(conn.forwarder.attrs() or {}) if conn.forwarder is not None else {}
    name = str(attrs.get("name", "none"))
    remote = topology.peers.get(conn.remote.name) if conn.remote else None
    info = f"{name:<6} {peer_label(remote or conn.remote)}"
    if password_set:
        if conn.untrusted:
            info = f"{'encrypted':<11} {info}"
            if attrs:
                attrs["encrypted"] = True
        else:
            info = f"{'unencrypted':<11} {info}"
    return LocalConnectionStatus(
        address=conn.address,
        outbound=conn.outbound,
        state=ConnectionState.ESTABLISHED if conn.established else ConnectionState.PENDING,
        info=info,
        attrs=attrs or None,
        peer=conn.remote.name if conn.remote else None,
        nickname=remote.nickname if remote else "",
    )


def target_statuses(
    targets: Mapping[str, Target],
    reasons: Mapping[str, CloseReason],
    started_mono: float,
    started_wall_ns: int,
) -> list[LocalConnectionStatus]:
    """Targets waiting for a retry or being attempted; `started_*` (the router's start, on the
    loop clock and the wall clock) turn loop times into printable retry times."""

    def retry_time(due: float) -> RetryTime:
        since_start_ns = round((due - started_mono) * 1e9)
        return RetryTime(wall_ns=started_wall_ns + since_start_ns, monotonic_ns=since_start_ns)

    out: list[LocalConnectionStatus] = []
    for address, target in targets.items():
        reason = reasons.get(address)
        if target.state == TargetState.WAITING:
            due = target.schedule.try_after
            retry = retry_time(due) if due is not None else None
            until = go_time_string(retry) if retry is not None else "never"
            if target.last_error is None:
                state, info = ConnectionState.WAITING, f"until: {until}"
            else:
                state, info = ConnectionState.FAILED, f"{target.last_error}, retry: {until}"
            out.append(
                LocalConnectionStatus(
                    address=address,
                    outbound=True,
                    state=state,
                    info=info,
                    reason=reason,
                    error=target.last_error,
                    retry=retry,
                    retry_never=due is None,
                )
            )
        elif target.state == TargetState.ATTEMPTING:
            if target.last_error is None:
                out.append(LocalConnectionStatus(address, True, ConnectionState.CONNECTING, ""))
            else:
                out.append(
                    LocalConnectionStatus(
                        address,
                        True,
                        ConnectionState.RETRYING,
                        target.last_error,
                        reason=reason,
                        error=target.last_error,
                    )
                )
    return out
