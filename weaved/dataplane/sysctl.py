"""Per-interface sysctls under /proc/sys (per network namespace)."""

from __future__ import annotations

from pathlib import Path

PROC = Path("/proc/sys/net")

# IPv6 autoconfiguration off on the bridge: no SLAAC, no router advertisements, no link-local.
IPV6_OFF = {"autoconf": "0", "accept_ra": "0", "addr_gen_mode": "1"}


def _path(ifname: str, key: str) -> Path:
    return PROC / "ipv6" / "conf" / ifname / key


def ipv6_autoconf(ifname: str) -> str:
    """'off' when every setting of IPV6_OFF holds (or the host has no IPv6), else 'on'."""
    if not (PROC / "ipv6").exists():
        return "off"
    for key, want in IPV6_OFF.items():
        try:
            if _path(ifname, key).read_text().strip() != want:
                return "on"
        except OSError:
            return "on"
    return "off"


def promote_secondaries(ifname: str) -> str:
    try:
        value = (PROC / "ipv4" / "conf" / ifname / "promote_secondaries").read_text().strip()
    except OSError:
        return "off"
    return "on" if value == "1" else "off"


def enable_promote_secondaries(ifname: str) -> int:
    path = PROC / "ipv4" / "conf" / ifname / "promote_secondaries"
    if path.read_text().strip() == "1":
        return 0
    path.write_text("1")
    return 1


def disable_ipv6_autoconf(ifname: str) -> int:
    """Returns the number of writes made."""
    if not (PROC / "ipv6").exists():
        return 0
    writes = 0
    for key, want in IPV6_OFF.items():
        path = _path(ifname, key)
        if path.read_text().strip() != want:
            path.write_text(want)
            writes += 1
    return writes
