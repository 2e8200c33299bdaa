"""Which inbound TCP connections the router takes on before anyone is authenticated. Pure.

A connection is "pending" from accept until its introduction is over (features received and,
with a password, proved). Pending connections cost a file descriptor and a buffer each while
nobody knows who is at the other end, so they are capped, per source address and in total;
and each source has a small token bucket (Weave throttles accepts against password guessing,
but with one bucket for everybody, so an attacker's flood delayed every real peer's reconnect
too). A source that is one of our peers (spec targets, current connections) is not held to the
total cap: strangers filling it cannot lock a known peer out.

Refused connections are closed at once; the accept loop never sleeps.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

__all__ = ["Admission", "AdmissionLimits"]


@dataclass(frozen=True)
class AdmissionLimits:
    pending_total: int = 128
    pending_per_source: int = 8
    burst_per_source: int = 20
    refill_seconds: float = 0.5  # one more accept per source every this many seconds
    sources_tracked: int = 4096


class Admission:
    def __init__(self, limits: AdmissionLimits | None = None) -> None:
        self.limits = limits or AdmissionLimits()
        self._pending: dict[str, int] = {}
        self._total = 0
        # source -> the time its bucket would be empty (as backoff.TokenBucket), LRU-bounded
        self._empty_at: OrderedDict[str, float] = OrderedDict()
        self.refused = 0

    @property
    def pending(self) -> int:
        return self._total

    def pending_from(self, source: str) -> int:
        return self._pending.get(source, 0)

    def admit(self, source: str, now: float, known_peer: bool = False) -> str | None:
        """None: take the connection (and count it pending); else why it is refused."""
        lim = self.limits
        why = self._refusal(source, now, known_peer)
        if why is not None:
            self.refused += 1
            return why
        full_at = now - lim.burst_per_source * lim.refill_seconds
        self._empty_at[source] = max(self._empty_at.get(source, full_at), full_at) + (
            lim.refill_seconds
        )
        self._empty_at.move_to_end(source)
        while len(self._empty_at) > lim.sources_tracked:
            self._empty_at.popitem(last=False)
        self._pending[source] = self._pending.get(source, 0) + 1
        self._total += 1
        return None

    def _refusal(self, source: str, now: float, known_peer: bool) -> str | None:
        lim = self.limits
        if self._pending.get(source, 0) >= lim.pending_per_source:
            return f"{lim.pending_per_source} connections from this address still in handshake"
        if not known_peer and self._total >= lim.pending_total:
            return f"{lim.pending_total} connections still in handshake"
        empty_at = self._empty_at.get(source)
        if empty_at is not None and empty_at > now - lim.refill_seconds:  # no token left
            return "accepting too fast from this address"
        return None

    def done(self, source: str) -> None:
        """A pending connection's introduction is over (or it ended)."""
        n = self._pending.get(source, 0)
        if n <= 0:
            return
        if n == 1:
            del self._pending[source]
        else:
            self._pending[source] = n - 1
        self._total -= 1
