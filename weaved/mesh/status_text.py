"""Render `MeshStatus` exactly in Weave Net 2.8.1's layouts (FACTS.md §12). Pure.

Texts follow weaver's templates, quirks included: attributes printed `key=value` with no
separator (`encrypted=truemtu=1414`), a trailing space when a connection has no attributes,
counts in the fixed order established, pending, retrying, failed, connecting. The `report`
part is a dict in Weave's key order; `go_json` serialises it like Go's MarshalIndent.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from weaved.mesh.peername import format_peer_name
from weaved.mesh.status import LocalConnectionStatus, MeshStatus

__all__ = [
    "cli_status_text",
    "go_json",
    "render_connections",
    "render_peers",
    "render_status",
    "render_status_router",
    "render_targets",
    "report_head",
    "report_router",
]

_CONNECTION_STATES = ("established", "pending", "retrying", "failed", "connecting")
VERSION_CHECK_DISABLED = "version check update disabled"


def _counts(counts: Counter[str], keys: Iterable[str]) -> str:
    return ", ".join(f"{counts[k]} {k}" for k in keys if k in counts)


def _state(enabled: bool) -> str:
    return "enabled" if enabled else "disabled"


def render_status_router(s: MeshStatus) -> str:
    """The router section of `weave status` (from `Service: router` to `TrustedSubnets`)."""
    if s.protocol_min_version == s.protocol_max_version:
        versions = f"{s.protocol_max_version}"
    else:
        versions = f"{s.protocol_min_version}..{s.protocol_max_version}"
    conn_counts = _counts(Counter(c.state.value for c in s.connections), _CONNECTION_STATES)
    peer_counts = _counts(
        Counter(
            "established" if c.established else "pending" for p in s.peers for c in p.connections
        ),
        ("established", "pending"),
    )
    connections = f"{len(s.connections)}" + (f" ({conn_counts})" if conn_counts else "")
    peers = f"{len(s.peers)}" + (f" (with {peer_counts} connections)" if peer_counts else "")
    trusted = ", ".join(s.trusted_subnets) if s.trusted_subnets else "none"
    return (
        "        Service: router\n"
        f"       Protocol: {s.protocol} {versions}\n"
        f"           Name: {format_peer_name(s.name)}({s.nickname})\n"
        f"     Encryption: {_state(s.encryption)}\n"
        f"  PeerDiscovery: {_state(s.peer_discovery)}\n"
        f"        Targets: {len(s.targets)}\n"
        f"    Connections: {connections}\n"
        f"          Peers: {peers}\n"
        f" TrustedSubnets: {trusted}\n"
    )


def render_status(
    s: MeshStatus,
    *,
    version: str = "unreleased",
    version_check: str = VERSION_CHECK_DISABLED,
    sections: Sequence[str] = (),
) -> str:
    """The whole `GET /status` body; `sections` are the other services' blocks (ipam, dns),
    each starting with its `        Service:` line."""
    text = f"        Version: {version} ({version_check})\n\n" + render_status_router(s)
    for section in sections:
        text += "\n" + section
    return text


def _attrs_text(attrs: Mapping[str, object] | None) -> str:
    if not attrs:
        return ""
    return "".join(f"{k}={_go_value(v)}" for k, v in sorted(attrs.items()) if k != "name")


def _go_value(v: object) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    return str(v)


def _connection_line(c: LocalConnectionStatus) -> str:
    arrow = "->" if c.outbound else "<-"
    return f"{arrow} {c.address:<21} {c.state.value:<11} {c.info} {_attrs_text(c.attrs)}\n"


def render_connections(s: MeshStatus) -> str:
    return "".join(_connection_line(c) for c in s.connections)


def render_peers(s: MeshStatus) -> str:
    out = []
    for p in s.peers:
        out.append(f"{format_peer_name(p.name)}({p.nickname})\n")
        for c in p.connections:
            arrow = "->" if c.outbound else "<-"
            who = f"{format_peer_name(c.name)}({c.nickname})"
            state = "established" if c.established else "pending"
            out.append(f"   {arrow} {c.address:<21} {who:<37} {state}\n")
    return "".join(out)


def target_as_given(target: str, port: int) -> str:
    """A target as the operator typed it: the spec stores `host:port`, Weave prints what was
    given (`weave connect 10.2.2.1` -> `10.2.2.1`), so the mesh's own port is left off."""
    suffix = f":{port}"
    if target.endswith(suffix) and not target.startswith("["):
        return target[: -len(suffix)]
    return target


