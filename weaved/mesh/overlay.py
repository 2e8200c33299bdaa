"""Overlays: what turns an added TCP connection into an established one (FACTS.md §2.3, §2.4).

An `Overlay` (sleeve, fastdp) prepares one `Forwarder` per connection. The mesh only
defines this interface: the data paths implement it and hand the router an `OverlayFactory`
per overlay name (weaved.datapath.overlays), so the mesh never imports them. The router only
talks to an `OverlaySwitch`, which announces our overlays in the `Overlays` feature, picks
the overlays both sides run (ordered as the dialling side lists them), prefixes control
messages with the forwarder index (tag 7), and reports the connection established as soon
as one forwarder is. A remote that sent no `Overlays` feature gets the compatibility overlay
(sleeve) with the legacy control tags 1-3.

A forwarder whose path stops working but that keeps trying (fastdp: heartbeats through the
tunnel lost) reports `unhealthy(reason)` and later `established()` again; the switch then
picks the next established forwarder and back. The reason why a preferred forwarder is not
the one in use (unhealthy, failed, or not offered for this connection) is kept and shown as
the `fallback` attribute of the connection, so a fallback is never silent.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from weaved.lograte import RateLimitedLog
from weaved.mesh.gossip_api import PeerName
from weaved.mesh.messages import encode_legacy_control, encode_overlay_control
from weaved.mesh.peername import format_peer_name

__all__ = [
    "Forwarder",
    "ForwarderHooks",
    "NoCommonOverlay",
    "NullOverlay",
    "Overlay",
    "OverlayFactory",
    "OverlayParams",
    "OverlaySwitch",
    "SwitchForwarder",
]

log = logging.getLogger(__name__)
_limited = RateLimitedLog(log, 10.0)

Address = tuple[str, int]


@dataclass(frozen=True)
class OverlayParams:
    remote: PeerName
    remote_nickname: str
    local_addr: Address  # of the TCP connection: the local IP to send from
    remote_addr: Address  # of the TCP connection: where to send, if we dialled
    outbound: bool
    conn_uid: int
    session_key: bytes | None = field(repr=False)  # only when the link is untrusted
    features: Mapping[str, str] = field(default_factory=dict)


def _ignore_reason(_reason: str) -> None:
    return None


@dataclass(frozen=True)
class ForwarderHooks:
    """How a forwarder talks back to its connection."""

    send_control: Callable[[int, bytes], None]  # (sub-tag, body) to the remote's forwarder
    established: Callable[[], None]  # working (again)
    failed: Callable[[str], None]  # given up for good: the forwarder is stopped
    unhealthy: Callable[[str], None] = _ignore_reason  # not working now, still trying


class Forwarder(Protocol):
    """One overlay's side of one connection."""

    name: str

    def confirm(self) -> None:
        """The connection is wanted (not a duplicate): start heartbeats."""
        ...

    def control_message(self, subtag: int, body: bytes) -> None: ...

    def attrs(self) -> dict[str, object]:
        """`{"name": ..., "mtu": ...}` as shown in status connections."""
        ...

    def stop(self) -> None: ...


class Overlay(Protocol):
    name: str

    async def start(self, us: PeerName, is_known_peer: Callable[[PeerName], bool]) -> None: ...

    async def stop(self) -> None: ...

    def prepare(self, params: OverlayParams, hooks: ForwarderHooks) -> Forwarder: ...

    def diagnostics(self) -> object: ...


OverlayFactory = Callable[[str, int], Overlay]
"""Makes an overlay from the mesh's listen address and TCP port (it may use port + n)."""


class NoCommonOverlay(Exception):
    pass


class _NullForwarder:
    name = "none"

    def __init__(self, hooks: ForwarderHooks) -> None:
        self._hooks = hooks

    def confirm(self) -> None:
        self._hooks.established()

    def control_message(self, subtag: int, body: bytes) -> None:
        return None

    def attrs(self) -> dict[str, object]:
        return {"name": "none"}

    def stop(self) -> None:
        return None


