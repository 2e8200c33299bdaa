"""One event-loop timer at a state machine's next deadline.

The sans-I/O controls (sleeve's heartbeats and PMTU search, fast datapath's health checks)
only say when they next need `on_timer`; a forwarder keeps exactly one pending callback for
that, moved whenever the deadline changes.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

__all__ = ["DeadlineTimer"]


class DeadlineTimer:
    def __init__(self, fire: Callable[[], None]) -> None:
        self._fire = fire
        self._handle: asyncio.TimerHandle | None = None

    def set(self, deadline: float | None) -> None:
        """Fire at `deadline` (loop time) instead of any earlier setting; None: not at all."""
        self.cancel()
        if deadline is not None:
            self._handle = asyncio.get_running_loop().call_at(deadline, self._expired)

    def cancel(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None

    def _expired(self) -> None:
        self._handle = None
        self._fire()
