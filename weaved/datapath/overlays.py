"""The overlays this build offers the mesh, by the name peers announce in the `Overlays`
handshake feature. The router makes those its config lists (`MeshConfig.overlays`, in
preference order) from these factories; the daemon's wiring hands them over, so the mesh
never imports a data path.

    router = Router(config, overlay_factories=OVERLAYS)
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType

from weaved.datapath.fastdp.config import OVERLAY_NAME
from weaved.datapath.fastdp.overlay import FastdpOverlay
from weaved.datapath.sleeve.overlay import SleeveOverlay
from weaved.mesh.overlay import Overlay, OverlayFactory

__all__ = ["OVERLAYS", "fastdp_overlay", "sleeve_overlay"]


def sleeve_overlay(host: str, port: int) -> Overlay:
    """Weave's sleeve: UDP on the mesh port."""
    return SleeveOverlay(host, port)


def fastdp_overlay(host: str, port: int) -> Overlay:
    """The fast datapath: kernel VXLAN on the mesh port + 1; only weaved peers know its name."""
    return FastdpOverlay(host, port + 1)


OVERLAYS: Mapping[str, OverlayFactory] = MappingProxyType(
    {OVERLAY_NAME: fastdp_overlay, "sleeve": sleeve_overlay}
)