class NullOverlay:
    """No data plane: a connection is established as soon as it is confirmed. For tests and
    benchmarks of the control plane only; Weave Net peers will not talk to it."""

    name = "none"

    async def start(self, us: PeerName, is_known_peer: Callable[[PeerName], bool]) -> None:
        return None

    async def stop(self) -> None:
        return None

    def prepare(self, params: OverlayParams, hooks: ForwarderHooks) -> Forwarder:
        return _NullForwarder(hooks)

    def diagnostics(self) -> object:
        return None


@dataclass
class _Sub:
    name: str
    fwd: Forwarder | None
    established: bool = False
    reason: str = ""  # why it is not working (unhealthy, failed, unusable); "" when it is


class SwitchForwarder:
    """The per-connection forwarder the router sees."""

    def __init__(
        self, remote: PeerName, subs: list[_Sub], hooks: ForwarderHooks, legacy: bool
    ) -> None:
        self.remote = remote
        self.subs = subs
        self.legacy = legacy
        self._hooks = hooks
        self._established = False
        self._failed = False
        self.best = -1

    @property
    def name(self) -> str:
        best = self.best_forwarder()
        return best.name if best is not None else "none"

    def best_forwarder(self) -> Forwarder | None:
        return self.subs[self.best].fwd if 0 <= self.best < len(self.subs) else None

    def forwarder(self, name: str) -> Forwarder | None:
        for sub in self.subs:
            if sub.name == name:
                return sub.fwd
        return None

    def confirm(self) -> None:
        for sub in list(self.subs):
            if sub.fwd is not None:
                sub.fwd.confirm()

    def control_message(self, index: int, subtag: int, body: bytes) -> None:
        if not 0 <= index < len(self.subs):
            _limited.info(
                ("unknown-forwarder", self.remote),
                "overlay control for unknown forwarder ignored peer=%s index=%d",
                format_peer_name(self.remote),
                index,
            )
            return
        fwd = self.subs[index].fwd
        if fwd is not None:
            fwd.control_message(subtag, body)

    def attrs(self) -> dict[str, object] | None:
        best = self.best_forwarder()
        if best is None:
            return None
        out = best.attrs()
        reasons = [sub.reason for sub in self.subs[: self.best] if sub.reason]
        if reasons:
            out = {**out, "fallback": "; ".join(reasons)}
        return out

    def stop(self) -> None:
        for sub in self.subs:
            if sub.fwd is not None:
                fwd, sub.fwd = sub.fwd, None
                fwd.stop()

    # callbacks from sub-forwarders

    def _sub_established(self, index: int) -> None:
        self.subs[index].established = True
        self.subs[index].reason = ""
        self._choose_best()
        if not self._established:
            self._established = True
            self._hooks.established()

    def _sub_unhealthy(self, index: int, reason: str) -> None:
        sub = self.subs[index]
        was, sub.established, sub.reason = sub.established, False, reason
        if was:
            log.info(
                "overlay forwarder unhealthy peer=%s overlay=%s reason=%s",
                format_peer_name(self.remote),
                sub.name,
                reason,
            )
            self._choose_best()

    def _sub_failed(self, index: int, reason: str) -> None:
        sub = self.subs[index]
        sub.established, sub.reason = False, reason
        log.info(
            "overlay forwarder failed peer=%s overlay=%s reason=%s",
            format_peer_name(self.remote),
            sub.name,
            reason,
        )
        if sub.fwd is not None:
            fwd, sub.fwd = sub.fwd, None
            fwd.stop()
        self._choose_best(reason)

    def _choose_best(self, reason: str = "") -> None:
        working = [i for i, s in enumerate(self.subs) if s.fwd is not None]
        established = [i for i in working if self.subs[i].established]
        if not working:
            if not self._failed:
                self._failed = True
                self._hooks.failed(
                    reason or f"no working forwarders to {format_peer_name(self.remote)}"
                )
            return
        best = established[0] if established else working[0]
        if best != self.best:
            self.best = best
            _limited.info(
                ("using", self.subs[best].name),
                "overlay using peer=%s overlay=%s",
                format_peer_name(self.remote),
                self.subs[best].name,
            )


