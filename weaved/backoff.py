"""Retry delays, the one backoff of weaved: an interval that starts at `low` and grows by a
factor with each failed attempt, up to `high`. Pure; time is always passed in (`now`, seconds
on any monotonic scale).

- `backoff_delay`: the delay after n failures in a row (Docker's event stream: 0.5 s doubling
  up to 30 s);
- `RetrySchedule`: Weave's connection maker for mesh targets (FACTS.md §2.5): the n-th retry
  waits a uniform random time in [i/2, 3i/2), i = 2 s * 1.5^(n-1), capped at 6 min;
- `TokenBucket`: Weave's accept limiter.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

__all__ = [
    "INITIAL_INTERVAL",
    "MAX_INTERVAL",
    "RESET_AFTER",
    "RetrySchedule",
    "TokenBucket",
    "backoff_delay",
    "grow",
]

INITIAL_INTERVAL = 2.0
MAX_INTERVAL = 360.0
GROWTH = 3 / 2
RESET_AFTER = 60.0
"""A connection that ends this long after its attempt was due is retried at once."""


def grow(interval: float, factor: float, high: float) -> float:
    """The interval after one more failure."""
    return min(interval * factor, high)


def backoff_delay(failures: int, low: float, high: float, factor: float = 2.0) -> float:
    """Seconds before the next attempt: `low` after a session that worked ended (0 failures:
    the other side restarted and is probably back soon) and after the first failure, then
    `factor` times more with each further failure, at most `high`."""
    return min(low * factor ** min(max(failures - 1, 0), 32), high)


@dataclass
class RetrySchedule:
    try_after: float | None = None  # None: never (or not scheduled)
    interval: float = INITIAL_INTERVAL

    def try_now(self, now: float) -> None:
        self.try_after = now
        self.interval = INITIAL_INTERVAL

    def try_later(self, now: float, rng: random.Random) -> None:
        self.try_after = now + self.interval / 2 + rng.random() * self.interval
        self.interval = grow(self.interval, GROWTH, MAX_INTERVAL)

    def try_never(self) -> None:
        self.try_after = None
        self.interval = MAX_INTERVAL

    def after_connection_ended(self, now: float, rng: random.Random) -> None:
        """A connection that lasted (a minute past its due time) resets the backoff."""
        if self.try_after is not None and now > self.try_after + RESET_AFTER:
            self.try_now(now)
        else:
            self.try_later(now, rng)


class TokenBucket:
    """Weave's accept limiter: `capacity` tokens, one more every `interval` seconds."""

    def __init__(self, capacity: int, interval: float, now: float) -> None:
        self.capacity = capacity
        self.interval = interval
        # Time at which the bucket would hold zero tokens.
        self._empty_at = now - capacity * interval

    def take(self, now: float) -> float:
        """Consume a token; return how long to wait before it may be used (0: now)."""
        earliest = now - self.capacity * self.interval
        if self._empty_at < earliest:
            self._empty_at = earliest
        self._empty_at += self.interval
        return max(0.0, self._empty_at - now)
