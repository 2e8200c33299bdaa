"""`weaved expose` and `weaved hide` as Weave's: the address forms of `attach`, the spec edited,
and the addresses printed — waiting, when the daemon runs, for the ones IPAM allocates."""

from __future__ import annotations

import ipaddress
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from weaved.attach.cli import DEFAULT_TIMEOUT
from weaved.attach.requests import AddressKind, parse_address
from weaved.errors import DaemonError, UsageError

if TYPE_CHECKING:
    from weaved.control import Client

POLL_SECONDS = 0.3


def expose_forms(words: Sequence[str], default_subnet: str) -> list[str]:
    """Command-line forms → the spec's `cidr` values: `ip:ADDR/LEN` is `ADDR/LEN`, `ip:ADDR`
    takes the default subnet's prefix, `net:` forms stay."""
    out: list[str] = []
    for word in words or ["net:default"]:
        arg = parse_address(word)
        if arg is None:
            raise UsageError(
                f"{word!r} is not an address\n"
                "  hint: ADDR/LEN, ip:ADDR[/LEN], net:CIDR or net:default"
            )
        if arg.kind is AddressKind.IP:
            prefix = ipaddress.IPv4Network(default_subnet).prefixlen
            out.append(f"{arg.address}/{prefix}")
        elif arg.kind is AddressKind.CIDR:
            assert arg.interface is not None
            out.append(arg.interface.with_prefixlen)
        else:
            out.append(arg.text)
    return out


def daemon_exposes(client: Client) -> tuple[list[str], dict[int, str], dict[int, str]]:
    """The daemon's `expose` entries, the addresses IPAM gave the `net:` ones, and what the
    others still wait for."""
    data = client.call("GET", "/ipam/expose", timeout=5)
    allocations = {int(k): str(v) for k, v in data.get("allocations", {}).items()}
    pending = {int(k): str(v) for k, v in data.get("pending", {}).items()}
    return [str(e) for e in data.get("entries", [])], allocations, pending


def wait_for_addresses(
    client: Client | None, cidrs: Sequence[str], timeout: float = DEFAULT_TIMEOUT
) -> list[str]:
    """The address of each entry: literal ones as they are; `net:` ones once the daemon has
    loaded the edited spec and IPAM gave them one (what they wait for is said on stderr)."""
    if client is None:
        literal = [c.split("/")[0] for c in cidrs if not c.startswith("net:")]
        if len(literal) < len(cidrs):
            sys.stderr.write("weaved expose: net: entries get their address when the daemon runs\n")
        return literal
    deadline = time.monotonic() + timeout
    said = ""
    while True:
        entries, allocations, pending = daemon_exposes(client)
        found: list[str] = []
        waiting: list[str] = []
        for cidr in cidrs:
            if not cidr.startswith("net:"):
                found.append(cidr.split("/")[0])
                continue
            index = entries.index(cidr) if cidr in entries else None
            if index is not None and index in allocations:
                found.append(allocations[index].split("/")[0])
            else:
                why = pending.get(index, "") if index is not None else ""
                waiting.append(f"{cidr}: {why or 'waiting for the daemon to load the spec'}")
        if not waiting:
            return found
        text = "; ".join(waiting)
        if text != said:
            sys.stderr.write(f"weaved expose: {text}\n")
            said = text
        if time.monotonic() > deadline:
            raise DaemonError(f"expose: gave up after {timeout:g} s: {text}")
        time.sleep(POLL_SECONDS)


def addresses_to_hide(client: Client | None, cidrs: Sequence[str]) -> list[str]:
    """What `hide` removes, printed as Weave does: `net:` entries by their IPAM address."""
    if client is None:
        return [c.split("/")[0] for c in cidrs if not c.startswith("net:")]
    entries, allocations, _ = daemon_exposes(client)
    out = []
    for cidr in cidrs:
        if not cidr.startswith("net:"):
            out.append(cidr.split("/")[0])
        elif cidr in entries and entries.index(cidr) in allocations:
            out.append(allocations[entries.index(cidr)].split("/")[0])
    return out


def default_subnet_of(spec_path: Path) -> str:
    from weaved.spec.loader import load_spec

    ipalloc = load_spec(spec_path, check_files=False).ipalloc
    return ipalloc.default_subnet or ipalloc.range
