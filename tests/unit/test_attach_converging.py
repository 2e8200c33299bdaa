"""Which converges may have planned without an attach (attach/converging.py)."""

from __future__ import annotations

import asyncio

from weaved.attach.converging import Converges


def test_a_call_races_a_converge_under_way_or_one_that_took_facts_meanwhile() -> None:
    c = Converges()
    quiet = c.since()
    assert not c.raced(quiet)  # nothing converged meanwhile: the attach needs nothing more
    c.facts_taken()  # a converge starts during the call …
    assert c.raced(quiet)
    under_way = c.since()
    c.converged()  # … and ends before the next call ends: that call began while it ran
    assert c.raced(under_way)
    assert not c.raced(c.since())


def test_settled_waits_for_the_converges_that_took_facts_and_no_longer() -> None:
    async def scenario() -> None:
        c = Converges()
        await asyncio.wait_for(c.settled(5), 1)  # none under way: at once
        c.facts_taken()
        waiter = asyncio.ensure_future(c.settled(5))
        await asyncio.sleep(0.05)
        assert not waiter.done()
        c.facts_taken()  # a later converge's facts: not waited for by the earlier waiter…
        c.converged()  # … since this converge saw them all
        await asyncio.wait_for(waiter, 1)
        c.facts_taken()  # a `plan` request: no converge follows; the wait is bounded
        await asyncio.wait_for(c.settled(0.1), 1)

    asyncio.run(scenario())
