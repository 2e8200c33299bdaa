"""Bounds on spec input, checked before any YAML loader sees it.

The YAML loaders trust their input: libyaml's composer recurses (100 000 nested `[` crash the
process), aliases expand exponentially (a 351-byte "billion laughs" took 43 s and 1.5 GB), tags
name constructors, and a FIFO as the spec blocks a read for ever. A spec is a few kilobytes of
plain data, so everything here is refused with a location long before it costs anything:
special files and oversized files, text that is not UTF-8 YAML can accept, and — through
libyaml's token scanner, which is iterative and stops at the first excess — nesting depth,
anchors/aliases, tags, merge keys, key counts and giant scalars. What the loader then builds is
measured once more (`expanded_size`) before anything walks it.
"""

from __future__ import annotations

import os
import re
import stat
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from _ruamel_yaml import CParser  # type: ignore[import-not-found]  # libyaml, via ruamel.yaml.clib
from ruamel.yaml.error import MarkedYAMLError, YAMLError

from weaved.errors import SpecError
from weaved.spec.diagnostics import Problem

MAX_SPEC_BYTES = 256 * 1024
MAX_PASSWORD_BYTES = 64 * 1024
MAX_DEPTH = 24  # the spec's own deepest value is 4 levels down
# A host with 1 000 exposed subnets and 1 000 service rules (issue 16's large host, every
# optional key written out) is ~6 000 keys and ~12 000 scalars; the bounds leave room above it.
MAX_KEYS = 10_000
MAX_VALUES = 20_000  # scalars, keys included
MAX_ALIASES = 64
MAX_SCALAR_CHARS = 4096
MAX_EXPANDED_NODES = 50_000
MAX_EXPANDED_DEPTH = 2 * MAX_DEPTH  # aliases of aliases nest deeper than the text shows

# What YAML 1.2 allows in a stream (§5.1); anything else is refused with its place.
_NOT_PRINTABLE = re.compile(
    "[^\x09\x0a\x0d\x20-\x7e\x85\xa0-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]"
)


def read_regular_file(path: str | os.PathLike[str], limit: int, what: str) -> bytes:
    """The bytes of a regular file of at most `limit` bytes. Opened without blocking, so a FIFO
    or a device named by mistake (or on purpose) is refused instead of hanging or filling
    memory; OSError (e.g. not found) is left to the caller."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC)
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise SpecError(
                f"{path}: {what} is {_kind(st.st_mode)}, not a regular file\n"
                f"  hint: point it at a plain file"
            )
        if st.st_size > limit:
            raise SpecError(
                f"{path}: {what} is {st.st_size} bytes; at most {limit} are accepted\n"
                f"  hint: is this the right file?"
            )
        chunks: list[bytes] = []
        size = 0
        while chunk := os.read(fd, 65536):  # the file may grow while we read it
            size += len(chunk)
            if size > limit:
                raise SpecError(f"{path}: {what} grew past {limit} bytes while being read")
            chunks.append(chunk)
        return b"".join(chunks)
    finally:
        os.close(fd)


def _kind(mode: int) -> str:
    kinds = {
        stat.S_ISDIR: "a directory",
        stat.S_ISFIFO: "a FIFO",
        stat.S_ISCHR: "a character device",
        stat.S_ISBLK: "a block device",
        stat.S_ISSOCK: "a socket",
    }
    return next((name for test, name in kinds.items() if test(mode)), "a special file")


def position(text: str, index: int) -> tuple[int, int]:
    """1-based (line, column) of character `index`."""
    line = text.count("\n", 0, index) + 1
    return line, index - (text.rfind("\n", 0, index) + 1) + 1


def decode_spec(raw: bytes) -> tuple[str, list[Problem]]:
    """UTF-8 text (a UTF-8 BOM dropped), or the text so far and the located problem."""
    if raw.startswith((b"\xff\xfe", b"\xfe\xff")) or (len(raw) > 1 and b"\x00" in raw[:2]):
        return "", [
            Problem(
                (),
                "the spec is UTF-16 or UTF-32 encoded",
                "save it as UTF-8 (e.g. iconv -f UTF-16 -t UTF-8)",
                1,
                1,
            )
        ]
    raw = raw.removeprefix(b"\xef\xbb\xbf")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        text = raw[: exc.start].decode("utf-8")
        line, col = position(text, len(text))
        return text, [
            Problem(
                (),
                f"not UTF-8: byte 0x{raw[exc.start]:02x} cannot start or continue a character",
                "a spec is UTF-8 text; is this a binary file or another encoding?",
                line,
                col,
            )
        ]
    return text, text_problems(text)


def text_problems(text: str) -> list[Problem]:
    """Characters YAML refuses (with only "position N" to say where), located here instead."""
    if len(text) > MAX_SPEC_BYTES:
        return [Problem((), f"the spec is longer than {MAX_SPEC_BYTES} characters", "", 1, 1)]
    if found := _NOT_PRINTABLE.search(text):
        char = found.group()
        name = "a NUL byte" if char == "\0" else f"control character U+{ord(char):04X}"
        return [
            Problem(
                (),
                f"{name} is not allowed in YAML",
                "remove it (a binary file, or a stray character from copy and paste?)",
                *position(text, found.start()),
            )
        ]
    return []


@dataclass
class Scan:
    """What the token scan saw, for the checks after loading."""

    first_alias: tuple[int, int] | None = None


def prescan(text: str) -> tuple[Scan, list[Problem]]:
    """Walk libyaml's tokens (no composing, no constructing) and stop at the first excess."""
    scan = Scan()
    if refused := text_problems(text):
        return scan, refused
    counts = {"depth": 0, "keys": 0, "aliases": 0, "values": 0}
    after_key = False
    try:
        for token in _tokens(CParser(text)):
            name = type(token).__name__
            if name in _PLAIN:  # most tokens: nothing to count
                after_key = False
                continue
            if name == "AliasToken" and scan.first_alias is None:
                scan.first_alias = _where(token)
            excess = _excess(name, token, counts, after_key=after_key)
            if excess is not None:
                return scan, [Problem((), excess[0], excess[1], *_where(token))]
            after_key = name == "KeyToken"
    except MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line, col = (mark.line + 1, mark.column + 1) if mark else (0, 0)
        return scan, [syntax_problem(exc, line, col)]
    except YAMLError as exc:
        return scan, [Problem((), f"YAML syntax: {exc}", "", 1, 1)]
    return scan, []