def render_targets(s: MeshStatus) -> str:
    return "".join(f"{target_as_given(t, s.port)}\n" for t in s.targets)


def cli_status_text(body: str, section: str | None) -> str:
    """What `weave status [SUB]` prints for a status body: `status SUB` prints the body as it
    is (scripts cut and grep it; an empty section prints nothing); the whole status gets one
    empty line before and after (Weave's CLI `echo`es around it)."""
    if section:
        return body
    return "\n" + body.rstrip("\n") + "\n\n"


def report_head(version: str, ready: bool) -> dict[str, Any]:
    """The first keys of Weave's `GET /report`, in its order: scripts read
    `{{.VersionCheck.Enabled}}` (Weave's test 700); weaved never checks for new versions."""
    return {
        "Ready": ready,
        "Version": version,
        "VersionCheck": {
            "Enabled": False,
            "Success": False,
            "NewVersion": "",
            "NextCheckAt": "0001-01-01T00:00:00Z",
        },
    }


def report_router(s: MeshStatus, extra: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The `Router` object of `GET /report` (JSON), in Weave's key order. `extra` adds the
    data plane's keys (Interface, CaptureStats, MACs) after TrustedSubnets."""
    peers = [
        {
            "Name": format_peer_name(p.name),
            "NickName": p.nickname,
            "UID": p.uid,
            "ShortID": p.short_id,
            "Version": p.version,
            "Connections": [
                {
                    "Name": format_peer_name(c.name),
                    "NickName": c.nickname,
                    "Address": c.address,
                    "Outbound": c.outbound,
                    "Established": c.established,
                }
                for c in p.connections
            ]
            or None,
        }
        for p in s.peers
    ]
    report: dict[str, Any] = {
        "Protocol": s.protocol,
        "ProtocolMinVersion": s.protocol_min_version,
        "ProtocolMaxVersion": s.protocol_max_version,
        "Encryption": s.encryption,
        "PeerDiscovery": s.peer_discovery,
        "Name": format_peer_name(s.name),
        "NickName": s.nickname,
        "Port": s.port,
        "Peers": peers or None,
        "UnicastRoutes": [
            {"Dest": format_peer_name(r.dest), "Via": format_peer_name(r.via)}
            for r in s.unicast_routes
        ]
        or None,
        "BroadcastRoutes": [
            {
                "Source": format_peer_name(r.source),
                "Via": [format_peer_name(v) for v in r.via] or None,
            }
            for r in s.broadcast_routes
        ]
        or None,
        "Connections": [
            {
                "Address": c.address,
                "Outbound": c.outbound,
                "State": c.state.value,
                "Info": c.info,
                "Attrs": dict(sorted(c.attrs.items())) if c.attrs else None,
            }
            for c in s.connections
        ]
        or None,
        "TerminationCount": s.termination_count,
        "Targets": [target_as_given(t, s.port) for t in s.targets] or None,
        "OverlayDiagnostics": dict(s.overlay_diagnostics),
        "TrustedSubnets": list(s.trusted_subnets),
    }
    if extra:
        report.update(extra)
    return report


def go_json(value: Any) -> str:
    """Like Go's `json.MarshalIndent(v, "", "    ")`: HTML-sensitive characters escaped."""
    text = json.dumps(value, indent=4, ensure_ascii=False)
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")
