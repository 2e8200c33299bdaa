"""Named sets in weaved's nftables tables, and their elements (compile/antispoof.py's `ports`).

A rebuild of the tables (nft.py) declares each desired set with its elements. Between
rebuilds, elements change by small transactions of their own: the plug of a container adds
its port's elements before the port is up, the unplug removes them, and a converge that only
finds elements to change (drift, a missed unplug) adds or removes just those. Only weaved's
tables are named; nothing else is read or written.

libnftables contexts are not shared between threads: each thread gets its own.
"""

from __future__ import annotations

import ipaddress
import logging
import os
import re
import threading
from collections.abc import Iterable, Sequence
from typing import Any

from weaved.compile.antispoof import (
    SET_FAMILY,
    SET_NAME,
    SET_TYPE,
    Pair,
    element_of,
    element_resource,
    element_text,
)
from weaved.dataplane.nftlib import load_binding
from weaved.errors import ApplyError
from weaved.model.resources import NFT_TABLE, Kind, Resource, State, attrs
from weaved.plan.changes import Action, Change

log = logging.getLogger(__name__)

_SET = re.compile(r"^\tset (\S+) \{")  # `nft -a` adds "# handle N"
_TYPE = re.compile(r"^\t\ttype (.+)$")
_ELEMENT = re.compile(r'"([^"]+)" \. (\d+\.\d+\.\d+\.\d+)')


def render_sets(desired: State, family: str) -> list[str]:
    """The set declarations (with their elements) of `family`'s table, for a rebuild."""
    lines = []
    elements = [element_of(e.key) for e in desired.by_kind(Kind.NFT_ELEMENT)]
    for s in desired.by_kind(Kind.NFT_SET):
        if s.get("family") != family:
            continue
        name = s.key.rsplit("/", 1)[1]
        lines.append(f"  set {name} {{")
        lines.append(f"    type {s.get('type')};")
        if name == SET_NAME and elements:
            lines.append(f"    elements = {element_text(elements)};")
        lines.append("  }")
    return lines


def parse_sets(family: str, text: str) -> list[Resource]:
    """The sets of an `nft list table` text, and the elements of `ports`-shaped ones."""
    out: list[Resource] = []
    name = ""
    kind = ""
    for line in text.splitlines():
        if m := _SET.match(line):
            name, kind = m.group(1), ""
        elif not name:
            continue
        elif line == "\t}":
            name = ""
        elif (m := _TYPE.match(line)) and not kind:
            kind = m.group(1).strip()
            key = f"nftset/{family}/{NFT_TABLE}/{name}"
            out.append(Resource(key, Kind.NFT_SET, attrs(family=family, type=kind)))
        elif kind == SET_TYPE and name == SET_NAME and family == SET_FAMILY:
            for veth, ip in _ELEMENT.findall(line):
                out.append(element_resource(veth, ipaddress.IPv4Address(ip)))
    return out


class _Contexts(threading.local):
    nft: Any = None
    netns: int = 0


_contexts = _Contexts()


def _nft() -> Any:
    """This thread's context, for the namespace the thread is in now (a plumbing thread
    steps into containers' namespaces: a context made there must not serve the host)."""
    here = os.stat("/proc/thread-self/ns/net").st_ino
    if _contexts.nft is None or _contexts.netns != here:
        _contexts.nft, _contexts.netns = load_binding(), here
    return _contexts.nft


def _where() -> str:
    return f"{SET_FAMILY} {NFT_TABLE} {SET_NAME}"


def _run(script: str) -> bool:
    """One transaction; False when weaved's set is not there (nothing to keep current: the
    table is created with its elements by the next rebuild)."""
    rc, _, err = _nft().cmd(script)
    if rc == 0:
        return True
    if "No such file or directory" in err:
        return False
    raise ApplyError(f"nftables set transaction refused, nothing was changed: {err.strip()}")


def _script(add: Sequence[Pair], remove: Sequence[Pair]) -> str:
    lines = []
    if add:
        lines.append(f"add element {_where()} {element_text(add)}")
    if remove:
        # Adding first makes the delete succeed whether or not an element was there.
        lines.append(f"add element {_where()} {element_text(remove)}")
        lines.append(f"delete element {_where()} {element_text(remove)}")
    return "\n".join(lines) + "\n"


def add_elements(pairs: Iterable[Pair]) -> bool:
    """Let each (port, address) through, in one transaction. Blocking."""
    wanted = sorted(set(pairs))
    return not wanted or _run(_script(wanted, ()))


def remove_elements(pairs: Iterable[Pair]) -> bool:
    """Stop letting each (port, address) through, in one transaction; elements that are not
    there are not an error. Blocking."""
    gone = sorted(set(pairs))
    return not gone or _run(_script((), gone))


def apply_element_changes(changes: Iterable[Change]) -> int:
    """A converge's element changes (no rule changed), in one transaction; the writes made."""
    add: list[Pair] = []
    remove: list[Pair] = []
    for c in changes:
        if c.kind is not Kind.NFT_ELEMENT:
            continue
        (remove if c.action is Action.DELETE else add).append(element_of(c.key))
    if not add and not remove:
        return 0
    if not _run(_script(add, remove)) and add:  # gone with its table: nothing to remove
        raise ApplyError(f"nftables set {_where()} is missing")
    return 1
