"""How the fast datapath shows itself: the `Service: fastdp` status block, the `FastDP`
report object, `weaved status fastdp`. Pure: from the device, the paths and the problem."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from weaved.datapath.fastdp.config import DISPLAY_NAME
from weaved.datapath.fastdp.fdb import Device
from weaved.datapath.fastdp.overlay import PathView
from weaved.mesh.peername import format_peer_name

__all__ = ["render_paths", "report_json", "status_section"]


def status_section(
    device: Device | None, paths: Sequence[PathView], underlay_mtu: int, problem: str | None
) -> str:
    served = sum(1 for p in paths if p.served)
    lines = ["        Service: fastdp"]
    if device is not None:
        lines.append(
            f"         Device: {device.name} (VXLAN id {device.vni}, UDP {device.port}, "
            f"MTU {device.mtu}, underlay MTU {underlay_mtu})"
        )
    lines.append(f"    Connections: {served} fastdp, {len(paths) - served} sleeve")
    if problem:
        lines.append(f"        Problem: {problem}")
    return "\n".join(lines)


def report_json(
    device: Device | None, paths: Sequence[PathView], underlay_mtu: int, problem: str | None
) -> dict[str, Any]:
    return {
        "Enabled": device is not None,
        "Device": device.name if device else None,
        "VNI": device.vni if device else None,
        "Port": device.port if device else None,
        "MTU": device.mtu if device else None,
        "UnderlayMTU": underlay_mtu,
        "Problem": problem,
        "Paths": [_path_json(p) for p in paths],
    }


def render_paths(paths: Sequence[PathView]) -> str:
    """`weaved status fastdp`: one line per peer with a fastdp forwarder."""
    out = []
    for p in paths:
        used = DISPLAY_NAME if p.served else "sleeve"
        state = p.state.value + (f" ({p.reason})" if p.reason else "")
        peer = f"{format_peer_name(p.peer)}({p.nickname})"
        out.append(f"{peer:<28} {p.ip:<15} {used:<6} {state} macs={len(p.macs)}\n")
    return "".join(out)


def _path_json(p: PathView) -> dict[str, Any]:
    return {
        "Peer": format_peer_name(p.peer),
        "NickName": p.nickname,
        "Address": p.ip,
        "Port": p.port,
        "State": p.state.value,
        "Using": DISPLAY_NAME if p.served else "sleeve",
        "Reason": p.reason,
        "MACs": sorted(p.macs),
    }
