"""IPAM messages <-> bytes, using the shared gob codec and Weave's type descriptors (FACTS §5.1).

Gossip and broadcast payloads are one gob stream holding a `gossipState`; unicast payloads are
a kind byte followed by a gob stream of a `Range` or a `gossipState`. The Paxos map is keyed by
a struct, which the codec represents as a list of (key, value) pairs; we keep the order we were
given, so a single-entry map encodes byte for byte like Go's.
"""

from __future__ import annotations

from typing import Any

from weaved.errors import ProtocolError
from weaved.ipam.address import ADDRESS_SPACE, Range
from weaved.ipam.messages import (
    IpamGossip,
    RingUpdate,
    SpaceRequest,
    SpaceRequestDenied,
    Unicast,
    UnicastKind,
)
from weaved.ipam.paxos import AcceptedValue, GossipState, NodeClaims, NodeID, ProposalID
from weaved.ipam.ring import Entry, Ring
from weaved.mesh.gob import decode_one, encode_one
from weaved.mesh.gob.weave_types import GOSSIP_STATE, RANGE
from weaved.mesh.gossip_api import PeerName


class IpamWireError(ProtocolError):
    """An IPAM payload decoded as gob but does not make sense (bad kind, impossible range)."""


# ---- gossipState ----------------------------------------------------------------------------


def encode_gossip(msg: IpamGossip) -> bytes:
    """A complete gob stream (definitions + value) of Weave's `gossipState`."""
    return encode_one(GOSSIP_STATE, gossip_to_gob(msg))


def decode_gossip(data: bytes) -> IpamGossip:
    """Raises `ProtocolError` (GobError or IpamWireError) on anything malformed."""
    return gossip_from_gob(decode_one(data, GOSSIP_STATE))


def gossip_to_gob(msg: IpamGossip) -> dict[str, Any]:
    value: dict[str, Any] = {"Now": msg.now, "Nicknames": dict(msg.nicknames)}
    # None means "absent" for both; an elector's empty Paxos map is still sent (Go sends
    # non-nil empty maps), and receivers tell electors from observers by it.
    value["Paxos"] = None if msg.paxos is None else _paxos_to_gob(msg.paxos)
    value["Ring"] = None if msg.ring is None else ring_to_gob(msg.ring)
    return value


def gossip_from_gob(value: Any) -> IpamGossip:
    try:
        nicknames = {PeerName(k): v for k, v in (value["Nicknames"] or {}).items()}
        paxos = None if value["Paxos"] is None else _paxos_from_gob(value["Paxos"])
        ring = None if value["Ring"] is None else ring_from_gob(value["Ring"])
        return IpamGossip(value["Now"], nicknames, paxos, ring)
    except (KeyError, TypeError, ValueError) as e:
        raise IpamWireError(f"malformed IPAM gossipState: {e}") from e


def ring_to_gob(ring: Ring) -> dict[str, Any]:
    return {
        "Start": ring.start,
        "End": ring.end,
        "Peer": ring.peer,
        "Entries": [
            {"Token": e.token, "Peer": e.peer, "Version": e.version, "Free": e.free}
            for e in ring.entries
        ],
        "Seeds": list(ring.seeds),
    }


def ring_from_gob(value: Any) -> Ring:
    start, end = value["Start"], value["End"]
    if not 0 <= start < end <= ADDRESS_SPACE:
        raise IpamWireError(f"IPAM ring with impossible range [{start}, {end})")
    entries = []
    for e in value["Entries"]:
        if not 0 <= e["Token"] < ADDRESS_SPACE or not 0 <= e["Free"] <= ADDRESS_SPACE:
            raise IpamWireError(f"IPAM ring entry out of the address space: {e}")
        entries.append(Entry(e["Token"], PeerName(e["Peer"]), e["Version"], e["Free"]))
    return Ring(start, end, PeerName(value["Peer"]), entries, [PeerName(s) for s in value["Seeds"]])


def _node_to_gob(n: NodeID) -> dict[str, Any]:
    return {"Name": n.name, "UID": n.uid}


def _proposal_to_gob(p: ProposalID) -> dict[str, Any]:
    return {"Round": p.round, "Proposer": _node_to_gob(p.proposer)}


def _paxos_to_gob(state: GossipState) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    return [
        (
            _node_to_gob(node),
            {
                "Promise": _proposal_to_gob(c.promise),
                "Accepted": _proposal_to_gob(c.accepted),
                "AcceptedVal": {
                    "Value": list(c.accepted_val.value),
                    "Origin": _proposal_to_gob(c.accepted_val.origin),
                },
            },
        )
        for node, c in state.items()
    ]


def _node_from_gob(v: Any) -> NodeID:
    return NodeID(PeerName(v["Name"]), v["UID"])


def _proposal_from_gob(v: Any) -> ProposalID:
    return ProposalID(v["Round"], _node_from_gob(v["Proposer"]))


def _paxos_from_gob(pairs: Any) -> GossipState:
    state: GossipState = {}
    for key, c in pairs:
        val = c["AcceptedVal"]
        state[_node_from_gob(key)] = NodeClaims(
            _proposal_from_gob(c["Promise"]),
            _proposal_from_gob(c["Accepted"]),
            AcceptedValue(
                tuple(PeerName(n) for n in val["Value"]), _proposal_from_gob(val["Origin"])
            ),
        )
    return state


# ---- unicast --------------------------------------------------------------------------------


def encode_range(r: Range) -> bytes:
    return encode_one(RANGE, {"Start": r.start, "End": r.end})


def decode_range(data: bytes) -> Range:
    v = decode_one(data, RANGE)
    start, end = v["Start"], v["End"]
    if not 0 <= start <= end <= ADDRESS_SPACE:
        raise IpamWireError(f"IPAM range with impossible bounds [{start}, {end})")
    return Range(start, end)


def encode_unicast(msg: Unicast) -> bytes:
    """Kind byte + gob stream, as Weave's `GossipUnicast` payloads."""
    if isinstance(msg, SpaceRequest):
        return bytes([UnicastKind.SPACE_REQUEST]) + encode_range(msg.range)
    if isinstance(msg, SpaceRequestDenied):
        return bytes([UnicastKind.SPACE_REQUEST_DENIED]) + encode_range(msg.range)
    return bytes([UnicastKind.RING_UPDATE]) + encode_gossip(msg.state)


def decode_unicast(data: bytes) -> Unicast:
    if not data:
        raise IpamWireError("empty IPAM unicast")
    kind, body = data[0], data[1:]
    if kind == UnicastKind.SPACE_REQUEST:
        return SpaceRequest(decode_range(body))
    if kind == UnicastKind.SPACE_REQUEST_DENIED:
        return SpaceRequestDenied(decode_range(body))
    if kind == UnicastKind.RING_UPDATE:
        return RingUpdate(decode_gossip(body))
    raise IpamWireError(f"unknown IPAM unicast kind {kind}")
