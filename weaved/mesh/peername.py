"""Peer identity: names, UIDs, short IDs and the default-name derivation (FACTS.md §1).

Everything here is pure except `read_system_ids`, which only reads the files that Weave
reads so the derivation can run on data.
"""

from __future__ import annotations

import hashlib
import random
import re
import socket
from collections.abc import Callable, Collection
from dataclasses import dataclass
from pathlib import Path

from weaved.errors import SpecError, WeavedError
from weaved.mesh.gossip_api import UNKNOWN_PEER, PeerName, format_peer_name

__all__ = [
    "NAME_SALT",
    "SHORT_ID_BITS",
    "UNKNOWN_PEER",
    "PeerName",
    "PeerNameError",
    "SystemIDs",
    "SystemIDsBlank",
    "choose_short_id",
    "default_nickname",
    "derive_peer_name",
    "format_peer_name",
    "name_from_hash",
    "parse_peer_name",
    "peer_name_from_bytes",
    "peer_name_to_bytes",
    "random_conn_id",
    "random_short_id",
    "random_uid",
    "read_system_ids",
]

NAME_SALT = b"9oBJ0Jmip-"
SHORT_ID_BITS = 12
MAX_NAME = (1 << 48) - 1
_GROUP = re.compile(r"^[0-9a-fA-F]{1,2}$")


class PeerNameError(SpecError):
    """A peer name in the spec (or on the command line) is not in Weave's MAC-like form."""


class SystemIDsBlank(WeavedError):
    """Neither machine-id nor a DMI/hypervisor UUID is readable: Weave refuses to start too."""


def parse_peer_name(text: str) -> PeerName:
    """Parse `3e:80:e7:5a:63:a7`, `1:2:3:4:5:6`, `::1`, `12::34`, `aa:bb::` as Weave does."""
    parts = text.split(":")
    groups: list[str]
    if "::" in text:
        if text.count("::") != 1:
            raise PeerNameError(f'invalid peer name format: "{text}"')
        head, tail = text.split("::")
        head_groups = head.split(":") if head else []
        tail_groups = tail.split(":") if tail else []
        missing = 6 - len(head_groups) - len(tail_groups)
        if missing < 1:
            raise PeerNameError(f'invalid peer name format: "{text}"')
        groups = [*head_groups, *(["0"] * missing), *tail_groups]
    else:
        groups = parts
    if len(groups) != 6 or not all(_GROUP.match(g) for g in groups):
        raise PeerNameError(f'invalid peer name format: "{text}"')
    value = 0
    for g in groups:
        value = (value << 8) | int(g, 16)
    return PeerName(value)


def peer_name_from_bytes(raw: bytes) -> PeerName:
    """Six big-endian bytes (gob `NameByte`, sleeve headers) -> name."""
    if len(raw) != 6:
        raise ValueError(f"peer name must be 6 bytes, got {len(raw)}")
    return PeerName(int.from_bytes(raw, "big"))


def peer_name_to_bytes(name: int) -> bytes:
    return name.to_bytes(6, "big")


def name_from_hash(*parts: bytes) -> PeerName:
    """SHA-256(salt || parts...), first 6 bytes, byte 0 made unicast + locally administered."""
    digest = hashlib.sha256(NAME_SALT + b"".join(parts)).digest()
    raw = bytes([(digest[0] & 0xFE) | 0x02]) + digest[1:6]
    return PeerName(int.from_bytes(raw, "big"))


@dataclass(frozen=True)
class SystemIDs:
    """What Weave consults, in its order; `None` means the file or interface is absent."""

    bridge_mac: str | None = None
    machine_id: bytes | None = None  # <host-root>/etc/machine-id
    dbus_machine_id: bytes | None = None  # <host-root>/var/lib/dbus/machine-id
    product_uuid: bytes | None = None  # /sys/class/dmi/id/product_uuid (never host-root)
    hypervisor_uuid: bytes | None = None  # /sys/hypervisor/uuid
    persisted_name: str | None = None  # name kept in the IPAM database, if any


def derive_peer_name(ids: SystemIDs, explicit: str | None = None) -> PeerName:
    """Weave's precedence (FACTS.md §1): explicit name, bridge MAC, old-style persisted name,
    hash of machine-id and uuid; raises `SystemIDsBlank` when there is nothing to hash."""
    if explicit is not None:
        return parse_peer_name(explicit)
    if ids.bridge_mac is not None:
        return parse_peer_name(ids.bridge_mac)
    # The uuid file stands in for both: product_uuid wins, the hypervisor one is the fallback.
    uuid = ids.product_uuid if ids.product_uuid is not None else ids.hypervisor_uuid
    if uuid is not None and ids.persisted_name is not None:
        try:
            persisted = parse_peer_name(ids.persisted_name)
        except PeerNameError:
            persisted = None
        # Only a name that older weaves derived from the uuid alone is honoured.
        if persisted is not None and persisted == name_from_hash(uuid):
            return persisted
    mid = ids.machine_id if ids.machine_id is not None else ids.dbus_machine_id
    if not mid and not uuid:
        raise SystemIDsBlank("All system IDs are blank")
    return name_from_hash(mid or b"", uuid or b"")


def _read(path: Path) -> bytes | None:
    try:
        return path.read_bytes()
    except OSError:
        return None


def read_system_ids(
    host_root: Path = Path("/"),
    bridge: str = "weave",
    persisted_name: str | None = None,
    sys_root: Path = Path("/sys"),
) -> SystemIDs:
    """Read the inputs of `derive_peer_name` from this host (I/O). `sys_root` moves only the
    uuid files (tests model a machine's product uuid with it); the bridge is always looked up
    in this network namespace's /sys."""
    mac = _read(Path("/sys/class/net") / bridge / "address")
    return SystemIDs(
        bridge_mac=mac.decode().strip() if mac else None,
        machine_id=_read(host_root / "etc/machine-id"),
        dbus_machine_id=_read(host_root / "var/lib/dbus/machine-id"),
        product_uuid=_read(sys_root / "class/dmi/id/product_uuid"),
        hypervisor_uuid=_read(sys_root / "hypervisor/uuid"),
        persisted_name=persisted_name,
    )


def default_nickname() -> str:
    return socket.gethostname()


def random_uid(rng: random.Random | None = None) -> int:
    """A fresh incarnation id: random, non-zero (0 marks placeholder peers)."""
    r = rng or random.SystemRandom()
    while True:
        uid = r.getrandbits(64)
        if uid:
            return uid


def random_conn_id(rng: random.Random | None = None) -> int:
    return (rng or random.SystemRandom()).getrandbits(64)


def random_short_id(rng: random.Random | None = None) -> int:
    return (rng or random.SystemRandom()).randrange(1 << SHORT_ID_BITS)


def choose_short_id(
    taken: Collection[int] | Callable[[int], bool], rng: random.Random
) -> int | None:
    """Weave's pick after losing a collision: 10 random tries, then uniform among free IDs.

    `taken` is the set of short IDs that currently have an owner (or a predicate)."""
    is_taken: Callable[[int], bool] = taken if callable(taken) else taken.__contains__
    size = 1 << SHORT_ID_BITS
    for _ in range(10):
        candidate = rng.randrange(size)
        if not is_taken(candidate):
            return candidate
    free = [i for i in range(size) if not is_taken(i)]
    if not free:
        return None
    return free[rng.randrange(len(free))]


def short_name(name: PeerName) -> str:
    return format_peer_name(name) if name != UNKNOWN_PEER else "00:00:00:00:00:00"
