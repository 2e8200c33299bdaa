"""Sleeve: Weave's userspace data path (UDP port 6783), between the TAP on our bridge and the
mesh's sleeve forwarders.

Pure parts: `ethernet` (checksums, ICMP frag-needed, IPv4 fragmentation), `vnet`
(virtio-net headers, software checksum and segmentation), `maccache`, `forwarding`
(Weave's switching decisions over a routes snapshot), `frames` (datagram bodies, batching,
how a frame is carried to one peer). I/O: `tap` (the device), `datapath` (threads),
`part` (the daemon component), `standalone` (one peer without the daemon, for tests and
benchmarks).
"""
