"""Sleeve: Weave's userspace data path (UDP port 6783), between the TAP on our bridge and the
mesh's peers. All of it is here: the mesh only knows it as one `Overlay`.

Pure parts: `wire` (datagram bodies: frame records, special frames), `control` (one
connection's heartbeats, fragmentation test and path-MTU search), `ethernet` (checksums,
ICMP frag-needed, IPv4 fragmentation), `vnet` (virtio-net headers, software checksum and
segmentation), `gro`, `oversize`, `maccache`, `forwarding` (Weave's switching decisions over
a routes snapshot), `frames` (how a frame is carried to one peer, segments, reassembly).

I/O: `overlay` (the UDP socket on the mesh port), `forwarder` (one connection: sealing,
sending, its control), `sockets` (socket options, DF senders), `sodium` (sealing with
libsodium directly), `tap` (the device), `datapath` (the threads' owner, the TAP keeper),
`worker` (a forwarding thread), `send` (batching, trains, segments), `receive` (opening,
injecting, relaying), `counters`, `views` (status and report), `part` (the daemon
component). For tests and benchmarks: tests/tools/sleeve_peer.py and sleeve_testbed.py.
"""
