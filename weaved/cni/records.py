"""What the daemon remembers of each CNI attachment (`<state>/cni.json`): enough to find the
veth and the namespace again after a restart, and to release the address on DEL."""

from __future__ import annotations

import ipaddress
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

STORE = "cni.json"


@dataclass(frozen=True)
class CniRecord:
    container_id: str
    ifname: str
    netns: str
    veth: str
    addresses: tuple[ipaddress.IPv4Interface, ...]
    hairpin: bool = False
    weaved_ipam: bool = True  # addresses from weaved's IPAM (released on DEL)
    dns_name: str | None = None
    mac: str = ""

    @property
    def key(self) -> str:
        return f"{self.container_id}/{self.ifname}"

    def to_json(self) -> dict[str, Any]:
        return {
            "container_id": self.container_id,
            "ifname": self.ifname,
            "netns": self.netns,
            "veth": self.veth,
            "addresses": [str(a) for a in self.addresses],
            "hairpin": self.hairpin,
            "weaved_ipam": self.weaved_ipam,
            "dns_name": self.dns_name,
            "mac": self.mac,
        }

    @staticmethod
    def from_json(d: dict[str, Any]) -> CniRecord:
        return CniRecord(
            str(d["container_id"]),
            str(d["ifname"]),
            str(d["netns"]),
            str(d["veth"]),
            tuple(ipaddress.IPv4Interface(a) for a in d["addresses"]),
            bool(d.get("hairpin", False)),
            bool(d.get("weaved_ipam", True)),
            None if d.get("dns_name") is None else str(d["dns_name"]),
            str(d.get("mac", "")),
        )


def load_records(path: Path) -> dict[str, CniRecord]:
    try:
        raw = json.loads(path.read_text())
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        log.error("cannot read %s (%s); CNI attachments are forgotten", path, exc)
        return {}
    out = {}
    for item in raw.get("attachments", []):
        try:
            r = CniRecord.from_json(item)
        except (KeyError, ValueError, TypeError):
            continue
        out[r.key] = r
    return out


def save_records(path: Path, records: dict[str, CniRecord]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps({"attachments": [r.to_json() for r in records.values()]}))
    os.replace(tmp, path)
