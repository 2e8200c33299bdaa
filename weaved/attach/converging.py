"""Which converges may have planned without a plug's or an unplug's change.

An attach makes what the converge would make for it (the port, its anti-spoofing elements,
weaveDNS's route back) and asks for no converge. A converge plans from facts taken at its
start: one that took them before the attach was recorded, and observed the kernel after the
plug, may remove what the plug made (or, for a detach, put back what the unplug removed).
The part counts the facts taken and the converges finished; a call that overlapped a
converge makes its objects again (idempotently) once that converge has finished.
"""

from __future__ import annotations

import asyncio

Since = tuple[bool, int]  # (a converge was under way, facts taken so far)


class Converges:
    def __init__(self) -> None:
        self.taken = 0  # facts taken (each converge takes them once; `plan` requests too)
        self.done = 0  # the facts count the last finished converge had seen
        self._finished = asyncio.Event()

    def facts_taken(self) -> None:
        self.taken += 1

    def converged(self) -> None:
        self.done = self.taken
        self._finished.set()
        self._finished = asyncio.Event()

    def since(self) -> Since:
        return self.taken != self.done, self.taken

    def raced(self, since: Since) -> bool:
        """A converge may have planned without the call begun at `since`: one was under way
        then, or one took facts meanwhile."""
        under_way, taken = since
        return under_way or self.taken != taken

    async def settled(self, timeout: float) -> None:
        """Until every converge that took facts so far has finished (at most `timeout`: a
        failed converge never says so; a `plan` request's facts are followed by none)."""
        wanted = self.taken
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while self.done < wanted and (left := deadline - loop.time()) > 0:
            try:
                await asyncio.wait_for(self._finished.wait(), left)
            except TimeoutError:
                return
