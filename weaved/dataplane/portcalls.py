"""Container ports a part is plugging or unplugging: a converge leaves their elements alone.

A converge plans the anti-spoofing elements (compile/antispoof.py) from the parts' records as
they were when it took its facts, and observes the kernel a moment later. A plug that runs in
between adds a port's elements before its record says so, and the plan would remove them (an
unplug: put them back). The attach answered, yet its container could not send until the next
converge. So each part's call names its ports here, from before its kernel work until its
record is stored; a converge skips the element changes of every port with a call under way or
ended after it took its facts. The next converge plans them from the new records.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager


class PortCalls:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._clock = 0  # calls ended so far
        self._under_way: Counter[str] = Counter()
        self._ended: dict[str, int] = {}  # port → the clock its last call ended at

    def now(self) -> int:
        """The moment to hand to `busy_since` (taken before the records are read)."""
        with self._lock:
            return self._clock

    @contextmanager
    def call(self, *ports: str) -> Iterator[None]:
        """A part's call for `ports` (names it may plug under; empty ones are ignored)."""
        named = [p for p in ports if p]
        with self._lock:
            self._under_way.update(named)
        try:
            yield
        finally:
            with self._lock:
                self._clock += 1
                self._under_way.subtract(named)
                for port in named:
                    if self._under_way[port] <= 0:
                        del self._under_way[port]
                    self._ended[port] = self._clock

    def busy_since(self, since: int) -> frozenset[str]:
        """Ports with a call under way, or one ended after `since`. Ends up to `since` are
        forgotten: a daemon's converges take their facts one after another."""
        with self._lock:
            self._ended = {p: t for p, t in self._ended.items() if t > since}
            return frozenset(self._under_way) | frozenset(self._ended)


# One per process: the parts' calls and the daemon's converges meet here.
PORT_CALLS = PortCalls()
