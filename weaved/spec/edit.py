"""Edits of the spec file that keep its comments and layout (`weaved connect`/`forget`)."""

from __future__ import annotations

import io
import os
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap, CommentedSeq

from weaved.errors import SpecError
from weaved.spec.diagnostics import SourceText, SpecProblems
from weaved.spec.guard import prescan
from weaved.spec.loader import parse_spec_text, read_spec_file, spec_text
from weaved.spec.models import Spec, split_host_port


def _yaml() -> YAML:
    yaml = YAML(typ="rt")
    yaml.preserve_quotes = True
    yaml.indent(mapping=2, sequence=4, offset=2)
    return yaml


def edit_spec(path: Path, change: Callable[[CommentedMap], None]) -> Spec:
    """Load, change, validate, then replace the file atomically; an edit that would make the
    spec invalid is refused and the file is left as it was."""
    text = spec_text(read_spec_file(path), str(path))
    if refused := prescan(text)[1]:
        raise SpecProblems(refused, SourceText(str(path), text))
    yaml = _yaml()
    document: Any = yaml.load(io.StringIO(text))
    if not isinstance(document, CommentedMap):
        raise SpecError(f"{path}: the spec must be a mapping")
    change(document)
    out = io.StringIO()
    yaml.dump(document, out)
    new_text = out.getvalue()
    spec = parse_spec_text(new_text, str(path))
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(new_text)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, path.stat().st_mode & 0o7777)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return spec


def _block(seq: CommentedSeq) -> None:
    """A list weaved appends to is written one item per line, whatever style it had. Its
    items keep theirs: a mapping forced into flow style would make `{cidr: net:default}`,
    which YAML does not read back."""
    seq.fa.set_block_style()


def _normal(target: str) -> str:
    """One spelling per peer, as the spec's own check sees them (case, root dot)."""
    host, port = split_host_port(target)
    return f"{host.lower().rstrip('.')}:{port}"


def connect(path: Path, targets: Sequence[str], *, replace: bool = False) -> Spec:
    """Add mesh targets to `peers` (Weave's `weave connect [--replace]`)."""

    def change(doc: CommentedMap) -> None:
        peers = doc.get("peers")
        if not isinstance(peers, CommentedSeq):
            peers = CommentedSeq()
            doc["peers"] = peers
        _block(peers)
        if replace:
            del peers[:]
        have = {_normal(str(p)) for p in peers}
        for target in targets:
            if _normal(target) not in have:
                peers.append(target)
                have.add(_normal(target))

    return edit_spec(path, change)


def forget(path: Path, targets: Sequence[str]) -> Spec:
    """Remove mesh targets from `peers` (Weave's `weave forget`)."""
    drop = {_normal(t) for t in targets}

    def change(doc: CommentedMap) -> None:
        peers = doc.get("peers")
        if not isinstance(peers, CommentedSeq):
            return
        for index in reversed(range(len(peers))):
            if _normal(str(peers[index])) in drop:
                del peers[index]

    return edit_spec(path, change)


def _add_name(entry: CommentedMap, name: str) -> None:
    """The entry keeps its names and gains `name` (a second name makes the list form)."""
    names = entry.get("dns_name")
    if names is None:
        entry["dns_name"] = name
        return
    if isinstance(names, str):
        names = CommentedSeq([names])
        names.fa.set_flow_style()
        entry["dns_name"] = names
    if isinstance(names, list) and _fqdn_key(name) not in {_fqdn_key(str(n)) for n in names}:
        names.append(name)


def _fqdn_key(name: str) -> str:
    return name.lower().rstrip(".")


def expose(path: Path, cidrs: Sequence[str], dns_name: str | None = None) -> Spec:
    """Add `expose` entries (Weave's `weave expose`); an existing one keeps its names and
    gains `dns_name`, if one is given."""

    def change(doc: CommentedMap) -> None:
        entries = doc.get("expose")
        if not isinstance(entries, CommentedSeq):
            entries = CommentedSeq()
            doc["expose"] = entries
        _block(entries)
        have = {str(e.get("cidr")) for e in entries if isinstance(e, dict)}
        for cidr in cidrs:
            if cidr in have:
                for e in entries:
                    if dns_name and isinstance(e, CommentedMap) and str(e.get("cidr")) == cidr:
                        _add_name(e, dns_name)
                continue
            entry = CommentedMap([("cidr", cidr)])
            if dns_name:
                entry["dns_name"] = dns_name
            entries.append(entry)
            have.add(cidr)

    return edit_spec(path, change)


def hide(path: Path, cidrs: Sequence[str]) -> Spec:
    """Remove `expose` entries (Weave's `weave hide`)."""
    drop = set(cidrs)

    def change(doc: CommentedMap) -> None:
        entries = doc.get("expose")
        if not isinstance(entries, CommentedSeq):
            return
        for index in reversed(range(len(entries))):
            entry = entries[index]
            if isinstance(entry, dict) and str(entry.get("cidr")) in drop:
                del entries[index]

    return edit_spec(path, change)