def _excess(
    name: str, token: Any, counts: dict[str, int], after_key: bool
) -> tuple[str, str] | None:
    """(message, hint) when `token` takes the spec past a bound or uses what is refused."""
    if name in _OPENERS:
        counts["depth"] += 1
        if counts["depth"] > MAX_DEPTH:
            return (
                f"nested more than {MAX_DEPTH} levels deep",
                "a weaved spec is at most a few levels deep; is this the right file?",
            )
    elif name in _CLOSERS:
        counts["depth"] -= 1
    elif name == "TagToken":
        return "YAML tags (`!…`) are not supported", "remove the tag; quote the value if needed"
    elif name == "KeyToken":
        counts["keys"] += 1
        if counts["keys"] > MAX_KEYS:
            return f"more than {MAX_KEYS} keys", ""
    elif name == "AliasToken":
        counts["aliases"] += 1
        if counts["aliases"] > MAX_ALIASES:
            return f"more than {MAX_ALIASES} aliases (*name)", ""
    elif name == "ScalarToken":
        counts["values"] += 1
        if counts["values"] > MAX_VALUES:
            return f"more than {MAX_VALUES} values", ""
        if after_key and token.plain and token.value == "<<":
            return "YAML merge keys (<<) are not supported", "write the keys out in full"
        if len(token.value) > MAX_SCALAR_CHARS:
            return (
                f"a value of {len(token.value)} characters (at most {MAX_SCALAR_CHARS})",
                "",
            )
    return None


_OPENERS = {
    "BlockSequenceStartToken",
    "BlockMappingStartToken",
    "FlowSequenceStartToken",
    "FlowMappingStartToken",
}
_CLOSERS = {"BlockEndToken", "FlowSequenceEndToken", "FlowMappingEndToken"}
_PLAIN = {"ValueToken", "FlowEntryToken", "BlockEntryToken"}  # counted by no bound


def _where(token: Any) -> tuple[int, int]:
    return token.start_mark.line + 1, token.start_mark.column + 1


def _tokens(parser: Any) -> Iterator[Any]:
    while (token := parser.get_token()) is not None:
        yield token


def syntax_problem(exc: MarkedYAMLError, line: int, col: int) -> Problem:
    return Problem(
        (),
        f"YAML syntax: {exc.problem or exc.context}",
        "check indentation, colons and quotes here",
        line,
        col,
    )


class ExpansionError(ValueError):
    pass


def expanded_size(root: Any, limit: int = MAX_EXPANDED_NODES) -> int:
    """How many values `root` holds once every alias is expanded, counted without expanding
    (shared objects are measured once); ExpansionError past `limit`, past MAX_EXPANDED_DEPTH
    or on a cycle. Iterative: this runs before anything recursive may walk the document."""
    sizes: dict[int, tuple[int, int]] = {}  # id → (values, depth)
    on_path: set[int] = set()
    stack: list[tuple[Any, bool]] = [(root, False)]
    while stack:
        node, finished = stack.pop()
        if not isinstance(node, dict | list):
            continue
        key = id(node)
        children = list(node.values()) if isinstance(node, dict) else node
        if finished:
            measured = [sizes.get(id(c), (1, 0)) for c in children]
            size = 1 + len(node) * isinstance(node, dict) + sum(m[0] for m in measured)
            depth = 1 + max((m[1] for m in measured), default=0)
            if size > limit:
                raise ExpansionError(f"aliases expand the spec to more than {limit} values")
            if depth > MAX_EXPANDED_DEPTH:
                raise ExpansionError(
                    f"aliases nest values more than {MAX_EXPANDED_DEPTH} levels deep"
                )
            sizes[key] = (size, depth)
            on_path.discard(key)
            continue
        if key in sizes:
            continue
        if key in on_path:
            raise ExpansionError("an alias refers to a value that contains it")
        on_path.add(key)
        stack.append((node, True))
        stack.extend((child, False) for child in children)
    return sizes.get(id(root), (1, 0))[0]
