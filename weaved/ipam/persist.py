"""IPAM state that survives restarts: our peer name, the ring, and our owned addresses.

Weave keeps these in a boltdb file (`<db-prefix>data.db`); we keep one JSON document in the
state directory, replaced atomically (write a temporary file, fsync, rename, fsync the
directory) so a crash leaves either the old or the new state, never half of one. A file that
cannot be parsed is an error for the operator, never silently replaced: forgetting owned
addresses could hand them out twice.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from weaved.ipam.address import CIDR
from weaved.ipam.errors import PersistError
from weaved.ipam.owned import Owned
from weaved.ipam.ring import Entry, Ring, RingInvariantError
from weaved.mesh.gossip_api import PeerName, format_peer_name

log = logging.getLogger(__name__)

FILE_NAME = "ipam.json"
FORMAT = "weaved-ipam/1"


@dataclass(frozen=True)
class PersistedState:
    """Everything IPAM persists. `ring` keeps its range even while it has no entries."""

    peer_name: PeerName
    ring: Ring
    owned: dict[str, Owned] = field(default_factory=dict)


class Store(Protocol):
    """Where the allocator keeps its state; `load` raises `PersistError` on a corrupt store."""

    def load(self) -> PersistedState | None: ...

    def save(self, state: PersistedState) -> None: ...


def to_document(state: PersistedState) -> dict[str, Any]:
    ring = state.ring
    return {
        "format": FORMAT,
        "peer_name": format_peer_name(state.peer_name),
        "ring": {
            "start": ring.start,
            "end": ring.end,
            "entries": [[e.token, e.peer, e.version, e.free] for e in ring.entries],
            "seeds": list(ring.seeds),
        },
        "owned": {
            ident: {"cidrs": [_text(c) for c in o.cidrs], "is_container": o.is_container}
            for ident, o in sorted(state.owned.items())
        },
    }


@functools.lru_cache(maxsize=1 << 14)
def _text(cidr: CIDR) -> str:
    """A CIDR's text, kept: every save writes every owned address (~2 ms of formatting with
    1 000 containers, each attach's, on the GIL), and they rarely change."""
    return str(cidr)


def from_document(doc: Any) -> PersistedState:
    """Parse and validate; raises ValueError/KeyError/TypeError on anything unexpected."""
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise ValueError(f"not a {FORMAT} document")
    name = _parse_peer_name(doc["peer_name"])
    r = doc["ring"]
    entries = [
        Entry(_uint(t, 32), PeerName(_uint(p, 48)), _uint(v, 64), _uint(f, 32))
        for t, p, v, f in r["entries"]
    ]
    seeds = [PeerName(_uint(s, 48)) for s in r["seeds"]]
    start, end = _uint(r["start"], 32), _uint(r["end"], 33)
    if not start < end:
        raise ValueError("ring range is empty")
    ring = Ring(start, end, name, entries, seeds)
    ring.check_invariants()
    owned: dict[str, Owned] = {}
    for ident, o in doc["owned"].items():
        if not isinstance(ident, str) or not isinstance(o["is_container"], bool):
            raise TypeError(f"bad owned entry {ident!r}")
        owned[ident] = Owned(tuple(CIDR.parse(c) for c in o["cidrs"]), o["is_container"])
    return PersistedState(name, ring, owned)


def _uint(v: Any, bits: int) -> int:
    if not isinstance(v, int) or isinstance(v, bool) or not 0 <= v < (1 << bits):
        raise ValueError(f"{v!r} is not a {bits}-bit unsigned integer")
    return v


def _parse_peer_name(text: Any) -> PeerName:
    if not isinstance(text, str):
        raise TypeError("peer_name must be a string")
    parts = text.split(":")
    if len(parts) != 6 or not all(1 <= len(p) <= 2 for p in parts):
        raise ValueError(f"bad peer name {text!r}")
    return PeerName(int("".join(p.zfill(2) for p in parts), 16))


class FileStore:
    """`<state_dir>/ipam.json`, replaced atomically on every save."""

    def __init__(self, state_dir: Path) -> None:
        self.state_dir = state_dir
        self.path = state_dir / FILE_NAME

    def load(self) -> PersistedState | None:
        # Temporary files of a writer that died before its rename hold nothing we need.
        for stale in self.state_dir.glob(f".{FILE_NAME}.*"):
            stale.unlink(missing_ok=True)
        try:
            raw = self.path.read_bytes()
        except FileNotFoundError:
            return None
        except OSError as e:
            raise PersistError(f"cannot read IPAM state {self.path}: {e.strerror}") from e
        try:
            return from_document(json.loads(raw))
        except (ValueError, KeyError, TypeError, IndexError, RingInvariantError) as e:
            raise _corrupt(self.path, e) from e

    def save(self, state: PersistedState) -> None:
        # Compact: with `indent` json encodes in pure Python, 8 ms of 1 000 owned addresses
        # (ten times the C encoder), holding the GIL the event loop needs.
        doc = to_document(state)
        data = json.dumps(doc, sort_keys=True, separators=(",", ":")).encode() + b"\n"
        try:
            self.state_dir.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(prefix=f".{FILE_NAME}.", dir=self.state_dir)
            try:
                with os.fdopen(fd, "wb") as f:
                    f.write(data)
                    f.flush()
                    os.fsync(f.fileno())
                os.replace(tmp, self.path)
            except BaseException:
                Path(tmp).unlink(missing_ok=True)
                raise
            dir_fd = os.open(self.state_dir, os.O_RDONLY | os.O_DIRECTORY)
            try:
                os.fsync(dir_fd)
            finally:
                os.close(dir_fd)
        except OSError as e:
            raise PersistError(
                f"cannot write IPAM state {self.path}: {e.strerror}\n"
                "  hint: check free space and permissions of the state directory"
            ) from e


def _corrupt(path: Path, e: BaseException) -> PersistError:
    return PersistError(
        f"IPAM state file {path} is corrupt: {e}\n"
        "  why: refusing to start without it, addresses it records could be handed out twice\n"
        f"  hint: inspect it; to start IPAM afresh move it aside (mv {path} {path}.bad)"
    )


class MemoryStore:
    """An in-memory store for tests; round-trips through the JSON document like FileStore."""

    def __init__(self) -> None:
        self.document: dict[str, Any] | None = None
        self.saves = 0

    def load(self) -> PersistedState | None:
        return (
            None if self.document is None else from_document(json.loads(json.dumps(self.document)))
        )

    def save(self, state: PersistedState) -> None:
        self.document = to_document(state)
        self.saves += 1


def load_persisted_peer_name(state_dir: Path) -> PeerName | None:
    """The peer name IPAM persisted, for peer-name derivation (FACTS §1 step 3); None if absent
    or unreadable (name derivation then falls back, as Weave's does)."""
    try:
        state = FileStore(state_dir).load()
    except PersistError:
        return None
    return None if state is None else state.peer_name
