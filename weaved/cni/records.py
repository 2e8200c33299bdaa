"""What the daemon remembers of each CNI attachment: enough to find the veth and the namespace
again after a restart, and to release the address on DEL.

Kept twice: in `<state>/cni.json`, and in the kernel as the host veth's IFLA_IFALIAS
(`weaved-cni id=… if=… ip=…`, see `to_alias`), so a daemon that lost its whole state directory
still knows whose each veth is and re-claims its addresses (Weave's relaunch reclaim).
"""

from __future__ import annotations

import ipaddress
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote, unquote

log = logging.getLogger(__name__)

STORE = "cni.json"
ALIAS_PREFIX = "weaved-cni"
ALIAS_MAX = 255  # IFALIASZ less its NUL


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

    def to_alias(self) -> str:
        """The record as the veth's alias; the DNS name, then the namespace, are left out when
        the whole would not fit (then a reclaimed attachment lacks them, nothing else)."""
        fields = [
            ("id", self.container_id),
            ("if", self.ifname),
            ("ip", ",".join(str(a) for a in self.addresses)),
            ("ipam", "weaved" if self.weaved_ipam else "chained"),
            ("hairpin", "1" if self.hairpin else "0"),
            ("ns", self.netns),
            ("dns", self.dns_name or ""),
        ]
        while True:
            text = " ".join(
                [ALIAS_PREFIX, *(f"{k}={quote(v, safe='/:,.@')}" for k, v in fields if v)]
            )
            if len(text) <= ALIAS_MAX or len(fields) <= 5:
                return text[:ALIAS_MAX]
            fields.pop()

    @staticmethod
    def from_alias(alias: str, veth: str) -> CniRecord | None:
        """The record a veth's alias holds; None when the alias is not weaved-cni's."""
        words = alias.split(" ")
        if words[0] != ALIAS_PREFIX:
            return None
        try:
            d = {k: unquote(v) for k, _, v in (w.partition("=") for w in words[1:])}
            return CniRecord(
                d["id"],
                d["if"],
                d.get("ns", ""),
                veth,
                tuple(ipaddress.IPv4Interface(a) for a in d["ip"].split(",") if a),
                d.get("hairpin") == "1",
                d.get("ipam", "weaved") == "weaved",
                d.get("dns") or None,
            )
        except (KeyError, ValueError):
            return None


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
