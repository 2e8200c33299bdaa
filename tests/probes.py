"""Small programs the tests run inside namespaces (`python -c PROGRAM ARGS...`), one copy each:
what a container sends, receives or reaches, checked with real packets."""

from __future__ import annotations

# Prints "ready", then every datagram it receives on UDP 9999 for ARGV[1] seconds, one
# "SOURCE TEXT" a line.
LISTEN = """
import socket, sys, time
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(("0.0.0.0", 9999)); s.settimeout(0.2)
print("ready", flush=True)
end = time.monotonic() + float(sys.argv[1])
while time.monotonic() < end:
    try:
        data, peer = s.recvfrom(2048)
    except socket.timeout:
        continue
    print(peer[0], data.decode(), flush=True)
"""

# Sends the UDP datagram TEXT to DST:9999 with any source address SRC (a raw socket, the IP
# header written by hand), five times over a second: ARGV = SRC DST TEXT.
SPOOF = """
import socket, struct, sys, time
src, dst, text = sys.argv[1], sys.argv[2], sys.argv[3].encode()
udp = struct.pack("!HHHH", 40000, 9999, 8 + len(text), 0) + text
hdr = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), 1, 0, 64, 17, 0,
                  socket.inet_aton(src), socket.inet_aton(dst))
s = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)
for _ in range(5):
    s.sendto(hdr + udp, (dst, 0)); time.sleep(0.2)
"""

# Exit 0 when a TCP connection to ADDR:PORT completes within 2 s, then prints what the server
# sends first (up to 200 bytes, within 2 s; nothing if it sends nothing): ARGV = ADDR PORT.
CONNECT = """
import socket, sys
s = socket.socket(); s.settimeout(2)
try:
    s.connect((sys.argv[1], int(sys.argv[2])))
except OSError as exc:
    print(exc); sys.exit(1)
try:
    print(s.recv(200).decode(errors="replace"), end="")
except OSError:
    pass
"""

# A TCP server on ARGV[1]:ARGV[2] that sends ARGV[3] to each connection and closes it; prints
# "ready" once it listens, then each client's address a line.
SERVE = """
import socket, sys
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind((sys.argv[1], int(sys.argv[2]))); s.listen(16)
print("ready", flush=True)
while True:
    c, peer = s.accept()
    print(peer[0], flush=True)
    c.sendall(sys.argv[3].encode()); c.close()
"""
