"""One connection's fast-datapath forwarder: its path's health (`health.PathControl`) driven by
heartbeats through the tunnel and control messages on the TCP connection; it tells its
`FastdpOverlay` when the path changed, and announces our MACs to the peer."""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING

from weaved.datapath.fastdp.config import DISPLAY_NAME
from weaved.datapath.fastdp.frames import Heartbeat, build_heartbeat
from weaved.datapath.fastdp.health import (
    Action,
    Healthy,
    PathChanged,
    PathControl,
    PathState,
    SendControl,
    SendHeartbeat,
    Unhealthy,
)
from weaved.datapath.fastdp.messages import ControlError, Macs, decode_control, encode_control
from weaved.mesh.deadline_timer import DeadlineTimer
from weaved.mesh.overlay import ForwarderHooks, OverlayParams
from weaved.mesh.peername import format_peer_name

if TYPE_CHECKING:
    from weaved.datapath.fastdp.overlay import FastdpOverlay

__all__ = ["FastdpForwarder"]

log = logging.getLogger(__name__)


class FastdpForwarder:
    name = DISPLAY_NAME

    def __init__(
        self, overlay: FastdpOverlay, params: OverlayParams, hooks: ForwarderHooks
    ) -> None:
        self._overlay = overlay
        self._hooks = hooks
        self.remote = params.remote
        self.nickname = params.remote_nickname
        self.ip = params.remote_addr[0]
        # The dialler knows where the peer listens (its mesh port + 1); the acceptor learns
        # it from the peer's hello.
        remote_port = params.remote_addr[1] + 1 if params.outbound else None
        self.control = PathControl(
            params.conn_uid,
            port=overlay.port,
            remote_port=remote_port,
            mtu=overlay.mtu,
            timing=overlay.timing,
            now=self._now(),
        )
        self._timer = DeadlineTimer(self._on_timer)
        self._stopped = False
        self._announced: frozenset[str] | None = None

    # --- Forwarder ------------------------------------------------------------------------------
    def confirm(self) -> None:
        if self._stopped:
            return
        old = self._overlay.forwarders.get(self.remote)
        self._overlay.forwarders[self.remote] = self
        if old is not None and old is not self:
            old.stop()
        now = self._now()
        self.control.set_blocked(self._overlay.blocked, now)
        self.control.set_ready(self._overlay.is_ready(self.remote), now)
        self.control.set_standby(self._overlay.standby_reason(self.remote), now)
        self._run(self.control.confirm(now))
        self.announce_macs()
        if not self._overlay.reconciled:
            asyncio.get_running_loop().call_later(
                self._overlay.timing.timeout, self._overlay.check_reconciled
            )
        self._overlay.changed(f"peer {format_peer_name(self.remote)} confirmed")

    def control_message(self, subtag: int, body: bytes) -> None:
        if self._stopped:
            return
        try:
            msg = decode_control(subtag, body)
        except ControlError as exc:
            log.info("fastdp control ignored peer=%s error=%s", format_peer_name(self.remote), exc)
            return
        self._run(self.control.on_control(msg, self._now()))

    def attrs(self) -> dict[str, object]:
        return {"name": DISPLAY_NAME, "mtu": self.control.mtu}

    def stop(self) -> None:
        if self._stopped:
            return
        self._stopped = True
        self._timer.cancel()
        if self._overlay.forwarders.get(self.remote) is self:
            del self._overlay.forwarders[self.remote]
            self._overlay.changed(f"peer {format_peer_name(self.remote)} gone")

    # --- from the overlay -------------------------------------------------------------------------
    def heartbeat(self, hb: Heartbeat) -> bool:
        if self._stopped or hb.conn_uid != self.control.conn_uid:
            return False
        self._run(self.control.on_heartbeat(hb.kind, hb.seq, self._now()))
        return True

    def kernel_changed(self, blocked: str | None, mtu: int, ready: bool) -> None:
        if self._stopped:
            return
        now = self._now()
        self.control.set_mtu(mtu)
        actions = self.control.set_blocked(blocked, now)
        actions += self.control.set_ready(ready, now)
        self._run(actions)

    def standby(self, reason: str | None) -> None:
        if not self._stopped:
            self._run(self.control.set_standby(reason, self._now()))

    def announce_macs(self) -> None:
        if self._stopped or self.control.state is PathState.STARTING:
            return
        macs = self._overlay.local_macs
        if macs != self._announced:
            self._announced = macs
            self._hooks.send_control(*encode_control(Macs(macs)))

    # --- internals --------------------------------------------------------------------------------
    @staticmethod
    def _now() -> float:
        return asyncio.get_running_loop().time()

    def _run(self, actions: list[Action]) -> None:
        for action in actions:
            if self._stopped:
                return
            if isinstance(action, SendHeartbeat):
                frame = build_heartbeat(
                    Heartbeat(
                        self.remote,
                        self._overlay.us,
                        action.kind,
                        self.control.conn_uid,
                        action.length,
                        action.seq,
                    )
                )
                self._overlay.send_frame(frame)
            elif isinstance(action, SendControl):
                self._hooks.send_control(action.subtag, action.body)
            elif isinstance(action, Healthy):
                log.info("fastdp path healthy peer=%s", format_peer_name(self.remote))
                self._hooks.established()
                self._overlay.changed("path healthy")
            elif isinstance(action, Unhealthy):
                log.info(
                    "fastdp path not usable peer=%s reason=%s",
                    format_peer_name(self.remote),
                    action.reason,
                )
                self._hooks.unhealthy(action.reason)
                self._overlay.changed("path unhealthy")
            elif isinstance(action, PathChanged):
                self._overlay.changed("path changed")
        self._schedule()

    def _schedule(self) -> None:
        self._timer.set(None if self._stopped else self.control.next_deadline())

    def _on_timer(self) -> None:
        if not self._stopped:
            self._run(self.control.on_timer(self._now()))
