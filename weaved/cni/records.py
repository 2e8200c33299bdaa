"""What the daemon remembers of each CNI attachment: enough to find the veth and the namespace
again after a restart, and to release the address on DEL.

Kept twice: in `<state>/cni.json`, and in the kernel as the host veth's IFLA_IFALIAS
(`weaved-cni id=… if=… ip=…`, see `to_alias`), so a daemon that lost its whole state directory
still knows whose each veth is and re-claims its addresses (Weave's relaunch reclaim).
"""

from __future__ import annotations

import ipaddress
import logging
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote, unquote

from weaved.attach import store
from weaved.attach.codec import JsonRecord

log = logging.getLogger(__name__)

STORE = "cni.json"
LOST = "CNI attachments are forgotten"  # when cni.json cannot be read
ALIAS_PREFIX = "weaved-cni"
ALIAS_MAX = 255  # IFALIASZ less its NUL


@dataclass(frozen=True)
class CniRecord(JsonRecord):
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
    return store.load_records(path, CniRecord.from_json, LOST)
