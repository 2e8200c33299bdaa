"""A rule with an anonymous interval set changed in place (e.g. `in-exposed` when IPAM gives
the host an exposed address): libnftables 1.0.6 aborts the whole process on `replace rule`
with such a set ("BUG: unhandled op 2"), which took the daemon down. The change runs in a
child process so that an abort fails this test instead of killing pytest."""

from __future__ import annotations

import sys

from tests.helpers import Netns

PROGRAM = """
from weaved.dataplane.nft import Nft
from weaved.compile.firewall import rule
from weaved.model.resources import Kind, Resource, State, attrs

def state(nets):
    return State.of([
        Resource("nft/ip/weaved", Kind.NFT_TABLE, attrs(family="ip")),
        Resource("nft/ip/weaved/forward", Kind.NFT_CHAIN,
                 attrs(type="filter", hook="forward", priority=0, policy="accept")),
        rule("ip", "forward", "first", 'oifname "weave" ct state established accept'),
        rule("ip", "forward", "in-exposed", f'oifname "weave" ip daddr {nets} accept'),
        rule("ip", "forward", "last", 'oifname "weave" drop'),
    ])

nft = Nft()
nft.commit(state("10.32.0.0/12"))
nft.observe()
nft.commit(state("{ 10.2.1.0/24, 10.32.0.0/12 }"))
nft.observe()
nft.commit(state("{ 10.2.1.0/24, 10.32.0.0/12, 10.64.0.0/16 }"))
ids = [r.key.rsplit("/", 1)[1] for r in nft.observe() if r.kind is Kind.NFT_RULE]
print(" ".join(ids), nft.rebuilds)
"""


def test_a_rule_with_an_interval_set_is_changed_in_place_without_an_abort() -> None:
    with Netns("wdasi") as ns:
        done = ns.run([sys.executable, "-c", PROGRAM], check=False)
        assert done.returncode == 0, done.stderr
        listing = ns.nft("list", "chain", "ip", "weaved", "forward").stdout
    # In its place, changed by the delta (one rebuild: the first commit), nothing else moved.
    assert done.stdout.split() == ["first", "in-exposed", "last", "1"], done.stdout
    assert "10.64.0.0/16" in listing
