"""Gob descriptors of the Go types Weave Net 2.8.1 puts on the wire (FACTS.md §2.2, §3-6).

Field order is Go's declaration order and names are exactly as Weave sends them, so a fresh
`Encoder` produces Go's bytes (checked against vectors/gob-weave-types.json). Peer names, UIDs
and IPv4 addresses (as uint32) are all UINT; times are INT Unix seconds.
"""

from __future__ import annotations

from weaved.mesh.gob.descriptors import BOOL, BYTES, INT, STRING, UINT, Field, Map, Slice, Struct

# --- connection handshake (§2.2): map[string]string, an unnamed top-level type
FEATURES = Map(STRING, STRING)

# --- gossip envelope items (§3.1): top-level predeclared values, no definitions
ENVELOPE_CHANNEL = STRING
ENVELOPE_PEER = UINT
ENVELOPE_DATA = BYTES

# --- `topology` channel (§4): per peer a PEER_SUMMARY then a CONNECTION_SUMMARY_LIST
PEER_SUMMARY = Struct(
    "peerSummary",
    (
        Field("NameByte", BYTES),
        Field("NickName", STRING),
        Field("UID", UINT),
        Field("Version", UINT),
        Field("ShortID", UINT),
        Field("HasShortID", BOOL),
    ),
)
CONNECTION_SUMMARY = Struct(
    "connectionSummary",
    (
        Field("NameByte", BYTES),
        Field("RemoteTCPAddr", STRING),
        Field("Outbound", BOOL),
        Field("Established", BOOL),
    ),
)
CONNECTION_SUMMARY_LIST = Slice(CONNECTION_SUMMARY)  # top-level, so Go sends no name

# --- `IPallocation` channel (§5)
NICKNAMES = Map(UINT, STRING, "map[mesh.PeerName]string")
# Paxos types reached only as map key/element or through fields carry the names Go gives them.
NODE_ID = Struct("", (Field("Name", UINT), Field("UID", UINT)))
PROPOSAL_ID = Struct("ProposalID", (Field("Round", UINT), Field("Proposer", NODE_ID)))
ACCEPTED_VALUE = Struct(
    "AcceptedValue", (Field("Value", Slice(UINT, "Value")), Field("Origin", PROPOSAL_ID))
)
NODE_CLAIMS = Struct(
    "",
    (
        Field("Promise", PROPOSAL_ID),
        Field("Accepted", PROPOSAL_ID),
        Field("AcceptedVal", ACCEPTED_VALUE),
    ),
)
# Map keyed by a struct: in Python a list of (NODE_ID dict, NODE_CLAIMS dict) pairs.
PAXOS_GOSSIP_STATE = Map(NODE_ID, NODE_CLAIMS, "GossipState")
RING_ENTRY = Struct(
    "", (Field("Token", UINT), Field("Peer", UINT), Field("Version", UINT), Field("Free", UINT))
)
RING_ENTRIES = Slice(RING_ENTRY, "entries")
PEER_NAME_LIST = Slice(UINT, "[]mesh.PeerName")
RING = Struct(
    "Ring",
    (
        Field("Start", UINT),
        Field("End", UINT),  # exclusive
        Field("Peer", UINT),
        Field("Entries", RING_ENTRIES),
        Field("Seeds", PEER_NAME_LIST),
    ),
)
# Paxos (a map: None = absent, {} = sent empty) only before a ring exists; Ring is a *Ring.
GOSSIP_STATE = Struct(
    "gossipState",
    (
        Field("Now", INT),
        Field("Nicknames", NICKNAMES),
        Field("Paxos", PAXOS_GOSSIP_STATE),
        Field("Ring", RING, pointer=True),
    ),
)
# Unicast payloads are one kind byte, then a gob stream of RANGE (kinds 0, 2) or GOSSIP_STATE (1).
RANGE = Struct("Range", (Field("Start", UINT), Field("End", UINT)))
IPAM_SPACE_REQUEST = 0
IPAM_RING_UPDATE = 1
IPAM_SPACE_REQUEST_DENIED = 2

# --- `nameserver` channel (§6)
DNS_ENTRY = Struct(
    "Entry",
    (
        Field("ContainerID", STRING),
        Field("Origin", UINT),
        Field("Addr", UINT),
        Field("Hostname", STRING),
        Field("Version", INT),
        Field("Tombstone", INT),
    ),
)
DNS_ENTRIES = Slice(DNS_ENTRY, "Entries")
DNS_GOSSIP_DATA = Struct("GossipData", (Field("Timestamp", INT), Field("Entries", DNS_ENTRIES)))