class OverlaySwitch:
    def __init__(self, overlays: Sequence[Overlay], compat: str | None = "sleeve") -> None:
        names = [o.name for o in overlays]
        if len(set(names)) != len(names):
            raise ValueError(f"repeated overlay name in {names}")
        self.overlays = list(overlays)
        self._compat = compat if compat in names else None

    @property
    def names(self) -> list[str]:
        return [o.name for o in self.overlays]

    def features(self) -> dict[str, str]:
        """`Overlays`, plus any extra features an overlay announces through an optional
        `features()` method (the sleeve data plane's offload capability; Weave ignores
        unknown keys)."""
        features: dict[str, str] = {}
        for o in self.overlays:
            extra = getattr(o, "features", None)
            if callable(extra):
                features.update(extra())
        features["Overlays"] = " ".join(self.names)
        return features

    async def start(self, us: PeerName, is_known_peer: Callable[[PeerName], bool]) -> None:
        for o in self.overlays:
            await o.start(us, is_known_peer)

    async def stop(self) -> None:
        for o in self.overlays:
            await o.stop()

    def diagnostics(self) -> dict[str, object]:
        return {o.name: o.diagnostics() for o in self.overlays}

    def prepare(
        self,
        params: OverlayParams,
        send_body: Callable[[bytes], None],
        on_established: Callable[[], None],
        on_failed: Callable[[str], None],
    ) -> SwitchForwarder:
        """Raises `NoCommonOverlay`. `send_body` queues a whole message on the connection."""
        hooks = ForwarderHooks(lambda _t, _b: None, on_established, on_failed)
        by_name = {o.name: o for o in self.overlays}
        if "Overlays" not in params.features and self._compat is not None:
            ordered = [self._compat]
            legacy = True
        else:
            theirs = params.features.get("Overlays", "").split(" ")
            common = [n for n in theirs if n in by_name]
            if not common:
                raise NoCommonOverlay("no overlays in common with peer")
            # Both ends must index forwarders alike: the dialling side's order decides.
            ordering = self.names if params.outbound else theirs
            ordered = [n for n in ordering if n in common][:256]
            legacy = False
        switch = SwitchForwarder(params.remote, [_Sub(n, None) for n in ordered], hooks, legacy)
        for index, name in enumerate(ordered):
            try:
                switch.subs[index].fwd = by_name[name].prepare(
                    params, _sub_hooks(switch, index, send_body, legacy)
                )
            except Exception as e:
                switch.subs[index].reason = str(e)
                _limited.info(
                    ("unusable", name, str(e)),
                    "overlay unusable peer=%s overlay=%s error=%s",
                    format_peer_name(params.remote),
                    name,
                    e,
                )
        if all(sub.fwd is None for sub in switch.subs):
            raise NoCommonOverlay(f"no working forwarders to {format_peer_name(params.remote)}")
        switch._choose_best()
        return switch


def _sub_hooks(
    switch: SwitchForwarder, index: int, send_body: Callable[[bytes], None], legacy: bool
) -> ForwarderHooks:
    def send_control(subtag: int, body: bytes) -> None:
        if legacy:
            send_body(encode_legacy_control(subtag, body))
        else:
            send_body(encode_overlay_control(index, subtag, body))

    def established() -> None:
        switch._sub_established(index)

    def failed(reason: str) -> None:
        switch._sub_failed(index, reason)

    def unhealthy(reason: str) -> None:
        switch._sub_unhealthy(index, reason)

    return ForwarderHooks(send_control, established, failed, unhealthy)
