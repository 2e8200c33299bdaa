"""Fast datapath: kernel VXLAN between weaved peers (UDP 6784), sleeve as the fallback.

Negotiation. The overlay `weaved-vxlan` is announced in the `Overlays` feature before
`sleeve`. Weave Net 2.8.1 does not know the name (its own `fastdp` needs Open vSwitch), so a
Weave peer has only sleeve in common and is served by sleeve. Per connection, the router's
`OverlaySwitch` uses the best *established* forwarder; ours reports `unhealthy(reason)` when
its path stops working and `established()` when it works again, and the switch shows why
it fell back as the connection's `fallback` attribute in `status connections`.

Data. One VXLAN device `vxlan-6784` (VNI 6784, dstport = mesh port + 1, no learning, DF set,
MTU = underlay MTU - 50 unless `datapath.mtu` is set) is an *isolated* port of `weave` with
learning off; sleeve's TAP is isolated too, so the bridge never forwards between the two
data paths and a frame goes out by exactly one of them. The reconciler (`FastdpPart`) keeps
its forwarding entries: for each peer with a fastdp forwarder the peer's name → its IP
(heartbeats); for each peer fastdp carries ("served") also the all-zero MAC → its IP
(flooding broadcasts and unknown unicasts to the served peers) and each MAC the peer
announced → its IP, with a static bridge entry sending that MAC to the VXLAN port. When a
peer's path fails its entries go, the bridge floods and learns its MACs behind the TAP, and
sleeve carries them. `weaved plan` shows all of it (`link/vxlan-6784`, `fdb/…`).

Restarts. The kernel forwards without any daemon, so a connection that goes (the peer's
daemon restarts) does not take its entries along, and a starting daemon adopts what the
device holds: both are kept until that peer's path is decided again (healthy: the same
entries, no write; unhealthy: they go) or a minute passes without a connection (`retain`).

Remote MACs. Each peer announces the MACs its own bridge learnt on local ports (and the
bridge's own MAC) to its direct neighbours in an overlay-control message on the connection
(full set, on every change). Only direct neighbours use fastdp, so nothing travels further;
the announcement is reliable and ordered (TCP), and nothing depends on kernel learning. Until
it arrives, frames to an unknown MAC are flooded to the served peers and still arrive.

Health. Heartbeat frames go through the tunnel (the kernel owns UDP 6784) to the peer's
bridge MAC: a small one and one of the full MTU each round, so "UDP 6784 blocked" and "MTU
too small" are told apart; acks come back on TCP. Every 0.5 s until the first ack, then every
second; a path is unhealthy after 5 s without full-size heartbeats both ways (Weave: 10 s /
60 s; `Timing` makes it configurable), and healthy again after 2 good rounds.

Only direct paths. On a link that carries relayed traffic (the mesh is not a full mesh) fastdp
stands by and sleeve carries that link's traffic, so relayed paths use sleeve end to end; only
once the link relayed for 3 s, as views of a leaving peer's links differ for a moment.

Encryption. The kernel here has no ESP, and a VXLAN device accepts frames from anyone on the
underlay: with a password there is no device at all and no link uses fastdp (sleeve does,
encrypted or, on trusted links, plain; `fallback` says so).

Modules: `config` (names, numbers, timing, MTU rule), `frames` (heartbeats), `messages`
(control messages), `health` (per-connection state machine, injected clock), `fdb` (desired
and observed kernel objects), `relay` (links carrying relayed traffic), `retain` (entries that
outlive connections), `views` (status) — all pure; `netlink` (kernel I/O), `overlay`
(asyncio: heartbeat sockets), `forwarder` (one connection's path), `part` (the daemon
component). A daemon wired with it for tests and benchmarks: tests/tools/fastdp_daemon.py.
"""
