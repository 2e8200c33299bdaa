"""Rate-limited logging: one line per cause per interval, with the count of those suppressed.

Anything a remote can trigger once per packet, attempt or connection goes through this, so a
flood costs a few lines a second instead of tens of thousands:

    _limited = RateLimitedLog(log, interval=10.0)
    _limited.log(logging.INFO, ("accepted", addr[0]), "connection accepted addr=%s", addr)

The first message of a cause is logged at once; further ones within `interval` are counted
and the count is appended to the next line of that cause (`(42 similar suppressed)`). Causes
are kept in a bounded table, so a flood of distinct causes cannot grow memory either.
"""

from __future__ import annotations

import logging
import time
from collections import OrderedDict
from collections.abc import Callable, Hashable
from dataclasses import dataclass

__all__ = ["RateLimitedLog"]

MAX_CAUSES = 1024


@dataclass
class _Cause:
    last: float
    suppressed: int = 0


class RateLimitedLog:
    def __init__(
        self,
        logger: logging.Logger,
        interval: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
        max_causes: int = MAX_CAUSES,
    ) -> None:
        self._logger = logger
        self._interval = interval
        self._clock = clock
        self._max = max_causes
        self._causes: OrderedDict[Hashable, _Cause] = OrderedDict()

    def log(
        self, level: int, cause: Hashable, msg: str, *args: object, exc_info: bool = False
    ) -> bool:
        """Log `msg % args` unless `cause` was logged within the interval; True if logged."""
        if not self._logger.isEnabledFor(level):
            return False
        now = self._clock()
        entry = self._causes.get(cause)
        if entry is not None and now - entry.last < self._interval:
            entry.suppressed += 1
            return False
        suppressed = entry.suppressed if entry is not None else 0
        self._causes[cause] = _Cause(now)
        self._causes.move_to_end(cause)
        while len(self._causes) > self._max:
            self._causes.popitem(last=False)
        if suppressed:
            msg += " (%d similar suppressed)"
            args = (*args, suppressed)
        self._logger.log(level, msg, *args, exc_info=exc_info)
        return True

    def info(self, cause: Hashable, msg: str, *args: object) -> bool:
        return self.log(logging.INFO, cause, msg, *args)

    def warning(self, cause: Hashable, msg: str, *args: object) -> bool:
        return self.log(logging.WARNING, cause, msg, *args)

    def error(self, cause: Hashable, msg: str, *args: object) -> bool:
        return self.log(logging.ERROR, cause, msg, *args)
