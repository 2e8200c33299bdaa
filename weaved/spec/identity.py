"""Who this host is on the mesh: its peer name (Weave's `mesh.PeerName`, written like a MAC).

The spec may name it (`peer.name`); else the bridge's MAC (a restarted weaved or a Weave Net
bridge keeps its name); else Weave's derivation from the machine's IDs (FACTS.md §1). It sits
with the spec, below the engine and the mesh, since both need it: the engine gives the bridge
this MAC, the mesh introduces itself by it. Pure except `read_system_ids`, which only reads
the files Weave reads, so the derivation runs on data.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, NewType

from weaved.errors import SpecError, WeavedError

if TYPE_CHECKING:  # pydantic's models stay out of what the mesh and weaveDNS import at runtime
    from weaved.spec.models import Spec

NAME_SALT = b"9oBJ0Jmip-"
_GROUP = re.compile(r"^[0-9a-fA-F]{1,2}$")

PeerName = NewType("PeerName", int)
"""A 48-bit peer name (Weave's `mesh.PeerName`), written like a MAC address."""

UNKNOWN_PEER = PeerName(0)


def format_peer_name(name: int) -> str:
    """`0x3e80e75a63a7` -> `3e:80:e7:5a:63:a7`."""
    raw = name.to_bytes(6, "big")
    return ":".join(f"{b:02x}" for b in raw)


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


def resolve_peer_name(spec: Spec, bridge_mac: str | None, ids: SystemIDs | None = None) -> str:
    """The spec's name, else the bridge's MAC (a restarted weaved or a Weave Net bridge keeps
    its name), else Weave's derivation from the machine's IDs."""
    if spec.peer.name:
        return spec.peer.name
    if bridge_mac:
        return bridge_mac.lower()
    return format_peer_name(derive_peer_name(ids or read_system_ids()))
