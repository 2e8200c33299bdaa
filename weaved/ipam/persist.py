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


# The encoder `FileStore` writes with: compact and sorted (without `indent` json encodes in C,
# ten times faster than its pure-Python indenting encoder).
_ENCODER = json.JSONEncoder(sort_keys=True, separators=(",", ":"))


class OwnedTexts:
    """Each owner's text in the document (`"ident":{…}`), kept while its `Owned` is the same
    object (they are immutable, replaced on every change): a save after one allocation encodes
    one owner, not all of them (~3 ms of GIL with 1 000 containers, at each allocation).
    Used by one writer at a time."""

    def __init__(self) -> None:
        self._texts: dict[str, tuple[Owned, str]] = {}

    def texts(self, owned: dict[str, Owned]) -> list[str]:
        known, fresh = self._texts, {}
        for ident in sorted(owned):
            entry = owned[ident]
            hit = known.get(ident)
            if hit is None or hit[0] is not entry:
                value = {
                    "cidrs": [_text(c) for c in entry.cidrs],
                    "is_container": entry.is_container,
                }
                hit = (entry, _ENCODER.encode(ident) + ":" + _ENCODER.encode(value))
            fresh[ident] = hit
        self._texts = fresh
        return [text for _, text in fresh.values()]


def document_bytes(state: PersistedState, owned: OwnedTexts | None = None) -> bytes:
    """The file's bytes: `to_document` encoded compact with sorted keys, one line. With
    `owned`, the owners' texts come from that cache (the same bytes)."""
    if owned is None:
        return _ENCODER.encode(to_document(state)).encode() + b"\n"
    rest = to_document(PersistedState(state.peer_name, state.ring))
    text = (
        f'{{"format":{_ENCODER.encode(rest["format"])},'
        f'"owned":{{{",".join(owned.texts(state.owned))}}},'
        f'"peer_name":{_ENCODER.encode(rest["peer_name"])},'
        f'"ring":{_ENCODER.encode(rest["ring"])}}}\n'
    )
    return text.encode()


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
        self._owned = OwnedTexts()  # saves run one at a time (WriteBehindStore's thread)

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
        data = document_bytes(state, self._owned)
        try:
            try:
                fd, tmp = tempfile.mkstemp(prefix=f".{FILE_NAME}.", dir=self.state_dir)
            except FileNotFoundError:  # the state directory went: made again (not each save)
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
