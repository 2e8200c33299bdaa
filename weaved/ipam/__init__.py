"""IPAM: Weave's address allocation, wire-compatible with Weave Net 2.8.1 (FACTS.md §5).

Pure core: `address` (IPv4 arithmetic), `ring` (the ownership CRDT), `space` (our addresses),
`paxos` (one-shot consensus), `allocator` (the sans-I/O allocator), `messages` + `wire` (the
IPallocation payloads in gob), `status` (Weave's status texts and JSON). Edges: `gossiper` (the
mesh channel), `persist` (state file). `sim` is an in-memory mesh of allocators for tests.
"""
